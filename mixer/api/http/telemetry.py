"""Telemetry queries over REST: the rows the mixer's OTLP hub stored (`mixer.telemetry`).

    GET  /telemetry/metrics?rack=&gear=&name=&since=&until=&limit=              newest first
    GET  /telemetry/logs?rack=&gear=&trace_id=&min_severity=&since=&until=&limit=   newest first
    GET  /telemetry/spans?flux_id=&rack=&gear=&since=&until=&limit=    (of a fluxID: oldest first)
    GET  /telemetry/traces/{trace_id}?limit=                   the spans of one trace, oldest first
    POST /telemetry/query   {"sql": "SELECT …", "limit": N}     one read-only statement
    GET  /telemetry/status                                      the hub's own health

Every row comes from one query path over the live tables and the Parquet archive. `since` and
`until` are ISO-8601 times (UTC when they have no offset) or relative to now (`15m`, `2h`, `1d`).
A time or a trace id spelled wrong is 400 `invalid_parameter` naming the parameter (like a bad
reference); a SQL text that is not one read-only statement, or that DuckDB rejects, is 400
`invalid_query` with DuckDB's message (also when it runs out of `[telemetry] query_memory_limit`);
a query still running after `[telemetry] query_timeout` is interrupted and answered 400
`query_timeout`; with `max_concurrent_queries` already running, any query (canned ones too) is
503 `too_many_queries`; a mixer without a telemetry hub (`[telemetry] enabled = false`) answers
503. The query is a POST only because its text is a body: it changes nothing, and
the read-only token may send it (`reads_only`). The gRPC `TelemetryService` shares the checks.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta

from mixer.api.errors import (
    Detail,
    InvalidParameterError,
    ServiceUnavailableError,
    TraceNotFoundError,
)
from mixer.api.http.context import ApiContext
from mixer.api.http.operation import Call, Operation, Reply
from mixer.api.http.telemetry_models import (
    LogList,
    LogQuery,
    MetricList,
    MetricQuery,
    SpanList,
    SpanQuery,
    SqlRequest,
    SqlResult,
    TelemetryStatus,
    Trace,
    TraceQuery,
)
from mixer.telemetry import TelemetryError, TelemetryHub, TelemetryQuery

TAG = "telemetry"
DISABLED = (
    "telemetry is not available: this mixer runs without its telemetry hub "
    "([telemetry] enabled = false); enable it, or query the OTLP collector the racks export to"
)
NOT_RUNNING = "the telemetry hub is not running (the mixer is starting or stopping); retry"
TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")
RELATIVE = re.compile(r"(\d{1,9})\s*([smhdw])")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def telemetry_of(ctx: ApiContext) -> TelemetryQuery:
    """The hub's queries; ServiceUnavailableError (503 / UNAVAILABLE) when there is no hub."""
    if ctx.telemetry is None:
        raise ServiceUnavailableError(DISABLED)
    try:
        return ctx.telemetry.query
    except TelemetryError:
        raise ServiceUnavailableError(NOT_RUNNING) from None


def hub_of(ctx: ApiContext) -> TelemetryHub:
    """The running hub; ServiceUnavailableError (503 / UNAVAILABLE) when there is none."""
    if ctx.telemetry is None:
        raise ServiceUnavailableError(DISABLED)
    if not ctx.telemetry.running:
        raise ServiceUnavailableError(NOT_RUNNING)
    return ctx.telemetry


def moment(text: str | None, where: str, now: datetime | None = None) -> datetime | None:
    """`text` as an aware time: ISO-8601 (naive = UTC) or `<n><s|m|h|d|w>` before `now`."""
    if text is None:
        return None
    value = text.strip()
    relative = RELATIVE.fullmatch(value.lower())
    try:
        if relative is not None:
            seconds = int(relative[1]) * UNIT_SECONDS[relative[2]]
            return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
        parsed = datetime.fromisoformat(value)
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):  # not a time, or out of datetime's range
        pass
    expected = "an ISO-8601 time (2024-05-01T12:00:00Z), or a time before now: 15m, 2h, 1d"
    raise InvalidParameterError(
        f"{where.rsplit('.', 1)[-1]} {text!r} is not a time",
        [Detail(where, f"expected {expected}")],
    )


def trace_id(text: str, where: str) -> str:
    """`text` as a trace id (32 hex digits, lowercased); InvalidParameterError otherwise."""
    value = text.strip()
    if TRACE_ID.fullmatch(value) is None:
        raise InvalidParameterError(
            f"{where.rsplit('.', 1)[-1]} {text!r} is not a trace id",
            [Detail(where, "expected 32 hex digits (a W3C trace id)")],
        )
    return value.lower()


def window(
    since: str | None, until: str | None, root: str = "query"
) -> tuple[datetime | None, datetime | None]:
    now = datetime.now(UTC)
    return moment(since, f"{root}.since", now), moment(until, f"{root}.until", now)


def no_trace(trace: str) -> TraceNotFoundError:
    return TraceNotFoundError(
        f"no span of trace {trace} is stored: it has not arrived yet (racks export in batches), "
        "or it is older than [telemetry] retention_hours"
    )


# --- handlers -----------------------------------------------------------------------------------


