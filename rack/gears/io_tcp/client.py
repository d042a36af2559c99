"""Client mode: keep one connection to `connect` up, redialing with exponential back-off."""

from __future__ import annotations

import asyncio

from rack.errors import GearError
from rack.model.fluxmsg import FluxMsg

from .connection import Connection, format_hostport
from .endpoint import Endpoint

RECONNECT_CAP = 30.0
CONNECT_TIMEOUT = 10.0


class Client(Endpoint):
    """Dials `connect` in the background; `start` returns at once, even if the server is down."""

    half_close = False
    _conn: Connection | None = None
    _dialer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.address = self.config.connect_address
        self._dialer = self.ctx.spawn(self._dial_loop(), name="dial")

    @property
    def target(self) -> str:
        return format_hostport(*self.address)

    async def _dial_loop(self) -> None:
        first_wait = self.config.reconnect_wait
        wait = first_wait
        while True:
            conn = await self._dial(wait)
            if conn is None:
                await asyncio.sleep(wait)
                wait = min(wait * 2, max(RECONNECT_CAP, first_wait))
                continue
            wait = first_wait
            await asyncio.shield(conn.closed)
            self.ctx.log.warning(
                "connection %s to %s lost; redialing in %.2f s", conn.id, self.target, wait
            )
            await asyncio.sleep(wait)

    async def _dial(self, wait: float) -> Connection | None:
        host, port = self.address
        tls = self.config.tls
        hostname = (tls.server_hostname or host) if tls is not None else None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, conn = await self.loop.create_connection(
                    self.new_connection, host, port, ssl=self.ssl, server_hostname=hostname
                )
        except OSError as exc:  # refused, unreachable, timed out, TLS failure
            self.ctx.log.warning(
                "cannot connect to %s: %s; retrying in %.2f s", self.target, exc, wait
            )
            return None
        self.ctx.log.info("connected to %s (%s)", self.target, conn.id)
        return conn

    def attach(self, conn: Connection) -> None:
        super().attach(conn)
        self._conn = conn

    def detach(self, conn: Connection, exc: Exception | None) -> None:
        super().detach(conn, exc)
        if self._conn is conn:
            self._conn = None

    def send(self, msg: FluxMsg) -> None:
        conn = self._conn
        if conn is None or conn.is_closing():
            raise GearError(f"not connected to {self.target}")
        conn.send(msg.raw)

    async def drain(self) -> None:
        """Stop redialing and reading; the current connection stays up for replies in flight."""
        await self._stop_dialing()
        await super().drain()

    async def stop(self) -> None:
        await self._stop_dialing()
        await super().stop()

    async def _stop_dialing(self) -> None:
        task, self._dialer = self._dialer, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
