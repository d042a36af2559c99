"""The gear SDK's public surface is pinned: changing it must be a deliberate act."""

from __future__ import annotations

import inspect
import sys
import textwrap
from pathlib import Path

import pytest

import rack.gear
from rack.gear import Gear, GearRegistry
from rack.gear.testing import GearHarness


def test_public_names_are_pinned() -> None:
    assert sorted(rack.gear.__all__) == [
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


def test_lifecycle_signatures_are_pinned() -> None:
    sigs = {
        name: str(inspect.signature(getattr(Gear, name)))
        for name in ("init", "start", "process", "drain", "stop")
    }
    assert sigs == {
        "init": "(self, ctx: 'GearContext[ConfigT]') -> 'None'",
        "start": "(self, emit: 'Emitter') -> 'None'",
        "process": "(self, msg: 'FluxMsg', port: 'str') -> 'Output'",
        "drain": "(self) -> 'None'",
        "stop": "(self) -> 'None'",
    }
    for name in ("init", "start", "process", "drain", "stop"):
        assert inspect.iscoroutinefunction(getattr(Gear, name))


@pytest.fixture
def third_party_gear(tmp_path: Path) -> Path:
    """A real installed distribution (dist-info + module) on sys.path, declaring a gear."""
    (tmp_path / "acme_gears.py").write_text(
        textwrap.dedent(
            '''
            from rack.gear import Gear, GearConfig

            class ShoutConfig(GearConfig):
                pass

            class Shout(Gear[ShoutConfig]):
                """Upper-cases raw."""
                type_name = "shout"
                summary = "Upper-cases raw."
                config_model = ShoutConfig

                async def process(self, msg, port):
                    msg.raw = msg.raw.upper()
                    return msg
            '''
        )
    )
    dist = tmp_path / "acme_gears-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-gears\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[fluxrig.gears]\nshout = acme_gears:Shout\nbroken = acme_gears:Missing\n"
        "io_tcp = acme_gears:Shout\n"
    )
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    sys.modules.pop("acme_gears", None)


async def test_third_party_gear_registers_through_entry_points(third_party_gear: Path) -> None:
    registry = GearRegistry.discover()
    shout = registry.get("shout")
    assert shout.__module__ == "acme_gears"
    assert "broken" in registry.load_errors  # reported, not fatal
    assert "name taken by a built-in" in registry.load_errors["io_tcp"]
    assert registry.get("io_tcp").__module__.startswith("rack.gears.io_tcp")
    async with GearHarness(shout) as h:
        [(port, msg)] = await h.process(h.msg(b"hi"))
    assert (port, msg.raw) == ("out", b"HI")
