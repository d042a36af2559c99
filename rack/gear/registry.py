"""Which gear types exist: built-ins plus third-party gears from `fluxrig.gears` entry points.

A third-party package registers its gear in its own pyproject.toml::

    [project.entry-points."fluxrig.gears"]
    my_gear = "my_package.gears:MyGear"
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Any

from rack.errors import UnknownGearError
from rack.gear.base import Gear

ENTRY_POINT_GROUP = "fluxrig.gears"

BUILTIN_GEARS: dict[str, str] = {
    "io_tcp": "rack.gears.io_tcp:TcpGear",
    "generator": "rack.gears.generator:GeneratorGear",
    "sink": "rack.gears.sink:SinkGear",
    "log": "rack.gears.sink:LogGear",
    "logic": "rack.gears.logic:LogicGear",
    "codec_json": "rack.gears.codec_json:JsonCodecGear",
}

log = logging.getLogger("fluxrig.gears")

AnyGear = type[Gear[Any]]


def _import(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


class GearRegistry:
    """Maps type names to gear classes. `GearRegistry.discover()` is the normal way to get one."""

    def __init__(self, gears: dict[str, AnyGear] | None = None) -> None:
        self._gears: dict[str, AnyGear] = dict(gears or {})
        self.load_errors: dict[str, str] = {}

    @classmethod
    def discover(cls) -> GearRegistry:
        """Built-in gears plus every gear registered in the `fluxrig.gears` entry-point group.

        A third-party gear that fails to import is reported in `load_errors` (and logged); it does
        not stop the rack. A third-party gear cannot replace a built-in of the same name.
        """
        registry = cls()
        for name, target in BUILTIN_GEARS.items():
            registry.register(_import(target), name=name)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in registry._gears:
                if ep.value != BUILTIN_GEARS.get(ep.name):
                    registry.load_errors[ep.name] = f"{ep.value}: name taken by a built-in gear"
                continue
            try:
                registry.register(ep.load(), name=ep.name)
            except Exception as exc:
                registry.load_errors[ep.name] = f"{ep.value}: {type(exc).__name__}: {exc}"
                log.error("gear %r from entry point %s failed to load: %s", ep.name, ep.value, exc)
        return registry

    def register(self, gear: AnyGear, *, name: str | None = None) -> None:
        if not (isinstance(gear, type) and issubclass(gear, Gear)):
            raise TypeError(f"{gear!r} is not a Gear subclass")
        key = name or gear.type_name
        if not key:
            raise ValueError(f"{gear.__qualname__} has no type_name")
        self._gears[key] = gear

    def get(self, type_name: str) -> AnyGear:
        try:
            return self._gears[type_name]
        except KeyError:
            raise UnknownGearError(
                f"unknown gear type '{type_name}'; known: {', '.join(sorted(self._gears))}"
            ) from None

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._gears

    def names(self) -> list[str]:
        return sorted(self._gears)

    def items(self) -> list[tuple[str, AnyGear]]:
        return sorted(self._gears.items())
