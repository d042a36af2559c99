"""The gear SDK: everything a gear author needs (see docs/gear-sdk.md)."""

from rack.gear.base import (
    DEFAULT_IN,
    DEFAULT_OUT,
    ERROR_PORT,
    Emitter,
    Gear,
    GearConfig,
    Output,
    Ports,
)
from rack.gear.context import GearContext, GearStats
from rack.gear.registry import ENTRY_POINT_GROUP, GearRegistry

__all__ = [
    "DEFAULT_IN",
    "DEFAULT_OUT",
    "ENTRY_POINT_GROUP",
    "ERROR_PORT",
    "Emitter",
    "Gear",
    "GearConfig",
    "GearContext",
    "GearRegistry",
    "GearStats",
    "Output",
    "Ports",
]
