"""Wires: how messages travel from an output port to input ports."""

from rack.wires.base import Outlet
from rack.wires.memory import Inbox, InflightCounter, MemoryOutlet

__all__ = ["Inbox", "InflightCounter", "MemoryOutlet", "Outlet"]
