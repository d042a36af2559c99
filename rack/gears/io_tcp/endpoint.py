"""What both io_tcp modes share: the connection table, replies, drain and stop."""

from __future__ import annotations

import asyncio
import itertools
import ssl
from typing import Any

from rack.gear import Emitter, GearContext
from rack.model.fluxmsg import FluxMsg

from .config import TcpConfig
from .connection import Connection
from .framing import framer_factory

# conn.ids are unique in the process, not just per gear instance: a reply still in flight when a
# gear restarts can never reach a newer connection that happens to reuse its number.
_conn_numbers = itertools.count(1)

CLOSE_GRACE = 1.0  # seconds stop() lets connections flush their replies before aborting them


class Endpoint:
    """The connections of one io_tcp gear. Subclasses open them (server: accept; client: dial)."""

    address: tuple[str, int]
    # Keep a connection writable after the peer's EOF, so replies to what it sent still go out.
    # Not under TLS (asyncio's SSL transport cannot half-close) and not for a client (a server
    # that closed is gone: redial).
    half_close = True

    def __init__(
        self, ctx: GearContext[TcpConfig], emit: Emitter, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.emit = emit
        self.ssl = ssl_context
        self.loop = asyncio.get_running_loop()
        self.conns: dict[str, Connection] = {}
        self.draining = False
        self._framer = framer_factory(ctx.config)
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopped = False

    async def start(self) -> None:
        raise NotImplementedError

    def send(self, msg: FluxMsg) -> None:
        """Write `msg.raw`, framed, to the connection it belongs to; raises GearError."""
        raise NotImplementedError

    def new_connection(self) -> Connection:
        """Protocol factory for the event loop."""
        return Connection(
            self,
            f"c{next(_conn_numbers)}",
            self._framer(),
            self.emit,
            keep_open=self.half_close and self.ssl is None,
        )

    def attach(self, conn: Connection) -> None:
        self.conns[conn.id] = conn
        self.ctx.stats.add("connections")
        self.ctx.stats.set_gauge("open_connections", len(self.conns))
        self._changed.set()
        self.ctx.log.debug("connection %s from %s opened", conn.id, conn.peer)

    def detach(self, conn: Connection, exc: Exception | None) -> None:
        if self.conns.pop(conn.id, None) is None:
            return
        self.ctx.stats.set_gauge("open_connections", len(self.conns))
        self._changed.set()
        self.ctx.log.debug(
            "connection %s (%s) closed%s", conn.id, conn.peer, f": {exc}" if exc else ""
        )

    async def wait_connections(self, count: int) -> None:
        """Wait until exactly `count` connections are open."""
        while len(self.conns) != count:
            self._changed.clear()
            await self._changed.wait()

    async def drain(self) -> None:
        """Stop reading; connections stay open so replies in flight are still written."""
        self.draining = True
        for conn in list(self.conns.values()):
            conn.update_reading()

    async def stop(self) -> None:
        """Cancel background tasks, close every connection (abort after a grace). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.draining = True
        await self._cancel_tasks()
        await self._close_all()

    async def _cancel_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _close_all(self) -> None:
        conns = list(self.conns.values())
        if not conns:
            return
        for conn in conns:
            conn.flush()
            conn.transport.close()
        _, pending = await asyncio.wait([c.closed for c in conns], timeout=CLOSE_GRACE)
        if pending:
            for conn in conns:
                if not conn.closed.done():
                    conn.transport.abort()
            await asyncio.wait(pending, timeout=CLOSE_GRACE)
