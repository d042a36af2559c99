"""One TCP connection of an io_tcp gear: an `asyncio.Protocol` that frames in bulk and emits.

Hot path: `data_received` feeds the whole read to the framer once and emits every completed frame
as a fresh fluxMsg (meta `conn.id`, `peer.ip`, `peer.port`, computed once per connection). Reading
pauses while any of three things holds, and resumes when none does:

- the emitter reported a full downstream wire (one waiter task awaits `emit.ready()`),
- the transport's write buffer is above its high-water mark (the peer is not reading replies),
- the gear is draining.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from rack.gear import Emitter

from .framing import Framer, FrameTooLarge

if TYPE_CHECKING:
    from .endpoint import Endpoint


def format_hostport(host: str, port: int | str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Connection(asyncio.Protocol):
    """A connection's protocol; `id` is its `conn.id`. Owned by an `Endpoint` (server or client)."""

    __slots__ = (
        "_emit",
        "_eof",
        "_framer",
        "_keep_open",
        "_loop",
        "_meta",
        "_new_msg",
        "_out",
        "_owner",
        "_paused_emit",
        "_paused_write",
        "_reading_paused",
        "_room_waiter",
        "_stats",
        "active",
        "closed",
        "id",
        "idle_since",
        "peer",
        "transport",
    )

    transport: asyncio.Transport

    def __init__(
        self, owner: Endpoint, conn_id: str, framer: Framer, emit: Emitter, *, keep_open: bool
    ) -> None:
        self._owner = owner
        self.id = conn_id
        self._framer = framer
        self._emit = emit
        self._new_msg = owner.ctx.new_msg
        self._stats = owner.ctx.stats
        self._keep_open = keep_open
        self._meta: dict[str, str] = {"conn.id": conn_id}
        self._eof = False
        self._paused_emit = False
        self._paused_write = False
        self._reading_paused = False
        self._room_waiter: asyncio.Task[None] | None = None
        self._out: list[bytes] | None = None  # replies gathered for `flush`, if scheduled
        self._loop = owner.loop
        self.active = False  # set on every read/write, cleared by the idle sweep
        self.idle_since = owner.loop.time()
        self.peer = "?"
        self.closed: asyncio.Future[None] = owner.loop.create_future()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        ip, port = (str(peer[0]), str(peer[1])) if peer else ("", "")
        self.peer = format_hostport(ip, port)
        self._meta = {"conn.id": self.id, "peer.ip": ip, "peer.port": port}
        self.idle_since = self._owner.loop.time()
        self._owner.attach(self)
        if self._owner.draining:
            self.update_reading()

    def data_received(self, data: bytes) -> None:
        self.active = True
        self._stats.add("bytes_in", len(data))
        try:
            frames = self._framer.feed(data)
        except FrameTooLarge as exc:
            self._reject(exc)
            return
        if not frames:
            return
        emit, new_msg, meta = self._emit, self._new_msg, self._meta
        room = True
        for frame in frames:
            if not emit(new_msg(frame, meta=meta.copy())):
                room = False
        if not room:
            self._wait_for_room()

    def eof_received(self) -> bool:
        if not self._eof:
            self._eof = True
            pending = self._framer.pending()
            if pending:
                self._owner.ctx.log.debug(
                    "connection %s (%s) closed its side with a partial frame of %d bytes; "
                    "discarded",
                    self.id,
                    self.peer,
                    pending,
                )
                self._framer.reset()
        # Keep our side open so replies to frames already received still go out (half-close).
        return self._keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        if self._room_waiter is not None:
            self._room_waiter.cancel()
        if not self.closed.done():
            self.closed.set_result(None)
        self._owner.detach(self, exc)

    def pause_writing(self) -> None:
        self._paused_write = True
        self.update_reading()

    def resume_writing(self) -> None:
        self._paused_write = False
        self.update_reading()

    # -- used by the endpoint ------------------------------------------------------------------

    @property
    def reading_paused(self) -> bool:
        return self._reading_paused

    @property
    def half_closed(self) -> bool:
        """The peer sent EOF; we can still write."""
        return self._eof

    def send(self, payload: bytes) -> None:
        """Write one framed payload (the caller checked the connection is not closing).

        The first reply of an event-loop iteration is written at once (no added latency); the
        ones after it in the same iteration are gathered and written together by `flush`, right
        after the current callbacks: one syscall per batch instead of one per reply.
        """
        self.active = True
        out = self._out
        if out is None:
            self._out = []
            self._loop.call_soon(self.flush)
            head, tail = self._framer.parts(payload)
            self.transport.write(head + tail)
        else:
            out += self._framer.parts(payload)

    def flush(self) -> None:
        """Write the gathered replies now."""
        out, self._out = self._out, None
        if out and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def update_reading(self) -> None:
        """Pause or resume reading to match the current reasons (back-pressure, drain)."""
        pause = self._paused_emit or self._paused_write or self._owner.draining
        if pause == self._reading_paused or self._eof or self.transport.is_closing():
            return
        self._reading_paused = pause
        if pause:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # -- internals -----------------------------------------------------------------------------

    def _reject(self, exc: FrameTooLarge) -> None:
        self._stats.add("oversize")
        self._owner.ctx.log.warning(
            "closing connection %s (%s): frame of %d bytes exceeds max_frame_bytes=%d",
            self.id,
            self.peer,
            exc.size,
            exc.limit,
        )
        self._framer.reset()
        self.transport.abort()

    def _wait_for_room(self) -> None:
        self._paused_emit = True
        self.update_reading()
        if self._room_waiter is None:
            self._room_waiter = self._owner.ctx.spawn(self._await_room(), name=f"{self.id}-room")

    async def _await_room(self) -> None:
        try:
            await self._emit.ready()
        finally:
            self._room_waiter = None
        self._paused_emit = False
        self.update_reading()
