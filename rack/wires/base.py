"""The wire seam: what a producing port talks to. Memory and JetStream wires both implement it."""

from __future__ import annotations

from typing import Protocol

from rack.model.fluxmsg import FluxMsg


class Outlet(Protocol):
    """The sending end of one wire.

    `put` always accepts the message (a wire never drops what it was handed) and returns False
    when the wire is at capacity; the producer must then `await wait_room()` before the next put.
    """

    def put(self, msg: FluxMsg) -> bool: ...

    async def wait_room(self) -> None: ...


class DurableOutlet(Outlet, Protocol):
    """An outlet whose messages survive a crash once `flush()` has returned (JetStream)."""

    durable: bool

    async def flush(self) -> None: ...
