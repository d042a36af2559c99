"""`fluxrig.v1.TelemetryService`: the REST telemetry routes over gRPC — the same rows, checks and
errors (`mixer.api.http.telemetry`): QueryMetrics, QueryLogs, QuerySpans, GetTrace, QuerySql,
and GetStatus (the hub's own health, `GET /telemetry/status`).

Rows become typed messages (`Span`, `MetricPoint`, `LogRecord`): SQL NULL is the field's zero
value ("" or 0) or an unset optional; JSON columns are Struct / ListValue; NaN and ±infinity
(strings in the JSON rows) are doubles again. QuerySql rows are Structs (numbers are doubles).
Every RPC only reads: their names (`Query*`, `Get*`) give the read-only token access. The
query bounds answer like REST: a query stopped after `[telemetry] query_timeout` is
DEADLINE_EXCEEDED (`query_timeout`), `max_concurrent_queries` already running UNAVAILABLE
(`too_many_queries`), out of memory INVALID_ARGUMENT (`invalid_query`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from mixer.api.errors import Detail, InvalidParameterError
from mixer.api.grpc.convert import timestamp
from mixer.api.grpc.proto import telemetry_pb2
from mixer.api.grpc.status import answers
from mixer.api.http.context import ApiContext
from mixer.api.http.telemetry import hub_of, no_trace, telemetry_of, trace_id
from mixer.api.http.telemetry_models import (
    DEFAULT_ROWS,
    DEFAULT_SQL_ROWS,
    DEFAULT_TRACE_SPANS,
    MAX_ROWS,
    MAX_SQL_CHARS,
)
from mixer.telemetry.query import Record
from mixer.telemetry.status import HubStatus

SPAN_TEXT = ("trace_id", "span_id", "parent_span_id", "name", "kind", "status_code",
             "status_message", "service_name", "rack", "entity_id", "scenario", "scenario_hash",
             "gear", "flux_id")  # fmt: skip
POINT_TEXT = ("name", "kind", "unit", "rack", "gear", "wire", "scenario", "service_name",
              "temporality")  # fmt: skip
LOG_TEXT = ("severity_text", "body", "trace_id", "span_id", "rack", "gear", "service_name")
MAX_SEVERITY = 24


def _invalid(field: str, message: str) -> InvalidParameterError:
    return InvalidParameterError(f"invalid {field}: {message}", [Detail(field, message)])


def _limit(value: int, default: int) -> int:
    if value > MAX_ROWS:
        raise _invalid("limit", f"at most {MAX_ROWS} (0 = the default, {default}); got {value}")
    return value or default


def _time(request: Any, field: str) -> datetime | None:
    if not request.HasField(field):
        return None
    try:
        moment: datetime = getattr(request, field).ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise _invalid(field, str(exc)) from None
    return moment


def _severity(value: int) -> int | None:
    if not 0 <= value <= MAX_SEVERITY:
        raise _invalid("min_severity", f"an OTLP severity number 1..{MAX_SEVERITY}, or 0 = any")
    return value or None


# --- rows → messages ----------------------------------------------------------------------------


def _texts(row: Record, fields: Iterable[str]) -> dict[str, str]:
    return {f: row[f] or "" for f in fields}


def _fill(msg: Any, row: Record, times: Iterable[str] = (), objects: Iterable[str] = (),
          lists: Iterable[str] = ()) -> None:  # fmt: skip
    """Copy the row's time, JSON-object and JSON-list columns that are not NULL into `msg`."""
    for field in times:
        if row[field] is not None:
            getattr(msg, field).FromDatetime(datetime.fromisoformat(row[field]))
    for field in objects:
        if row[field] is not None:
            getattr(msg, field).update(row[field])
    for field in lists:
        if row[field] is not None:
            getattr(msg, field).extend(row[field])


def span(row: Record) -> telemetry_pb2.Span:
    msg = telemetry_pb2.Span(duration_us=row["duration_us"] or 0, **_texts(row, SPAN_TEXT))
    _fill(msg, row, ("ts_start", "ts_end"), ("attributes", "resource"), ("events", "links"))
    return msg


def point(row: Record) -> telemetry_pb2.MetricPoint:
    msg = telemetry_pb2.MetricPoint(
        bucket_bounds=[float(b) for b in row["bucket_bounds"] or ()],
        bucket_counts=row["bucket_counts"] or (),
        **_texts(row, POINT_TEXT),
    )
    for field in ("value", "sum", "min", "max"):
        if row[field] is not None:
            setattr(msg, field, float(row[field]))  # "NaN", "Infinity" parse too
    for field in ("count", "monotonic"):
        if row[field] is not None:
            setattr(msg, field, row[field])
    _fill(msg, row, ("ts", "start_ts"), ("attributes", "resource"), ("quantiles",))
    return msg


def log_record(row: Record) -> telemetry_pb2.LogRecord:
    msg = telemetry_pb2.LogRecord(
        severity_number=row["severity_number"] or 0, **_texts(row, LOG_TEXT)
    )
    _fill(msg, row, ("ts",), ("attributes", "resource"))
    return msg


