"""`HttpReceiver`: OTLP/HTTP — POST `/v1/traces`, `/v1/metrics`, `/v1/logs` (aiohttp).

    receiver = HttpReceiver("127.0.0.1", 4318, max_bytes=4 << 20, ingest=hub.ingest)
    await receiver.start()
    receiver.port           # the bound port
    await receiver.aclose()

Bodies are `application/x-protobuf` or `application/json` (OTLP/JSON), optionally
`Content-Encoding: gzip` (decompressed here, within the limit: aiohttp's own decompression is
off). Answers, as the OTLP spec says: 200 with an empty Export*ServiceResponse in the request's
encoding; on error a `google.rpc.Status` (protobuf, or JSON for JSON requests) with a message
naming the problem: 400 malformed body, 413 over `max_bytes` (a declared Content-Length is
refused before anything is read), 415 another content type or encoding, 503 full write queue
(with `Retry-After`; OTLP senders retry).
"""

from __future__ import annotations

import json
import logging

from aiohttp import web
from aiohttp.typedefs import Handler
from google.rpc import status_pb2  # type: ignore[import-untyped, unused-ignore]

from mixer.telemetry.errors import (
    TelemetryError,
    TelemetryTooLargeError,
    UnsupportedMediaError,
    status_of,
)
from mixer.telemetry.payload import SIGNALS, Format, Ingest, Signal
from rack.lifecycle import Service

__all__ = ["HttpReceiver"]

log = logging.getLogger("fluxrig.mixer.telemetry")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_GRPC_CODES = {"INVALID_ARGUMENT": 3, "RESOURCE_EXHAUSTED": 8, "UNAVAILABLE": 14, "INTERNAL": 13}
RETRY_AFTER = "1"  # seconds


class HttpReceiver(Service):
    """The OTLP/HTTP server on `host:port`; `aclose()` is idempotent."""

    def __init__(self, host: str, port: int, *, max_bytes: int, ingest: Ingest) -> None:
        self.host = host
        self._asked_port = port
        self.max_bytes = max_bytes
        self._ingest = ingest
        self._runner: web.AppRunner | None = None
        self._closed = False
        self.port: int | None = None

    async def start(self) -> None:
        if self._runner is not None:
            return
        if self._closed:
            raise TelemetryError("this OTLP/HTTP receiver was closed; make a new one")
        app = web.Application(client_max_size=self.max_bytes)
        for signal, kind in SIGNALS.items():
            app.router.add_post(kind.path, self._handler(signal))
        runner = web.AppRunner(app, access_log=None, handle_signals=False, auto_decompress=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._asked_port).start()
        except OSError as exc:
            await runner.cleanup()
            raise TelemetryError(
                f"OTLP/HTTP receiver cannot listen on {self.host}:{self._asked_port}: "
                f"{exc.strerror or exc}; choose another [telemetry] http_port"
            ) from exc
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("OTLP/HTTP receiver listening on %s:%d", self.host, self.port)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _handler(self, signal: Signal) -> Handler:
        response_type = SIGNALS[signal].response

        async def export(request: web.Request) -> web.Response:
            fmt: Format = "json" if request.content_type == JSON else "protobuf"
            try:
                body = await self._read(signal, request)
                await self._ingest(signal, body, fmt, request.headers.get("Content-Encoding"))
            except TelemetryError as exc:
                return _problem(exc, fmt)
            if fmt == "json":
                return web.Response(body=b"{}", content_type=JSON)
            return web.Response(body=response_type().SerializeToString(), content_type=PROTOBUF)

        return export

    async def _read(self, signal: Signal, request: web.Request) -> bytes:
        if request.content_type not in (PROTOBUF, JSON):
            raise UnsupportedMediaError(
                f"OTLP/HTTP {signal} request has content type {request.content_type!r}; send "
                f"{PROTOBUF} or {JSON}"
            )
        declared = request.content_length
        if declared is not None and declared > self.max_bytes:
            raise _too_large(signal, f"declares {declared} bytes", self.max_bytes)
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise _too_large(signal, "is larger than", self.max_bytes, of=False) from exc


def _too_large(signal: str, what: str, limit: int, *, of: bool = True) -> TelemetryTooLargeError:
    over = ", over" if of else ""
    return TelemetryTooLargeError(
        f"OTLP/HTTP {signal} request {what}{over} the limit of {limit} bytes "
        "([telemetry] max_body_bytes); send smaller batches"
    )


def _problem(exc: TelemetryError, fmt: Format) -> web.Response:
    status, code = status_of(exc)
    headers = {"Retry-After": RETRY_AFTER} if status == 503 else {}
    number = _GRPC_CODES.get(code, 2)
    if fmt == "json":
        body = json.dumps({"code": number, "message": str(exc)}).encode()
        return web.Response(status=status, body=body, content_type=JSON, headers=headers)
    message = status_pb2.Status(code=number, message=str(exc)).SerializeToString()
    return web.Response(status=status, body=message, content_type=PROTOBUF, headers=headers)
