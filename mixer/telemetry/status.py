"""`HubStatus`: the telemetry hub's own health, for operators — is it losing or refusing data?

    status = await hub.status()       # event loop; the archive scan runs on a thread
    status.intake.refused_requests    # requests answered 503 / UNAVAILABLE (queue full)
    status.writer.failed_rows         # rows dropped (their own data, or given up at close)

Values (frozen, slotted dataclasses) read from the hub's parts: the intake's and the store's
counters, the forwarder's, the query pool's, a scan of the archive directory (blocking:
`scan_archive`, never on the event loop) and the live tables' row counts (`count_live`: one
`count(*)` per table through the query path, so bounded like any query, and reported as
unknown — with why — when the queries are saturated or the database is being reopened).

The store keeps counters, not its last error, but the writer logs every failure it meets (a
write retried, rows dropped, a reopen, a failed archive run) on its own thread: `WriterWatch`,
a logging handler on the telemetry logger, keeps the last warning or error logged there.
Forwarding credentials never leave the hub: the endpoint is shown without its user info and
query values (`redact`), the headers by name only.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mixer.telemetry.errors import TelemetryError
from mixer.telemetry.forward import Forwarder, redact
from mixer.telemetry.query import TelemetryQuery
from mixer.telemetry.schema import TABLES
from mixer.telemetry.store import TelemetryStore

__all__ = [
    "COUNT_TIMEOUT",
    "ArchiveStatus",
    "ForwardStatus",
    "HubStatus",
    "IntakeStatus",
    "QueryStatus",
    "ReceiverStatus",
    "WriteError",
    "WriterStatus",
    "WriterWatch",
    "count_live",
    "forward_status",
    "redact",
    "scan_archive",
]

COUNT_TIMEOUT = 2.0  # seconds the live row counts may take (they are unknown past it)
MAX_MESSAGE = 400  # characters of the last error kept
_PARTITION = re.compile(r"date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})")


@dataclass(frozen=True, slots=True)
class ReceiverStatus:
    host: str
    grpc_port: int | None  # None while not running
    http_port: int | None


@dataclass(frozen=True, slots=True)
class IntakeStatus:
    received_rows: int  # accepted into the write queue
    refused_requests: int  # answered 503 / UNAVAILABLE: the queue was full
    queued_rows: int  # received, not written yet
    queued_bytes: int
    max_rows: int  # [telemetry] queue_rows
    max_bytes: int  # [telemetry] queue_bytes


@dataclass(frozen=True, slots=True)
class WriteError:
    message: str
    at: datetime


@dataclass(frozen=True, slots=True)
class WriterStatus:
    written_rows: dict[str, int]  # per table
    failed_rows: int  # dropped: their own data, or still failing when the hub closed
    retries: int  # failed write attempts, each retried
    reopens: int  # times the database was reopened after DuckDB invalidated it
    checkpoints: int
    last_error: WriteError | None  # the last warning or error the writer logged


@dataclass(frozen=True, slots=True)
class ArchiveStatus:
    retention_hours: int
    partitions: dict[str, int]  # hourly partitions (with a part file) per table
    bytes: int  # of every part file
    oldest_hour: datetime | None  # the start of the oldest partition (UTC)
    newest_hour: datetime | None


@dataclass(frozen=True, slots=True)
class ForwardStatus:
    endpoint: str  # without user info or query values
    protocol: str
    headers: list[str]  # their names only
    sent: int  # requests
    dropped: int  # the queue was over its bound, or they were not sent by close
    failed: int  # refused by the upstream for good
    queued_requests: int
    queued_bytes: int
    max_bytes: int  # [telemetry] forward_queue_bytes


@dataclass(frozen=True, slots=True)
class QueryStatus:
    busy: int  # running now (or about to)
    stopping: int  # stopped (timeout, caller gone) whose thread has not ended yet
    max_concurrent: int
    timeout: float  # seconds


@dataclass(frozen=True, slots=True)
class HubStatus:
    enabled: bool
    running: bool
    receivers: ReceiverStatus
    intake: IntakeStatus
    writer: WriterStatus
    archive: ArchiveStatus
    queries: QueryStatus
    forwarding: ForwardStatus | None  # None: no forward_endpoint
    live_rows: dict[str, int] | None = None  # per table; None when unknown (live_rows_error)
    live_rows_error: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


# -- the parts ------------------------------------------------------------------------------------


class WriterWatch(logging.Handler):
    """Keeps the last warning or error logged on one thread (the store's writer)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread: int | None = None  # its ident, once known
        self.last: WriteError | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        try:
            text = _first_line(record.getMessage())
        except Exception:  # a bad format string must not break the writer
            text = _first_line(str(record.msg))
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text += f" ({type(exc).__name__}: {_first_line(str(exc))})"
        if len(text) > MAX_MESSAGE:
            text = text[: MAX_MESSAGE - 3] + "..."
        self.last = WriteError(text, datetime.fromtimestamp(record.created, UTC))

    async def attach(self, store: TelemetryStore, logger: logging.Logger) -> None:
        """Watch `store`'s writer thread (asked on it, after what is queued) on `logger`."""
        self.thread = await store.call(lambda conn: threading.get_ident())
        logger.addHandler(self)

    def detach(self, logger: logging.Logger) -> None:
        logger.removeHandler(self)


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def writer_status(store: TelemetryStore, watch: WriterWatch) -> WriterStatus:
    return WriterStatus(
        written_rows=dict(store.written),
        failed_rows=store.failed,
        retries=store.retried,
        reopens=store.reopened,
        checkpoints=store.checkpoints,
        last_error=watch.last,
    )


def forward_status(forwarder: Forwarder) -> ForwardStatus:
    return ForwardStatus(
        endpoint=redact(forwarder.endpoint),
        protocol=forwarder.protocol,
        headers=forwarder.header_names,
        sent=forwarder.sent,
        dropped=forwarder.dropped,
        failed=forwarder.failed,
        queued_requests=forwarder.pending,
        queued_bytes=forwarder.pending_bytes,
        max_bytes=forwarder.max_bytes,
    )


def scan_archive(root: Path, retention_hours: int) -> ArchiveStatus:
    """Blocking (a directory walk): the hourly partitions under `root` that hold part files.

    Runs without the store's lock: a partition removed meanwhile is simply not counted."""
    partitions = {table.name: 0 for table in TABLES}
    hours: list[datetime] = []
    size = 0
    for table in TABLES:
        for hour_dir in (root / table.name).glob("date=*/hour=*"):
            start = _hour_of(hour_dir)
            if start is None:
                continue
            files = 0
            for part in hour_dir.glob("part-*.parquet"):
                try:
                    size += part.stat().st_size
                except OSError:  # removed by retention meanwhile
                    continue
                files += 1
            if files:
                partitions[table.name] += 1
                hours.append(start)
    return ArchiveStatus(
        retention_hours=retention_hours,
        partitions=partitions,
        bytes=size,
        oldest_hour=min(hours, default=None),
        newest_hour=max(hours, default=None),
    )


def _hour_of(hour_dir: Path) -> datetime | None:
    match = _PARTITION.fullmatch(f"{hour_dir.parent.name}/{hour_dir.name}")
    if match is None:
        return None
    try:
        return datetime.strptime(f"{match[1]} {match[2]}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    except ValueError:  # hour=24, date=2026-02-30
        return None


async def count_live(
    query: TelemetryQuery, catalog: str, timeout: float = COUNT_TIMEOUT
) -> tuple[dict[str, int] | None, str | None]:
    """The rows of each live table (not the archive), through the query path; (None, why)
    when they cannot be counted within `timeout` seconds (or the query bound's)."""
    quoted = catalog.replace('"', '""')
    counts = ", ".join(
        f'(SELECT count(*) FROM "{quoted}".main.{table.name}) AS {table.name}' for table in TABLES
    )
    try:
        async with asyncio.timeout(timeout):  # cancelling the query interrupts it in DuckDB
            rows = await query.sql(f"SELECT {counts}", limit=1)
    except TimeoutError:
        return None, f"counting the live rows took longer than {timeout:g}s"
    except TelemetryError as exc:
        return None, f"cannot count the live rows now: {exc}"
    return {name: int(value) for name, value in rows[0].items()}, None
