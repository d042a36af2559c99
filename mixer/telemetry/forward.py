"""`Forwarder`: every accepted OTLP request also goes to an upstream OTLP endpoint.

    forwarder = Forwarder("collector:4317", "grpc", headers={"x-api-key": "..."})
    await forwarder.start()
    forwarder.push("traces", raw_protobuf)    # never blocks, never fails
    await forwarder.aclose()                   # sends what it can within `grace`, then stops

Requests wait in a queue bounded by `max_bytes`; when it is full the OLDEST are dropped and
counted (`dropped`), so a down upstream costs memory up to the bound and nothing else. One task
sends them in order. A retryable failure (gRPC UNAVAILABLE, DEADLINE_EXCEEDED,
RESOURCE_EXHAUSTED, ABORTED; HTTP 429, 502, 503, 504; connection errors) keeps the request at
the head and retries with exponential back-off (up to `backoff_max` seconds); any other answer
drops it (`failed`, logged). gRPC sends the bytes as received (no re-encoding); http/protobuf
POSTs them to `<endpoint>/v1/<signal>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import grpc

from mixer.telemetry.config import ForwardProtocol
from mixer.telemetry.errors import TelemetryError
from mixer.telemetry.payload import SIGNALS, Signal
from rack.lifecycle import Service

__all__ = ["Forwarder", "redact"]

log = logging.getLogger("fluxrig.mixer.telemetry")

RETRYABLE_GRPC = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
RETRYABLE_HTTP = frozenset({429, 502, 503, 504})


class _Rejected(Exception):
    """The upstream refused a request for good (it is dropped)."""


class Forwarder(Service):
    """Forwards raw OTLP requests upstream; see the module doc."""

    def __init__(
        self,
        endpoint: str,
        protocol: ForwardProtocol,
        *,
        headers: Mapping[str, str] | None = None,
        max_bytes: int = 64 * 1024 * 1024,
        timeout: float = 10.0,
        grace: float = 5.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 30.0,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.protocol = protocol
        self._headers = dict(headers or {})
        self.max_bytes = max_bytes
        self.timeout, self.grace = timeout, grace
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.sent = self.dropped = self.failed = 0
        self._queue: deque[tuple[Signal, bytes]] = deque()
        self._bytes = 0
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._stack: AsyncExitStack | None = None
        self._task: asyncio.Task[None] | None = None
        self._channel: Any = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def pending_bytes(self) -> int:
        """Bytes of the requests waiting (the `max_bytes` bound)."""
        return self._bytes

    @property
    def header_names(self) -> list[str]:
        """The names of the headers sent with every request (never their values)."""
        return sorted(self._headers)

    def push(self, signal: Signal, payload: bytes) -> None:
        """Queue one request (protobuf bytes); drops the oldest beyond `max_bytes`."""
        if self._closing.is_set():
            self.dropped += 1
            return
        self._queue.append((signal, payload))
        self._bytes += len(payload)
        while self._bytes > self.max_bytes and len(self._queue) > 1:
            _, old = self._queue.popleft()
            self._bytes -= len(old)
            self.dropped += 1
        self._wake.set()

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._stack is not None:
            raise TelemetryError("the telemetry forwarder is already started; aclose() it first")
        self._stack = stack = AsyncExitStack()
        try:
            if self.protocol == "grpc":
                self._channel = _channel(self.endpoint)
                stack.push_async_callback(self._channel.close)
            else:
                self._session = await stack.enter_async_context(aiohttp.ClientSession())
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            self._task = tasks.create_task(self._run(), name="telemetry-forwarder")
            stack.callback(self._cancel)  # runs before the TaskGroup exits
        except BaseException:
            await self.aclose()
            raise
        log.info("telemetry forwarded to %s (%s)", redact(self.endpoint), self.protocol)

    async def aclose(self) -> None:
        """Send what is queued for up to `grace` seconds, then stop; idempotent."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        self._closing.set()
        self._wake.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=self.grace)
        try:
            await stack.aclose()
        finally:
            if self._queue:
                log.warning("telemetry forwarder stopped with %d requests not sent",
                            len(self._queue))  # fmt: skip
                self.dropped += len(self._queue)
                self._queue.clear()
                self._bytes = 0

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    # -- sending ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.backoff_initial
        while True:
            if not self._queue:
                if self._closing.is_set():
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            item = self._queue[0]
            try:
                await self._send(*item)
            except _Rejected as exc:
                self.failed += 1
                log.warning("upstream %s refused a %s request, dropped: %s",
                            redact(self.endpoint), item[0], exc)  # fmt: skip
            except Exception as exc:  # retryable: keep it, back off
                if self._closing.is_set():
                    return
                log.debug("upstream %s unavailable (%s); retrying in %.1fs",
                          redact(self.endpoint), exc, delay)  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._closing.wait()
                delay = min(delay * 2, self.backoff_max)
                continue
            else:
                self.sent += 1
            delay = self.backoff_initial
            if self._queue and self._queue[0] is item:  # not dropped meanwhile
                self._queue.popleft()
                self._bytes -= len(item[1])

    async def _send(self, signal: Signal, payload: bytes) -> None:
        if self._channel is not None:
            await self._send_grpc(signal, payload)
        else:
            await self._send_http(signal, payload)

    async def _send_grpc(self, signal: Signal, payload: bytes) -> None:
        method = self._channel.unary_unary(f"/{SIGNALS[signal].service}/Export")
        metadata = tuple((key.lower(), value) for key, value in self._headers.items())
        try:
            await method(payload, timeout=self.timeout, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in RETRYABLE_GRPC:
                raise ConnectionError(f"{exc.code().name}: {exc.details()}") from exc
            raise _Rejected(f"{exc.code().name}: {exc.details()}") from exc

    async def _send_http(self, signal: Signal, payload: bytes) -> None:
        assert self._session is not None
        url = f"{self.endpoint}{SIGNALS[signal].path}"
        headers = {**self._headers, "Content-Type": "application/x-protobuf"}
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with self._session.post(url, data=payload, headers=headers,
                                      timeout=timeout) as response:  # fmt: skip
            if response.status < 300:
                return
            text = (await response.read())[:200]
            if response.status in RETRYABLE_HTTP:
                raise ConnectionError(f"HTTP {response.status}: {text!r}")
            raise _Rejected(f"HTTP {response.status}: {text!r}")


def redact(endpoint: str) -> str:
    """`endpoint` without what may be a credential: user info and query values (`***`)."""
    if "://" not in endpoint:
        return endpoint.rsplit("@", 1)[-1]  # host:port (a gRPC target)
    parts = urlsplit(endpoint)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = urlencode([(key, "***") for key, _ in parse_qsl(parts.query, keep_blank_values=True)])
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _channel(endpoint: str) -> Any:
    """A grpc.aio channel: `https://` (TLS, system roots), `http://` or bare `host:port`."""
    if endpoint.startswith("https://"):
        return grpc.aio.secure_channel(endpoint[8:], grpc.ssl_channel_credentials())
    return grpc.aio.insecure_channel(endpoint.removeprefix("http://"))