def status(value: HubStatus) -> telemetry_pb2.TelemetryStatus:
    """The hub's status as a message: None becomes unset (ports 0, no last error, ...)."""
    receivers, intake, writer = value.receivers, value.intake, value.writer
    archive, queries = value.archive, value.queries
    msg = telemetry_pb2.TelemetryStatus(
        enabled=value.enabled,
        running=value.running,
        receivers=telemetry_pb2.TelemetryReceivers(host=receivers.host,
                                                   grpc_port=receivers.grpc_port or 0,
                                                   http_port=receivers.http_port or 0),
        intake=telemetry_pb2.TelemetryIntake(**dataclasses.asdict(intake)),
        writer=telemetry_pb2.TelemetryWriter(
            written_rows=writer.written_rows, failed_rows=writer.failed_rows,
            retries=writer.retries, reopens=writer.reopens, checkpoints=writer.checkpoints,
        ),
        archive=telemetry_pb2.TelemetryArchive(retention_hours=archive.retention_hours,
                                               partitions=archive.partitions, bytes=archive.bytes),
        queries=telemetry_pb2.TelemetryQueries(busy=queries.busy, stopping=queries.stopping,
                                               max_concurrent=queries.max_concurrent,
                                               timeout_seconds=queries.timeout),
        live_rows=value.live_rows or {},
        live_rows_error=value.live_rows_error or "",
        at=timestamp(value.at),
    )  # fmt: skip
    if writer.last_error is not None:
        msg.writer.last_error.message = writer.last_error.message
        msg.writer.last_error.at.CopyFrom(timestamp(writer.last_error.at))
    for field in ("oldest_hour", "newest_hour"):
        moment = getattr(archive, field)
        if moment is not None:
            getattr(msg.archive, field).CopyFrom(timestamp(moment))
    if value.forwarding is not None:
        msg.forwarding.CopyFrom(
            telemetry_pb2.TelemetryForwarding(**dataclasses.asdict(value.forwarding))
        )
    return msg


# --- the service --------------------------------------------------------------------------------


class TelemetryServicer:
    """Registered with `telemetry_pb2_grpc.add_TelemetryServiceServicer_to_server`."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    @answers
    async def QueryMetrics(
        self, request: telemetry_pb2.QueryMetricsRequest, context: Any
    ) -> telemetry_pb2.QueryMetricsResponse:
        query = telemetry_of(self._ctx)
        rows = await query.metrics(
            rack=request.rack or None,
            gear=request.gear or None,
            name=request.name or None,
            since=_time(request, "since"),
            until=_time(request, "until"),
            limit=_limit(request.limit, DEFAULT_ROWS),
        )
        return telemetry_pb2.QueryMetricsResponse(points=[point(r) for r in rows])

    @answers
    async def QueryLogs(
        self, request: telemetry_pb2.QueryLogsRequest, context: Any
    ) -> telemetry_pb2.QueryLogsResponse:
        query = telemetry_of(self._ctx)
        rows = await query.logs(
            rack=request.rack or None,
            gear=request.gear or None,
            trace_id=trace_id(request.trace_id, "trace_id") if request.trace_id else None,
            min_severity=_severity(request.min_severity),
            since=_time(request, "since"),
            until=_time(request, "until"),
            limit=_limit(request.limit, DEFAULT_ROWS),
        )
        return telemetry_pb2.QueryLogsResponse(logs=[log_record(r) for r in rows])

    @answers
    async def QuerySpans(
        self, request: telemetry_pb2.QuerySpansRequest, context: Any
    ) -> telemetry_pb2.QuerySpansResponse:
        query = telemetry_of(self._ctx)
        rows = await query.spans(
            flux_id=request.flux_id or None,
            rack=request.rack or None,
            gear=request.gear or None,
            since=_time(request, "since"),
            until=_time(request, "until"),
            limit=_limit(request.limit, DEFAULT_ROWS),
        )
        return telemetry_pb2.QuerySpansResponse(spans=[span(r) for r in rows])

    @answers
    async def GetTrace(
        self, request: telemetry_pb2.GetTraceRequest, context: Any
    ) -> telemetry_pb2.Trace:
        query = telemetry_of(self._ctx)
        trace = trace_id(request.trace_id, "trace_id")
        rows = await query.spans(trace_id=trace, limit=_limit(request.limit, DEFAULT_TRACE_SPANS))
        if not rows:
            raise no_trace(trace)
        return telemetry_pb2.Trace(trace_id=trace, spans=[span(r) for r in rows])

    @answers
    async def QuerySql(
        self, request: telemetry_pb2.QuerySqlRequest, context: Any
    ) -> telemetry_pb2.QuerySqlResponse:
        query = telemetry_of(self._ctx)
        if len(request.sql) > MAX_SQL_CHARS:
            raise _invalid("sql", f"at most {MAX_SQL_CHARS} characters; got {len(request.sql)}")
        limit = _limit(request.limit, DEFAULT_SQL_ROWS)
        rows = await query.sql(request.sql, limit)  # TelemetryQueryError → INVALID_ARGUMENT, …
        answer = telemetry_pb2.QuerySqlResponse(
            columns=list(rows[0]) if rows else [], truncated=len(rows) >= limit
        )
        for row in rows:
            answer.rows.add().update(row)
        return answer

    @answers
    async def GetStatus(
        self, request: telemetry_pb2.GetStatusRequest, context: Any
    ) -> telemetry_pb2.TelemetryStatus:
        return status(await hub_of(self._ctx).status())
