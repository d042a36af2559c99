"""The telemetry routes' bodies: their query strings, the SQL request, and the rows they answer.

The row models mirror the hub's tables (`mixer.telemetry.schema`; a test keeps them equal) and
only shape the OpenAPI document: the handlers send the query layer's JSON-able rows as they are,
without building a model per row. Numbers JSON cannot hold (NaN, ±infinity) arrive as strings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from mixer.api.http.models import _Query, _Request, _Response

DEFAULT_ROWS = 100
DEFAULT_TRACE_SPANS = 1000
DEFAULT_SQL_ROWS = 1000
MAX_ROWS = 10_000
MAX_SQL_CHARS = 64 * 1024
TIME_HELP = (
    "An ISO-8601 time (UTC when it has no offset), or a time before now: a number and a unit, "
    "`s`, `m`, `h`, `d` or `w` (`15m`, `2h`, `1d`)."
)

Number = float | str  # a DOUBLE column: "NaN", "Infinity", "-Infinity" as strings
JsonObject = dict[str, Any]


def _integral(value: Any) -> Any:
    """JSON's 545.0 is the integer 545 (JSON Schema says so); 545.5 stays a float (refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _limit(default: int) -> Any:
    help = f"At most this many rows (default {default})."
    return Field(default=default, ge=1, le=MAX_ROWS, description=help)


def _since() -> Any:
    return Field(default=None, description=f"From this time on (inclusive). {TIME_HELP}")


def _until() -> Any:
    return Field(default=None, description=f"Before this time (exclusive). {TIME_HELP}")


def _text(what: str) -> Any:
    return Field(default=None, description=f"Only {what}.")


# --- requests -----------------------------------------------------------------------------------


class MetricQuery(_Query):
    rack: str | None = _text("points of this rack")
    gear: str | None = _text("points of this gear")
    name: str | None = _text("this metric, e.g. `fluxrig.gear.messages`")
    since: str | None = _since()
    until: str | None = _until()
    limit: int = _limit(DEFAULT_ROWS)


class LogQuery(_Query):
    rack: str | None = _text("records of this rack")
    gear: str | None = _text("records of this gear")
    trace_id: str | None = _text("records of this trace (32 hex digits)")
    min_severity: int | None = Field(
        default=None, ge=1, le=24, description="Only at least this OTLP severity (17 = ERROR)."
    )
    since: str | None = _since()
    until: str | None = _until()
    limit: int = _limit(DEFAULT_ROWS)


class SpanQuery(_Query):
    flux_id: str | None = _text("spans of this fluxMsg (its fluxID); then oldest first")
    rack: str | None = _text("spans of this rack")
    gear: str | None = _text("spans of this gear")
    since: str | None = _since()
    until: str | None = _until()
    limit: int = _limit(DEFAULT_ROWS)


class TraceQuery(_Query):
    limit: int = _limit(DEFAULT_TRACE_SPANS)


class SqlRequest(_Request):
    """One read-only statement over the tables `spans`, `metric_points` and `logs`."""

    sql: str = Field(
        min_length=1,
        max_length=MAX_SQL_CHARS,
        description="One SELECT (or WITH … SELECT, FROM …, DESCRIBE, SUMMARIZE); anything else "
        "is refused (400 invalid_query).",
    )
    limit: Annotated[int, BeforeValidator(_integral)] = Field(
        default=DEFAULT_SQL_ROWS,
        ge=1,
        le=MAX_ROWS,
        description=f"At most this many rows (default {DEFAULT_SQL_ROWS}).",
    )


# --- rows (the hub's tables) --------------------------------------------------------------------


class Span(_Response):
    ts_start: datetime
    ts_end: datetime | None
    duration_us: int | None
    trace_id: str | None = Field(description="32 lowercase hex digits.")
    span_id: str | None = Field(description="16 lowercase hex digits.")
    parent_span_id: str | None = Field(description="Null for a root span.")
    name: str | None
    kind: str | None = Field(description="internal|server|client|producer|consumer|unspecified")
    status_code: str | None = Field(description="unset|ok|error")
    status_message: str | None
    service_name: str | None
    rack: str | None
    entity_id: str | None
    scenario: str | None
    scenario_hash: str | None
    gear: str | None
    flux_id: str | None
    attributes: JsonObject | None
    resource: JsonObject | None
    events: list[Any] | None
    links: list[Any] | None


