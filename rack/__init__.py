"""fluxrig rack: the stateless edge runtime that runs gears wired by memory or JetStream wires."""

__version__ = "0.1.0"
