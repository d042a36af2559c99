"""Small gears for runtime tests, independent of the built-ins."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from rack.gear import Emitter, Gear, GearConfig, GearRegistry, Output
from rack.model.fluxmsg import FluxMsg
from rack.model.scenario import Blueprint
from rack.preflight import preflight
from rack.runtime.rack import Rack
from rack.settings import RackSettings

COLLECTED: defaultdict[str, list[FluxMsg]] = defaultdict(list)
CHANGED = asyncio.Event  # alias for readability in tests
GATES: dict[str, asyncio.Event] = {}
CRASHES: dict[str, int] = {}
INSTANCES: defaultdict[str, list[Gear[Any]]] = defaultdict(list)


class SourceConfig(GearConfig):
    count: int = 0


class Source(Gear[SourceConfig]):
    type_name = "t_source"
    summary = "emits `count` messages"
    config_model = SourceConfig
    inputs = ()

    async def start(self, emit: Emitter) -> None:
        INSTANCES[self.ctx.name].append(self)
        self.ctx.spawn(self._produce(emit))

    async def _produce(self, emit: Emitter) -> None:
        for n in range(self.config.count):
            await emit.send(self.ctx.new_msg(data={"n": n}))


class TagConfig(GearConfig):
    tag: str = "x"
    fail_on: int | None = None
    odd_port: bool = False


class Tag(Gear[TagConfig]):
    type_name = "t_tag"
    summary = "tags meta['via']; can fail or route odd numbers"
    config_model = TagConfig
    outputs = ("out", "odd")

    async def start(self, emit: Emitter) -> None:
        INSTANCES[self.ctx.name].append(self)

    async def process(self, msg: FluxMsg, port: str) -> Output:
        n = msg.data["n"]
        if n == self.config.fail_on:
            raise ValueError(f"refusing n={n}")
        msg.meta["via"] = self.config.tag
        if self.config.odd_port and n % 2:
            return ("odd", msg)
        return msg


class CollectConfig(GearConfig):
    key: str


class Collect(Gear[CollectConfig]):
    type_name = "t_collect"
    summary = "stores messages in COLLECTED[key]"
    config_model = CollectConfig
    outputs = ()

    async def start(self, emit: Emitter) -> None:
        INSTANCES[self.ctx.name].append(self)

    async def process(self, msg: FluxMsg, port: str) -> Output:
        COLLECTED[self.config.key].append(msg)
        return None


class GateConfig(GearConfig):
    gate: str


class Gate(Gear[GateConfig]):
    type_name = "t_gate"
    summary = "waits for GATES[gate] before passing each message on"
    config_model = GateConfig

    async def process(self, msg: FluxMsg, port: str) -> Output:
        await GATES[self.config.gate].wait()
        return msg


class CrashConfig(GearConfig):
    times: int = 2


class Crash(Gear[CrashConfig]):
    type_name = "t_crash"
    summary = "its background task crashes `times` times, then it runs"
    config_model = CrashConfig

    async def start(self, emit: Emitter) -> None:
        INSTANCES[self.ctx.name].append(self)
        if CRASHES.get(self.ctx.name, 0) < self.config.times:
            CRASHES[self.ctx.name] = CRASHES.get(self.ctx.name, 0) + 1
            self.ctx.spawn(self._boom())

    async def _boom(self) -> None:
        raise RuntimeError("background task died")

    async def process(self, msg: FluxMsg, port: str) -> Output:
        return msg


@pytest.fixture
def registry() -> GearRegistry:
    COLLECTED.clear()
    GATES.clear()
    CRASHES.clear()
    INSTANCES.clear()
    reg = GearRegistry()
    for gear in (Source, Tag, Collect, Gate, Crash):
        reg.register(gear)
    return reg


@pytest.fixture
def blueprint(registry: GearRegistry) -> Callable[[dict[str, Any]], Blueprint]:
    def build(doc: dict[str, Any]) -> Blueprint:
        return preflight(doc, registry)

    return build


@pytest.fixture
async def rack() -> AsyncIterator[Rack]:
    settings = RackSettings(
        queue_depth=16, grace_period=5, restart_backoff_initial=0.01, restart_backoff_max=0.05
    )
    async with Rack(settings, name="test-rack") as r:
        yield r


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the loop until `predicate()` holds (fails the test after `timeout`)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polling a plain predicate
            await asyncio.sleep(0.001)


def gear(name: str, type_: str, **config: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "config": config}


def wire(src: str, dst: str) -> dict[str, str]:
    return {"from": src, "to": dst, "transport": "memory"}