class MetricPoint(_Response):
    ts: datetime
    name: str | None
    kind: str | None = Field(description="sum|gauge|histogram|exponential_histogram|summary")
    unit: str | None
    value: Number | None = Field(description="Sums and gauges.")
    count: int | None
    sum: Number | None
    bucket_bounds: list[Number] | None
    bucket_counts: list[int] | None = Field(description="len(bucket_bounds) + 1 counts.")
    rack: str | None
    gear: str | None
    wire: str | None
    scenario: str | None
    service_name: str | None
    attributes: JsonObject | None
    resource: JsonObject | None
    start_ts: datetime | None
    temporality: str | None = Field(description="delta|cumulative")
    monotonic: bool | None
    min: Number | None
    max: Number | None
    quantiles: list[Any] | None


class LogRecord(_Response):
    ts: datetime
    severity_number: int | None
    severity_text: str | None
    body: str | None
    trace_id: str | None
    span_id: str | None
    rack: str | None
    gear: str | None
    service_name: str | None
    attributes: JsonObject | None
    resource: JsonObject | None


class MetricList(_Response):
    points: list[MetricPoint] = Field(description="Newest first.")


class LogList(_Response):
    logs: list[LogRecord] = Field(description="Newest first.")


class SpanList(_Response):
    spans: list[Span] = Field(description="Newest first; of one fluxMsg (flux_id) oldest first.")


class Trace(_Response):
    trace_id: str
    spans: list[Span] = Field(description="Oldest first; build the tree by parent_span_id.")


class SqlResult(_Response):
    columns: list[str] = Field(description="The rows' keys, in order (empty when no row).")
    rows: list[JsonObject]
    truncated: bool = Field(description="`limit` rows came back: there may be more.")


# --- the hub's own health (mixer.telemetry.status) ----------------------------------------------


class ReceiverStatus(_Response):
    host: str
    grpc_port: int | None = Field(description="OTLP/gRPC; null while not running.")
    http_port: int | None = Field(description="OTLP/HTTP; null while not running.")


class IntakeStatus(_Response):
    received_rows: int = Field(description="Rows accepted into the write queue.")
    refused_requests: int = Field(
        description="Requests answered 503 / UNAVAILABLE because the write queue was full (the "
        "senders retry them): raise `queue_rows` / `queue_bytes` if it keeps growing."
    )
    queued_rows: int = Field(description="Rows received and not written yet.")
    queued_bytes: int
    max_rows: int = Field(description="`[telemetry] queue_rows`.")
    max_bytes: int = Field(description="`[telemetry] queue_bytes`.")


class WriteError(_Response):
    message: str
    at: datetime


class WriterStatus(_Response):
    written_rows: dict[str, int] = Field(description="Rows written, per table.")
    failed_rows: int = Field(
        description="Rows dropped: their own data could not be stored, or writes still failed "
        "when the hub closed (logged)."
    )
    retries: int = Field(description="Failed write attempts, each retried (no row lost).")
    reopens: int = Field(description="Times the database was reopened after DuckDB invalidated it.")
    checkpoints: int
    last_error: WriteError | None = Field(
        description="The last warning or error the writer logged (a failed write, rows dropped, "
        "a reopen, a failed archive run); null: none since the mixer started."
    )


class ArchiveStatus(_Response):
    retention_hours: int
    partitions: dict[str, int] = Field(description="Hourly Parquet partitions, per table.")
    bytes: int = Field(description="Of every part file.")
    oldest_hour: datetime | None = Field(description="Start of the oldest partition (UTC).")
    newest_hour: datetime | None


class ForwardStatus(_Response):
    endpoint: str = Field(description="`forward_endpoint` without user info or query values.")
    protocol: str
    headers: list[str] = Field(description="The names of `forward_headers` (never the values).")
    sent: int = Field(description="Requests the upstream accepted.")
    dropped: int = Field(description="Requests dropped: the queue was over its bound, or close.")
    failed: int = Field(description="Requests the upstream refused for good.")
    queued_requests: int
    queued_bytes: int
    max_bytes: int = Field(description="`[telemetry] forward_queue_bytes`.")


class QueryStatus(_Response):
    busy: int = Field(description="Queries running now.")
    stopping: int = Field(description="Queries stopped (timeout, client gone) still ending.")
    max_concurrent: int
    timeout: float = Field(description="`[telemetry] query_timeout`, seconds.")


class TelemetryStatus(_Response):
    """The telemetry hub's own health; counters count since the mixer started."""

    enabled: bool
    running: bool
    receivers: ReceiverStatus
    intake: IntakeStatus
    writer: WriterStatus
    archive: ArchiveStatus
    queries: QueryStatus
    forwarding: ForwardStatus | None = Field(description="Null: no `forward_endpoint`.")
    live_rows: dict[str, int] | None = Field(
        description="Rows in each live table (not archived yet); null when they could not be "
        "counted now (`live_rows_error` says why, e.g. every query slot taken)."
    )
    live_rows_error: str | None
    at: datetime = Field(description="When this status was taken.")
