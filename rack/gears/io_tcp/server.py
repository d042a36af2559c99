"""Server mode: a listening socket, an accept loop with back-off, a connection limit, idle sweep."""

from __future__ import annotations

import asyncio
import socket

from rack.errors import GearError
from rack.model.fluxmsg import FluxMsg

from .connection import Connection, format_hostport
from .endpoint import Endpoint

BACKLOG = 1024
ACCEPT_BACKOFF_MIN = 0.005
ACCEPT_BACKOFF_MAX = 1.0
MIN_SWEEP_INTERVAL = 0.05
HALF_CLOSED_TIMEOUT = 30.0


class Server(Endpoint):
    """Listens on `bind`; every accepted connection's frames go out on "out"."""

    _sock: socket.socket | None = None
    _accept_task: asyncio.Task[None] | None = None
    _opening = 0  # TLS handshakes in progress (they count against max_connections)
    _refusing = False  # a refusal was logged; the next is logged once the limit is left again

    async def start(self) -> None:
        host, port = self.config.bind_address
        sock = await self._listen(host or "0.0.0.0", port)
        self._sock = sock
        bound = sock.getsockname()
        self.address = (str(bound[0]), int(bound[1]))
        self._accept_task = self.ctx.spawn(self._accept_loop(sock), name="accept")
        self._tasks.append(self.ctx.spawn(self._sweep_idle(), name="idle-sweep"))
        self.ctx.log.info("listening on %s", format_hostport(*self.address))

    async def _listen(self, host: str, port: int) -> socket.socket:
        try:
            infos = await self.loop.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except socket.gaierror as exc:
            raise GearError(f"cannot listen on bind '{self.config.bind}': {exc}") from exc
        family, _, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise GearError(
                f"cannot listen on bind '{self.config.bind}': {exc.strerror or exc}; "
                "is another process using that port?"
            ) from exc
        return sock

    async def _accept_loop(self, sock: socket.socket) -> None:
        backoff = ACCEPT_BACKOFF_MIN
        while True:
            try:
                client, peer = await self.loop.sock_accept(sock)
            except OSError as exc:  # e.g. EMFILE: out of file descriptors
                self.ctx.log.error("accept failed: %s; retrying in %.3f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, ACCEPT_BACKOFF_MAX)
                continue
            backoff = ACCEPT_BACKOFF_MIN
            if len(self.conns) + self._opening >= self.config.max_connections:
                self._refuse(client, peer)
            elif self.ssl is None:
                await self._open(client, peer)
            else:  # a TLS handshake takes round trips: do not hold up the accept loop
                self.ctx.spawn(self._open(client, peer), name="tls-handshake")

    async def _open(self, client: socket.socket, peer: object) -> None:
        self._opening += 1
        try:
            await self.loop.connect_accepted_socket(self.new_connection, client, ssl=self.ssl)
        except Exception as exc:  # a failed handshake must not take the gear down
            self.ctx.log.warning("connection from %s failed to open: %r", peer, exc)
            client.close()
        finally:
            self._opening -= 1

    def _refuse(self, client: socket.socket, peer: object) -> None:
        client.close()
        self.ctx.stats.add("refused")
        if not self._refusing:
            self._refusing = True
            self.ctx.log.warning(
                "refusing connection from %s: max_connections=%d reached "
                "(further refusals are counted in 'refused' until a connection closes)",
                peer,
                self.config.max_connections,
            )

    def detach(self, conn: Connection, exc: Exception | None) -> None:
        super().detach(conn, exc)
        self._refusing = False

    async def _sweep_idle(self) -> None:
        """Close connections without traffic for idle_timeout, and half-closed ones (the peer
        sent EOF) once no reply went out for HALF_CLOSED_TIMEOUT (or idle_timeout if shorter)."""
        idle = self.config.idle_timeout
        half = min(idle, HALF_CLOSED_TIMEOUT) if idle > 0 else HALF_CLOSED_TIMEOUT
        interval = max(half / 4, MIN_SWEEP_INTERVAL)
        while True:
            await asyncio.sleep(interval)
            now = self.loop.time()
            for conn in list(self.conns.values()):
                if conn.active:
                    conn.active = False
                    conn.idle_since = now
                    continue
                limit = half if conn.half_closed else idle
                quiet = now - conn.idle_since
                if limit and quiet >= limit and not conn.is_closing():
                    self.ctx.log.info(
                        "closing connection %s (%s): %s for %.1f s",
                        conn.id,
                        conn.peer,
                        "half-closed by the peer, no replies" if conn.half_closed else "idle",
                        quiet,
                    )
                    conn.transport.close()

    def send(self, msg: FluxMsg) -> None:
        conn_id = msg.meta.get("conn.id")
        if conn_id is None:
            raise GearError("message has no conn.id meta; io_tcp server replies need it")
        conn = self.conns.get(conn_id)
        if conn is None or conn.transport.is_closing():
            raise GearError(
                f"connection '{conn_id}' is gone (closed by peer, idle_timeout or an "
                "oversize frame)"
            )
        conn.send(msg.raw)

    async def drain(self) -> None:
        await self._close_listener()
        await super().drain()

    async def stop(self) -> None:
        await self._close_listener()
        await super().stop()

    async def _close_listener(self) -> None:
        task, self._accept_task = self._accept_task, None
        if task is not None:  # first, so the loop forgets the socket before it is closed
            task.cancel()
            await asyncio.wait([task])
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self.ctx.log.info("stopped listening on %s", format_hostport(*self.address))
