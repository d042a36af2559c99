"""Helpers for gear authors: run one gear, feed it messages, look at what it emits.

    async with GearHarness(MyGear, {"threshold": 100}) as h:
        out = await h.process(FluxMsg(raw=b"SIGNAL"))     # [(port, msg), ...] returned by process
        msg = await h.next_emitted("out")                  # something the gear emitted on its own

The harness runs the real lifecycle (init → start → … → drain → stop) inside a TaskGroup, so
tasks the gear spawns run too, and a failing background task fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from types import TracebackType
from typing import Any

from rack.gear.base import DEFAULT_IN, DEFAULT_OUT, Gear, normalize_output
from rack.gear.context import GearContext, GearStats
from rack.model.fluxmsg import FluxMsg
from rack.model.ids import FluxIdGenerator


class CollectingEmitter:
    """An `Emitter` recording every emitted message per port; `capacity` simulates back-pressure."""

    def __init__(self, gear: str = "test", capacity: int | None = None) -> None:
        self.gear = gear
        self.capacity = capacity
        self.by_port: defaultdict[str, list[FluxMsg]] = defaultdict(list)
        self._changed = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __call__(self, msg: FluxMsg, port: str = DEFAULT_OUT) -> bool:
        msg.add_hop(self.gear, port)
        self.by_port[port].append(msg)
        self._changed.set()
        has_room = self.capacity is None or self.pending() < self.capacity
        if not has_room:
            self._room.clear()
        return has_room

    async def send(self, msg: FluxMsg, port: str = DEFAULT_OUT) -> None:
        await self.ready()
        self(msg, port)

    async def ready(self) -> None:
        await self._room.wait()

    def pending(self) -> int:
        return sum(len(v) for v in self.by_port.values())

    def take(self, port: str = DEFAULT_OUT) -> list[FluxMsg]:
        """Remove and return what was emitted on `port` (frees capacity)."""
        msgs, self.by_port[port] = self.by_port[port], []
        if self.capacity is None or self.pending() < self.capacity:
            self._room.set()
        return msgs

    async def wait_for(self, port: str, count: int, timeout: float = 5.0) -> list[FluxMsg]:
        """Wait until `count` messages were emitted on `port`; returns them (not removed)."""
        async with asyncio.timeout(timeout):
            while len(self.by_port[port]) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.by_port[port]


class GearHarness:
    """Runs one gear through its real lifecycle for a test."""

    def __init__(
        self,
        gear_cls: type[Gear[Any]],
        config: dict[str, Any] | None = None,
        *,
        name: str = "test",
        machine_id: int = 1,
        emitter_capacity: int | None = None,
    ) -> None:
        self.gear_cls = gear_cls
        self.raw_config = config or {}
        self.name = name
        self.ids = FluxIdGenerator(machine_id)
        self.emitter = CollectingEmitter(name, emitter_capacity)
        self.stats = GearStats()
        self.gear: Gear[Any] = gear_cls()
        self._tg: asyncio.TaskGroup | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> GearHarness:
        config = self.gear_cls.parse_config(self.raw_config)
        self._tg = await self._stack.enter_async_context(asyncio.TaskGroup())
        ctx = GearContext(
            name=self.name, config=config, ids=self.ids, task_group=self._tg, stats=self.stats
        )
        try:
            await self.gear.init(ctx)
            await self.gear.start(self.emitter)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.gear.drain()
        finally:
            await self.gear.stop()
            if hasattr(self.gear, "ctx"):
                self.gear.ctx.cancel_spawned()
            # The test body's own exception is not handed to the TaskGroup (which would wrap it
            # in an ExceptionGroup); it propagates as is. A failed background task still raises.
            await self._stack.aclose()

    @property
    def ctx(self) -> GearContext[Any]:
        return self.gear.ctx

    def msg(
        self, raw: bytes = b"", *, data: Any = None, meta: dict[str, str] | None = None
    ) -> FluxMsg:
        return FluxMsg(self.ids.next_id(), raw=raw, data=data, meta=meta)

    async def process(self, msg: FluxMsg, port: str = DEFAULT_IN) -> list[tuple[str, FluxMsg]]:
        return normalize_output(await self.gear.process(msg, port))

    def emitted(self, port: str = DEFAULT_OUT) -> list[FluxMsg]:
        return self.emitter.by_port[port]

    async def next_emitted(self, port: str = DEFAULT_OUT, timeout: float = 5.0) -> FluxMsg:
        """Wait for and remove the oldest message emitted on `port`."""
        await self.emitter.wait_for(port, 1, timeout)
        return self.emitter.by_port[port].pop(0)
