"""Memory wires: a bounded in-process inbox per gear, fed by any number of producers (fan-in).

Each consuming gear owns one `Inbox` holding `(input_port, msg)` items; a `MemoryOutlet` is one
wire's sending end, bound to a target inbox and input port. Capacity is a soft bound enforced by
back-pressure: `put` never refuses (nothing accepted is lost) but reports "full", and producers
wait for room before putting more, so a queue exceeds its capacity by at most one batch per
producer (e.g. the frames of one socket read).

An `InflightCounter` shared by all inboxes of a rack counts messages put but not yet fully
processed; it reaches zero only when the whole rack is quiescent, which is what drain waits for.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from rack.model.fluxmsg import FluxMsg


class Ack(Protocol):
    """Settles one durable-wire delivery: `ok` once processed, `fail` to retry or dead-letter."""

    async def ok(self) -> None: ...

    async def fail(self, reason: str) -> None: ...

    async def release(self) -> None: ...


class InflightCounter:
    """Messages accepted by any inbox and not yet finished; `wait_zero` resolves at quiescence."""

    __slots__ = ("_count", "_zero")

    def __init__(self) -> None:
        self._count = 0
        self._zero = asyncio.Event()
        self._zero.set()

    @property
    def count(self) -> int:
        return self._count

    def incr(self) -> None:
        if self._count == 0:
            self._zero.clear()
        self._count += 1

    def decr(self, n: int = 1) -> None:
        self._count -= n
        if self._count <= 0:
            self._count = 0
            self._zero.set()

    async def wait_zero(self) -> None:
        # Re-check: a count that hit zero and went up again before this task ran is not quiescent.
        while self._count:
            await self._zero.wait()


class Inbox:
    """The bounded input queue of one gear."""

    __slots__ = ("_getter", "_inflight", "_items", "_room_waiters", "capacity", "name")

    def __init__(
        self, name: str, capacity: int = 1024, inflight: InflightCounter | None = None
    ) -> None:
        if capacity < 1:
            raise ValueError(f"inbox capacity must be >= 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self._items: deque[tuple[str, FluxMsg, Ack | None]] = deque()
        self._getter: asyncio.Future[None] | None = None
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._inflight = inflight or InflightCounter()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, port: str, msg: FluxMsg, ack: Ack | None = None) -> bool:
        """Accept `msg` for input `port`; False when the inbox is at or over capacity.

        `ack` is the delivery handle of a durable wire: the gear's runner settles it once the
        message is processed (memory wires pass none).
        """
        self._items.append((port, msg, ack))
        self._inflight.incr()
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)
        return len(self._items) < self.capacity

    def has_room(self) -> bool:
        return len(self._items) < self.capacity

    async def wait_room(self) -> None:
        while len(self._items) >= self.capacity:
            fut = asyncio.get_running_loop().create_future()
            self._room_waiters.append(fut)
            try:
                await fut
            finally:
                if not fut.done():
                    fut.cancel()

    async def get(self) -> tuple[str, FluxMsg, Ack | None]:
        """Next `(port, msg, ack)`; call `done()` once it is fully processed."""
        while not self._items:
            self._getter = asyncio.get_running_loop().create_future()
            await self._getter
        item = self._items.popleft()
        if self._room_waiters and len(self._items) < self.capacity:
            self._wake_room()
        return item

    def get_nowait(self) -> tuple[str, FluxMsg, Ack | None] | None:
        if not self._items:
            return None
        item = self._items.popleft()
        if self._room_waiters and len(self._items) < self.capacity:
            self._wake_room()
        return item

    def requeue(self, port: str, msg: FluxMsg, ack: Ack | None = None) -> None:
        """Give back a message taken with `get` but not processed (it goes first in line)."""
        self._items.appendleft((port, msg, ack))
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)

    async def wait_empty(self) -> None:
        """Wait until the inbox holds nothing (used to retire a gear that receives no more)."""
        while self._items:
            fut = asyncio.get_running_loop().create_future()
            self._room_waiters.append(fut)
            await fut

    def done(self) -> None:
        """Mark one message taken with `get` as fully processed (its outputs were routed)."""
        self._inflight.decr()

    def _wake_room(self) -> None:
        while self._room_waiters:
            fut = self._room_waiters.popleft()
            if not fut.done():
                fut.set_result(None)


class MemoryOutlet:
    """One memory wire's sending end: delivers to `inbox` on input `port`."""

    __slots__ = ("inbox", "port")
    durable = False

    def __init__(self, inbox: Inbox, port: str) -> None:
        self.inbox = inbox
        self.port = port

    def put(self, msg: FluxMsg) -> bool:
        return self.inbox.put(self.port, msg)

    async def wait_room(self) -> None:
        await self.inbox.wait_room()

    def __repr__(self) -> str:
        return f"MemoryOutlet({self.inbox.name}.{self.port})"
