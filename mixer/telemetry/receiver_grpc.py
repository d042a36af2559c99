"""`GrpcReceiver`: OTLP/gRPC — the collector's TraceService, MetricsService and LogsService.

    receiver = GrpcReceiver("127.0.0.1", 4317, max_bytes=4 << 20, ingest=hub.ingest)
    await receiver.start()
    receiver.port           # the bound port (the real one when 0 was asked)
    await receiver.aclose()

Each service's `Export` is served from the raw request bytes (the generated servicers would let
grpc parse them and answer a hostile body with INTERNAL): `ingest` parses them and answers
INVALID_ARGUMENT naming what is wrong; a message over `max_bytes` is refused by grpc itself with
RESOURCE_EXHAUSTED; a full write queue answers UNAVAILABLE, which OTLP senders retry with
back-off. gzip (grpc-encoding) is handled by grpc.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from mixer.telemetry.errors import TelemetryError, status_of
from mixer.telemetry.payload import SIGNALS, Ingest, Signal
from rack.lifecycle import Service

__all__ = ["GrpcReceiver"]

log = logging.getLogger("fluxrig.mixer.telemetry")

DEFAULT_GRACE = 2.0


class GrpcReceiver(Service):
    """The OTLP/gRPC server on `host:port`; `aclose()` is idempotent."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_bytes: int,
        ingest: Ingest,
        grace: float = DEFAULT_GRACE,
    ) -> None:
        self.host = host
        self._asked_port = port
        self.max_bytes = max_bytes
        self._ingest = ingest
        self._grace = grace
        self._server: Any = None
        self._closed = False
        self.port: int | None = None

    async def start(self) -> None:
        if self._server is not None:
            return
        if self._closed:
            raise TelemetryError("this OTLP/gRPC receiver was closed; make a new one")
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),  # a second mixer on the port must fail, not share it
                ("grpc.max_receive_message_length", self.max_bytes),
            ]
        )
        server.add_generic_rpc_handlers(tuple(self._handler(s) for s in SIGNALS))
        self.port = self._bind(server)
        await server.start()
        self._server = server
        log.info("OTLP/gRPC receiver listening on %s", _hostport(self.host, self.port))

    async def aclose(self) -> None:
        """Stop, letting calls in flight finish within the grace period; idempotent."""
        if self._closed:
            return
        self._closed = True
        server, self._server = self._server, None
        if server is not None:
            await server.stop(self._grace)

    def _handler(self, signal: Signal) -> Any:
        kind = SIGNALS[signal]

        async def export(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            try:
                await self._ingest(signal, request, "protobuf", None)
            except TelemetryError as exc:
                _, code = status_of(exc)
                await context.abort(grpc.StatusCode[code], str(exc))
            return bytes(kind.response().SerializeToString())

        method = grpc.unary_unary_rpc_method_handler(export)  # raw bytes in and out
        return grpc.method_handlers_generic_handler(kind.service, {"Export": method})

    def _bind(self, server: Any) -> int:
        address = _hostport(self.host, self._asked_port)
        try:
            port = int(server.add_insecure_port(address))
        except RuntimeError as exc:  # grpc's "Failed to bind to address …"
            port, reason = 0, f": {exc}"
        else:
            reason = ""
        if port == 0:
            raise TelemetryError(
                f"OTLP/gRPC receiver cannot listen on {address}{reason}; "
                "choose another [telemetry] grpc_port"
            )
        return port


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
