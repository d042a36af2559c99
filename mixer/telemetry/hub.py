"""`TelemetryHub`: the mixer's OTLP hub — receivers, DuckDB store, Parquet archive, forwarding.

    async with TelemetryHub(settings.telemetry, state_dir) as hub:
        hub.grpc_port, hub.http_port           # where OTLP senders point (4317 / 4318)
        await hub.query.spans(trace_id=...)    # one query path over live rows and the archive
        await hub.archive_now()                # also runs every `archive_interval`
        await hub.status()                     # its own health: counters, archive, forwarding

Opened in this order (closed in reverse on one AsyncExitStack, so receivers stop first, the
forwarder sends what it can, and the store writes everything still queued):

1. the store (`<state_dir>/telemetry/telemetry.duckdb`, its writer thread) with the archiver as
   its periodic maintenance (`<state_dir>/telemetry/archive/`);
2. the forwarder, when `forward_endpoint` is set;
3. the OTLP/gRPC receiver on `host:grpc_port`, the OTLP/HTTP receiver on `host:http_port`.

A request flows: receiver → `ingest` (decode in a thread when large; refuse with
TelemetryBusyError when the write queue is full; hand the raw request to the forwarder) →
writer thread (flatten, batched insert). `enabled = false` opens nothing.
Counters: `received` (rows accepted), `refused` (requests refused: queue full),
`dropped_forward` (requests the forwarder dropped), `written` (rows per table); `status()` has
them all (`mixer.telemetry.status`), readable after `aclose()` too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from mixer.telemetry.archive import Archiver
from mixer.telemetry.config import TelemetrySection
from mixer.telemetry.errors import TelemetryBusyError, TelemetryError
from mixer.telemetry.forward import Forwarder
from mixer.telemetry.payload import Export, Format, Signal, decode
from mixer.telemetry.query import TelemetryQuery
from mixer.telemetry.receiver_grpc import GrpcReceiver
from mixer.telemetry.receiver_http import HttpReceiver
from mixer.telemetry.status import (
    HubStatus,
    IntakeStatus,
    QueryStatus,
    ReceiverStatus,
    WriterStatus,
    WriterWatch,
    count_live,
    forward_status,
    scan_archive,
    writer_status,
)
from mixer.telemetry.store import ARCHIVE_DIR, TelemetryStore
from rack.lifecycle import Service

__all__ = ["INLINE_DECODE_BYTES", "TELEMETRY_DIR", "TelemetryHub"]

log = logging.getLogger("fluxrig.mixer.telemetry")

TELEMETRY_DIR = "telemetry"
INLINE_DECODE_BYTES = 64 * 1024  # smaller bodies are decoded on the event loop
T = TypeVar("T")


class TelemetryHub(Service):
    """The OTLP telemetry hub; `start()` opens it, `aclose()` (idempotent) flushes and closes."""

    def __init__(
        self,
        settings: TelemetrySection,
        state_dir: Path,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.directory = state_dir / TELEMETRY_DIR
        self._clock = clock
        self._stack: AsyncExitStack | None = None
        self._store: TelemetryStore | None = None
        self._archiver: Archiver | None = None
        self._query: TelemetryQuery | None = None
        self._forwarder: Forwarder | None = None
        self._grpc: GrpcReceiver | None = None
        self._http: HttpReceiver | None = None
        # the counters' sources, kept after aclose() so the final counts stay readable
        self._counted_store: TelemetryStore | None = None
        self._counted_forwarder: Forwarder | None = None
        self._watch = WriterWatch()  # the writer's last warning or error

    # -- the objects, once started ----------------------------------------------------------------

    @property
    def grpc_port(self) -> int:
        port = self._started(self._grpc, "OTLP/gRPC receiver").port
        assert port is not None
        return port

    @property
    def http_port(self) -> int:
        port = self._started(self._http, "OTLP/HTTP receiver").port
        assert port is not None
        return port

    @property
    def query(self) -> TelemetryQuery:
        return self._started(self._query, "query")

    @property
    def store(self) -> TelemetryStore:
        return self._started(self._store, "store")

    @property
    def received(self) -> int:
        """Rows (spans, data points, log records) accepted into the write queue."""
        store = self._counted_store
        return store.intake.accepted if store is not None else 0

    @property
    def refused(self) -> int:
        """Requests refused because the write queue was full (answered 503 / UNAVAILABLE)."""
        store = self._counted_store
        return store.intake.refused if store is not None else 0

    @property
    def dropped_forward(self) -> int:
        """Requests the forwarder dropped (queue over its bound, or not sent by close)."""
        forwarder = self._counted_forwarder
        return forwarder.dropped if forwarder is not None else 0

    @property
    def running(self) -> bool:
        """Started and not closed (`enabled = false` never runs)."""
        return self._store is not None

    @property
    def written(self) -> dict[str, int]:
        """Rows written per table."""
        store = self._counted_store
        return dict(store.written) if store is not None else {}

    def _started(self, value: T | None, what: str) -> T:
        if value is None:
            state = "not started"
            if not self.settings.enabled:
                state = "disabled ([telemetry] enabled = false)"
            raise TelemetryError(f"the telemetry hub is {state}: no {what}")
        return value

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open everything (see the module doc); on failure close what was opened and raise."""
        if self._stack is not None:
            raise TelemetryError("the telemetry hub is already started; aclose() it first")
        self._stack = stack = AsyncExitStack()
        if not self.settings.enabled:
            log.info("telemetry hub disabled ([telemetry] enabled = false)")
            return
        try:
            await self._open(stack)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop receiving, forward and write what is queued, close; idempotent."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        try:
            await stack.aclose()
        finally:
            self._grpc = self._http = None
            self._forwarder = None
            self._query = None
            self._store = self._archiver = None

    async def _open(self, stack: AsyncExitStack) -> None:
        cfg = self.settings
        store = TelemetryStore(self.directory, cfg)
        archiver = Archiver(
            store.archive_dir,
            store.lock,
            grace=timedelta(seconds=cfg.archive_grace),
            retention=timedelta(hours=cfg.retention_hours),
            clock=self._clock,
        )
        store.maintenance = archiver.run
        await asyncio.to_thread(_open_store, store, archiver)
        stack.push_async_callback(_close_store, store)
        self._store, self._archiver = store, archiver
        self._counted_store, self._counted_forwarder = store, None
        await self._watch.attach(store, log)
        stack.callback(self._watch.detach, log)
        self._query = TelemetryQuery(store)
        stack.push_async_callback(self._query.aclose)  # before the store: interrupt queries
        if cfg.forward_endpoint is not None:
            forwarder = Forwarder(
                cfg.forward_endpoint,
                cfg.forward_protocol,
                headers=cfg.headers(),
                max_bytes=cfg.forward_queue_bytes,
                timeout=cfg.forward_timeout,
            )
            await forwarder.start()
            stack.push_async_callback(forwarder.aclose)
            self._forwarder = self._counted_forwarder = forwarder
        grpc_receiver = GrpcReceiver(cfg.host, cfg.grpc_port, max_bytes=cfg.max_body_bytes,
                                     ingest=self.ingest)  # fmt: skip
        await grpc_receiver.start()
        stack.push_async_callback(grpc_receiver.aclose)
        self._grpc = grpc_receiver
        http_receiver = HttpReceiver(cfg.host, cfg.http_port, max_bytes=cfg.max_body_bytes,
                                     ingest=self.ingest)  # fmt: skip
        await http_receiver.start()
        stack.push_async_callback(http_receiver.aclose)
        self._http = http_receiver
        log.info("telemetry hub ready: OTLP/gRPC on %d, OTLP/HTTP on %d, data in %s",
                 self.grpc_port, self.http_port, store.directory)  # fmt: skip

    # -- intake and maintenance -------------------------------------------------------------------

    async def ingest(
        self, signal: Signal, body: bytes, fmt: Format, encoding: str | None = None
    ) -> Export:
        """Decode one OTLP request and queue it for writing (and forwarding).

        Raises MalformedTelemetryError, TelemetryTooLargeError, UnsupportedMediaError, and
        TelemetryBusyError when the write queue is full (nothing was kept: retry later)."""
        store = self._store
        if store is None:
            raise TelemetryBusyError("the telemetry hub is not running")
        limit = self.settings.max_body_bytes
        if len(body) <= INLINE_DECODE_BYTES and encoding is None:
            export = decode(signal, body, fmt, limit=limit)
        else:
            export = await asyncio.to_thread(decode, signal, body, fmt, limit=limit,
                                             encoding=encoding)  # fmt: skip
        if export.rows == 0:
            return export
        if not store.offer(export):
            raise TelemetryBusyError(
                f"the telemetry write queue is full ({store.intake.rows} rows waiting; "
                f"[telemetry] queue_rows {self.settings.queue_rows}, queue_bytes "
                f"{self.settings.queue_bytes}); retry later"
            )
        if self._forwarder is not None:
            self._forwarder.push(signal, export.raw)
        return export

    async def status(self) -> HubStatus:
        """The hub's health now (`mixer.telemetry.status`): cheap; the archive directory is
        scanned on a thread, the live rows counted through the query path (bounded)."""
        cfg = self.settings
        archive = await asyncio.to_thread(scan_archive, self.directory / ARCHIVE_DIR,
                                          cfg.retention_hours)  # fmt: skip
        live: dict[str, int] | None = None
        why: str | None = "the telemetry hub is not running"
        if self._query is not None and self._store is not None:
            live, why = await count_live(self._query, self._store.catalog)
        forwarder = self._counted_forwarder
        return HubStatus(
            enabled=cfg.enabled,
            running=self.running,
            receivers=ReceiverStatus(
                cfg.host,
                self._grpc.port if self._grpc is not None else None,
                self._http.port if self._http is not None else None,
            ),
            intake=self._intake_status(),
            writer=self._writer_status(),
            archive=archive,
            queries=self._query_status(),
            forwarding=forward_status(forwarder) if forwarder is not None else None,
            live_rows=live,
            live_rows_error=why,
        )

    def _intake_status(self) -> IntakeStatus:
        cfg, store = self.settings, self._counted_store
        intake = store.intake if store is not None else None
        return IntakeStatus(
            received_rows=self.received,
            refused_requests=self.refused,
            queued_rows=intake.rows if intake is not None else 0,
            queued_bytes=intake.bytes if intake is not None else 0,
            max_rows=cfg.queue_rows,
            max_bytes=cfg.queue_bytes,
        )

    def _writer_status(self) -> WriterStatus:
        store = self._counted_store
        if store is None:
            return WriterStatus({}, 0, 0, 0, 0, None)
        return writer_status(store, self._watch)

    def _query_status(self) -> QueryStatus:
        cfg, query = self.settings, self._query
        busy = query.busy if query is not None else 0
        stopping = query.stopping if query is not None else 0
        return QueryStatus(busy, stopping, cfg.max_concurrent_queries, cfg.query_timeout)

    async def flush(self) -> None:
        """Wait until everything received so far is written."""
        await self.store.call(lambda conn: None)

    async def archive_now(self, now: datetime | None = None) -> list[Path]:
        """Move the hours closed (`archive_grace` before `now`) to Parquet; the files written."""
        archiver = self._started(self._archiver, "archiver")
        moment = now or self._clock()
        return await self.store.call(lambda conn: archiver.archive(conn, moment))

    async def apply_retention(self, now: datetime | None = None) -> list[Path]:
        """Delete the partitions older than `retention_hours` at `now`; the ones deleted."""
        archiver = self._started(self._archiver, "archiver")
        moment = now or self._clock()
        return await self.store.call(lambda conn: archiver.retain(moment))


def _open_store(store: TelemetryStore, archiver: Archiver) -> None:
    store.archive_dir.mkdir(parents=True, exist_ok=True)
    archiver.settle_leftovers()
    store.open()


async def _close_store(store: TelemetryStore) -> None:
    await asyncio.to_thread(store.close)
    log.info("telemetry store closed (%s rows written)", sum(store.written.values()))
