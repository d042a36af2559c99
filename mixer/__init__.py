"""fluxrig mixer: the control plane (CAS store, registry, enrollment, orchestration, APIs)."""

__version__ = "0.1.0"