async def metrics(ctx: ApiContext, call: Call) -> Reply:
    query, q = telemetry_of(ctx), call.query_as(MetricQuery)
    since, until = window(q.since, q.until)
    rows = await query.metrics(rack=q.rack, gear=q.gear, name=q.name, since=since, until=until,
                               limit=q.limit)  # fmt: skip
    return Reply(200, {"points": rows})


async def logs(ctx: ApiContext, call: Call) -> Reply:
    query, q = telemetry_of(ctx), call.query_as(LogQuery)
    trace = trace_id(q.trace_id, "query.trace_id") if q.trace_id is not None else None
    since, until = window(q.since, q.until)
    rows = await query.logs(rack=q.rack, gear=q.gear, trace_id=trace, min_severity=q.min_severity,
                            since=since, until=until, limit=q.limit)  # fmt: skip
    return Reply(200, {"logs": rows})


async def spans(ctx: ApiContext, call: Call) -> Reply:
    query, q = telemetry_of(ctx), call.query_as(SpanQuery)
    since, until = window(q.since, q.until)
    rows = await query.spans(flux_id=q.flux_id, rack=q.rack, gear=q.gear, since=since,
                             until=until, limit=q.limit)  # fmt: skip
    return Reply(200, {"spans": rows})


async def trace(ctx: ApiContext, call: Call) -> Reply:
    query = telemetry_of(ctx)
    trace = trace_id(call.path["trace_id"], "path.trace_id")
    rows = await query.spans(trace_id=trace, limit=call.query_as(TraceQuery).limit)
    if not rows:
        raise no_trace(trace)
    return Reply(200, {"trace_id": trace, "spans": rows})


async def sql(ctx: ApiContext, call: Call) -> Reply:
    query, body = telemetry_of(ctx), call.body_as(SqlRequest)
    rows = await query.sql(body.sql, body.limit)  # TelemetryQueryError → 400 invalid_query
    columns = list(rows[0]) if rows else []
    return Reply(200, {"columns": columns, "rows": rows, "truncated": len(rows) >= body.limit})


async def status(ctx: ApiContext, call: Call) -> Reply:
    answer = await hub_of(ctx).status()
    return Reply(200, TelemetryStatus.model_validate(dataclasses.asdict(answer)))


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="GET",
        path="/telemetry/metrics",
        operation_id="queryMetrics",
        summary="Metric data points, newest first, by rack, gear, name and time.",
        tag=TAG,
        handler=metrics,
        responses={200: MetricList},
        errors=(400, 503),
        query=MetricQuery,
    ),
    Operation(
        method="GET",
        path="/telemetry/logs",
        operation_id="queryLogs",
        summary="Log records, newest first, by rack, gear, trace, severity and time.",
        tag=TAG,
        handler=logs,
        responses={200: LogList},
        errors=(400, 503),
        query=LogQuery,
    ),
    Operation(
        method="GET",
        path="/telemetry/spans",
        operation_id="querySpans",
        summary="Spans by fluxID (oldest first), rack, gear and time (newest first).",
        tag=TAG,
        handler=spans,
        responses={200: SpanList},
        errors=(400, 503),
        query=SpanQuery,
    ),
    Operation(
        method="GET",
        path="/telemetry/traces/{trace_id}",
        operation_id="getTrace",
        summary="Every span of one trace (32 hex digits), oldest first.",
        tag=TAG,
        handler=trace,
        responses={200: Trace},
        errors=(400, 404, 503),
        query=TraceQuery,
    ),
    Operation(
        method="POST",
        path="/telemetry/query",
        operation_id="queryTelemetry",
        summary="Run one read-only SQL statement over spans, metric_points and logs.",
        tag=TAG,
        handler=sql,
        responses={200: SqlResult},
        errors=(400, 503),
        body=SqlRequest,
        reads_only=True,
        description=(
            "The tables are the live rows and the Parquet archive as one. Only one SELECT (or "
            "WITH … SELECT, FROM …, DESCRIBE, SUMMARIZE) is run, in a read-only transaction; "
            "anything else, or a statement DuckDB rejects (out of memory included), is 400 "
            "`invalid_query` with DuckDB's message; a query that runs past `[telemetry] "
            "query_timeout` is stopped and answered 400 `query_timeout`; when "
            "`max_concurrent_queries` queries are running it is refused with 503 "
            "`too_many_queries` (retry shortly). A read: the read-only token may send it."
        ),
    ),
    Operation(
        method="GET",
        path="/telemetry/status",
        operation_id="getTelemetryStatus",
        summary="The telemetry hub's own health: rows received, refused, written, dropped; "
        "archive, forwarding, queries.",
        tag=TAG,
        handler=status,
        responses={200: TelemetryStatus},
        errors=(503,),
        description=(
            "Counters since the mixer started: `intake.refused_requests` grows when the write "
            "queue is full (senders get 503 and retry), `writer.failed_rows` when rows are "
            "dropped, `forwarding.dropped` when the upstream cannot keep up. The live rows are "
            "counted like a query (`live_rows` null, with `live_rows_error`, when every query "
            "slot is taken); the archive directory is scanned. 503 when the hub is disabled or "
            "not running."
        ),
    ),
)
