"""The io_tcp gear: TCP (optionally TLS) server or client that turns a byte stream into messages."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from rack.errors import GearError
from rack.gear import DEFAULT_IN, DEFAULT_OUT, Emitter, Gear, Output
from rack.model.fluxmsg import FluxMsg

from .client import Client
from .config import TcpConfig
from .connection import Connection
from .endpoint import Endpoint
from .server import Server
from .tls import ssl_context


class TcpGear(Gear[TcpConfig]):
    """Frames a TCP byte stream into messages and writes replies back to the same connection.

    Each complete frame becomes a message on `out` with meta `conn.id`, `peer.ip` and `peer.port`.
    A message arriving on `in` is framed and written back: in server mode to the connection named
    by its `conn.id` (an error if it is missing or that connection closed), in client mode to the
    current connection (an error while disconnected). A frame over `max_frame_bytes` closes only
    its connection. When downstream wires are full, or a peer stops reading its replies, that
    connection is no longer read until there is room again. After the peer half-closes its side,
    replies to the frames it already sent are still written (plain TCP only). `drain` stops
    accepting and reading; replies in flight still go out.

    Stats: `connections`, `refused`, `oversize`, `bytes_in`, gauge `open_connections`.
    """

    type_name = "io_tcp"
    summary = (
        "TCP/TLS server or client: one message per frame (delimiter or length prefix); "
        "replies go back to the sender's connection."
    )
    config_model = TcpConfig
    inputs = (DEFAULT_IN,)
    outputs = (DEFAULT_OUT,)

    _endpoint: Endpoint | None = None

    async def start(self, emit: Emitter) -> None:
        tls = ssl_context(self.config)
        endpoint: Endpoint
        if self.config.mode == "server":
            endpoint = Server(self.ctx, emit, tls)
        else:
            endpoint = Client(self.ctx, emit, tls)
        await endpoint.start()
        self._endpoint = endpoint

    async def process(self, msg: FluxMsg, port: str) -> Output:
        endpoint = self._endpoint
        if endpoint is None:
            raise GearError(f"io_tcp gear '{self.ctx.name}' is not started")
        endpoint.send(msg)
        return None

    async def drain(self) -> None:
        if self._endpoint is not None:
            await self._endpoint.drain()

    async def stop(self) -> None:
        if self._endpoint is not None:
            await self._endpoint.stop()
            self.ctx.cancel_spawned()

    # -- for the CLI, tests and operators ------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """Server: the bound (host, port), with the real port when `bind` asked for 0.
        Client: the (host, port) it dials."""
        if self._endpoint is None:
            raise GearError(f"io_tcp gear '{self.ctx.name}' is not started")
        return self._endpoint.address

    @property
    def connections(self) -> Mapping[str, Connection]:
        """Open connections by conn.id (read-only view)."""
        if self._endpoint is None:
            return MappingProxyType({})
        return MappingProxyType(self._endpoint.conns)

    async def wait_connections(self, count: int) -> None:
        """Wait until exactly `count` connections are open (readiness for tests and tools)."""
        if self._endpoint is None:
            raise GearError(f"io_tcp gear '{self.ctx.name}' is not started")
        await self._endpoint.wait_connections(count)
