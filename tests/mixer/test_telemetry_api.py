"""The telemetry query surfaces of the assembled mixer, over real HTTP and real gRPC: the rows the
real OpenTelemetry SDK exported to its OTLP receiver, filtered; roles; refusals; the OpenAPI
document, fuzzed by schemathesis against a live API over a real telemetry hub."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import schemathesis
from aiohttp import web
from fluxrig.v1 import telemetry_pb2, telemetry_pb2_grpc
from google.protobuf import timestamp_pb2
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mixer.api.credentials import is_read_only_rpc
from mixer.api.errors import InvalidParameterError
from mixer.api.http import API_PREFIX, ApiContext, build_app
from mixer.api.http.system import DOCUMENT_KEY
from mixer.api.http.telemetry import OPERATIONS, moment
from mixer.api.http.telemetry_models import (
    LogList,
    LogRecord,
    MetricList,
    MetricPoint,
    Span,
    SpanList,
    SqlResult,
    Trace,
)
from mixer.app import Mixer
from mixer.telemetry import TelemetryHub
from mixer.telemetry.schema import LOGS, METRIC_POINTS, SPANS
from tests.mixer.documents import TOKEN
from tests.mixer.telemetry.conftest import settings as hub_settings
from tests.mixer.telemetry_feed import (
    FLUX_A,
    FLUX_B,
    READ,
    Fed,
    clean_environment,
    fed_mixer,
    feed,
)
from tests.mixer.telemetry_feed import settings as mixer_settings

V1 = f"{API_PREFIX}/telemetry"
HOSTILE_SQL = [
    "DELETE FROM spans",
    "DROP TABLE logs",
    "ATTACH 'elsewhere.duckdb' AS other",
    "SELECT 1; SELECT 2",
    "SELECT 1; DELETE FROM spans",
    "INSTALL httpfs",
    "COPY spans TO 'stolen.csv'",
    "SELECT * FROM read_csv('/etc/passwd')",
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_environment(monkeypatch)


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[tuple[Mixer, Fed]]:
    async with fed_mixer(tmp_path) as started:
        yield started


class Rest:
    """JSON calls to a mixer's REST API; (status, body)."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def __call__(
        self,
        method: str,
        path: str,
        *,
        token: str | None = TOKEN,
        params: dict[str, str] | None = None,
        body: Any = None,
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with self.session.request(
            method, f"{self.base}{V1}{path}", params=params, json=body, headers=headers
        ) as resp:
            return resp.status, await resp.json()

    async def ok(self, path: str, **params: str) -> Any:
        status, body = await self("GET", path, params=params)
        assert status == 200, body
        return body

    async def sql(self, sql: str, limit: int | None = None, token: str = TOKEN) -> Any:
        body: dict[str, Any] = {"sql": sql} if limit is None else {"sql": sql, "limit": limit}
        status, answer = await self("POST", "/query", body=body, token=token)
        assert status == 200, answer
        return answer


@pytest.fixture
async def rest(fed: tuple[Mixer, Fed]) -> AsyncIterator[Rest]:
    mixer, _ = fed
    assert mixer.api_url is not None
    async with aiohttp.ClientSession() as session:
        yield Rest(session, mixer.api_url)


def names(rows: list[dict[str, Any]]) -> list[str]:
    return [r["name"] for r in rows]


def error_of(status: int, body: Any, expected: int, code: str) -> dict[str, Any]:
    assert status == expected, body
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, error
    return error


# --- REST: the rows, filtered -------------------------------------------------------------------


async def test_spans_and_traces_over_rest(rest: Rest, fed: tuple[Mixer, Fed]) -> None:
    _, ids = fed
    spans = SpanList.model_validate(await rest.ok("/spans", flux_id=FLUX_A)).model_dump()["spans"]
    assert names(spans) == ["decode", "route"]  # of one fluxMsg: oldest first
    assert {s["trace_id"] for s in spans} == {ids.trace_a}
    assert names((await rest.ok("/spans", rack="edge-2"))["spans"]) == ["decode", "pos-in"]
    decode = (await rest.ok("/spans", gear="decode"))["spans"]
    assert sorted(s["rack"] for s in decode) == ["edge-1", "edge-2"]
    assert len((await rest.ok("/spans", limit="1"))["spans"]) == 1

    trace = await rest.ok(f"/traces/{ids.trace_a.upper()}")  # any case; answered lowercase
    Trace.model_validate(trace)  # the rows match the schema the document declares
    assert trace["trace_id"] == ids.trace_a
    spans = trace["spans"]
    assert names(spans) == ["pos-in", "decode", "route", "audit"]  # oldest first
    by_name = {s["name"]: s for s in spans}
    assert by_name["pos-in"]["parent_span_id"] is None
    assert by_name["decode"]["parent_span_id"] == by_name["pos-in"]["span_id"]
    assert by_name["route"]["parent_span_id"] == by_name["decode"]["span_id"]
    assert by_name["audit"]["parent_span_id"] == by_name["pos-in"]["span_id"]
    assert (by_name["route"]["gear"], by_name["route"]["flux_id"]) == ("route", FLUX_A)
    assert by_name["decode"]["duration_us"] > 0
    assert by_name["decode"]["resource"]["fluxrig.rack"] == "edge-1"
    other = await rest.ok(f"/traces/{ids.trace_b}")
    assert [(s["name"], s["flux_id"]) for s in other["spans"]] == [("pos-in", FLUX_B),
                                                                   ("decode", FLUX_B)]  # fmt: skip


async def test_metrics_and_logs_over_rest(rest: Rest, fed: tuple[Mixer, Fed]) -> None:
    _, ids = fed
    messages = (await rest.ok("/metrics", name="fluxrig.gear.messages"))["points"]
    MetricList.model_validate(await rest.ok("/metrics"))
    LogList.model_validate(await rest.ok("/logs"))
    assert sorted((p["rack"], p["value"]) for p in messages) == [("edge-1", 3.0), ("edge-2", 5.0)]
    edge2 = (await rest.ok("/metrics", rack="edge-2"))["points"]
    assert sorted(names(edge2)) == ["fluxrig.gear.errors", "fluxrig.gear.messages"]
    (latency,) = (
        await rest.ok("/metrics", rack="edge-1", gear="decode", name="fluxrig.gear.latency")
    )["points"]
    assert (latency["kind"], latency["count"], latency["sum"]) == ("histogram", 3, 130.0)
    assert (latency["min"], latency["max"]) == (3.0, 120.0)
    assert (await rest.ok("/metrics", gear="pos-in"))["points"][0]["name"] == "fluxrig.gear.errors"

    (error,) = (await rest.ok("/logs", min_severity="17"))["logs"]
    assert (error["body"], error["severity_number"], error["gear"]) == ("field 39 missing", 17,
                                                                        "decode")  # fmt: skip
    assert error["trace_id"] == ids.trace_a
    in_trace = (await rest.ok("/logs", trace_id=ids.trace_a))["logs"]
    assert sorted(r["body"] for r in in_trace) == ["field 39 missing", "routed to visa"]
    assert [r["body"] for r in (await rest.ok("/logs", rack="edge-2"))["logs"]] == ["slow peer"]
    warn = (await rest.ok("/logs", min_severity="13"))["logs"]
    assert sorted(r["body"] for r in warn) == ["field 39 missing", "slow peer"]


async def test_since_and_until_filter_by_time(rest: Rest) -> None:
    spans = 6  # started a minute ago (metric points and log records are stamped now)
    assert len((await rest.ok("/spans", since="1h"))["spans"]) == spans
    assert len((await rest.ok("/spans", since="2 m"))["spans"]) == spans
    assert (await rest.ok("/spans", since="10s"))["spans"] == []
    assert (await rest.ok("/spans", until="1h"))["spans"] == []
    assert len((await rest.ok("/spans", until="10s"))["spans"]) == spans
    assert (await rest.ok("/spans", since="1h", until="2h"))["spans"] == []
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert (await rest.ok("/metrics", since=future))["points"] == []
    assert len((await rest.ok("/metrics", until=future))["points"]) == 4
    naive = (datetime.now(UTC) - timedelta(hours=1)).replace(tzinfo=None).isoformat()
    assert len((await rest.ok("/logs", since=naive))["logs"]) == 3  # naive: UTC
    assert (await rest.ok("/logs", until="2000-01-01T00:00:00Z"))["logs"] == []


async def test_read_only_sql_over_rest(rest: Rest) -> None:
    text = "SELECT gear, count(*) AS n FROM spans GROUP BY gear ORDER BY gear"
    answer = await rest.sql(text)
    assert answer == {
        "columns": ["gear", "n"],
        "rows": [{"gear": "audit", "n": 1}, {"gear": "decode", "n": 2},
                 {"gear": "pos-in", "n": 2}, {"gear": "route", "n": 1}],
        "truncated": False,
    }  # fmt: skip
    SqlResult.model_validate(answer)
    limited = await rest.sql(text, limit=2)
    assert (len(limited["rows"]), limited["truncated"]) == (2, True)
    joined = await rest.sql(
        "SELECT l.body, s.name FROM logs l JOIN spans s ON l.span_id = s.span_id ORDER BY l.body"
    )
    assert joined["rows"] == [{"body": "field 39 missing", "name": "decode"},
                              {"body": "routed to visa", "name": "route"}]  # fmt: skip
    assert (await rest.sql("SELECT 1 AS one WHERE false")) == {
        "columns": [], "rows": [], "truncated": False,
    }  # fmt: skip


# --- REST: roles and refusals -------------------------------------------------------------------


async def test_the_read_token_may_query_and_no_token_may_not(rest: Rest) -> None:
    for path in ("/metrics", "/logs", "/spans"):
        status, body = await rest("GET", path, token=READ)
        assert status == 200, body
    answer = await rest.sql("SELECT count(*) AS n FROM metric_points", token=READ)
    assert answer["rows"] == [{"n": 4}]  # a POST, but a read: the read token may send it
    for method, path, body in (
        ("GET", "/metrics", None),
        ("GET", "/logs", None),
        ("GET", "/spans", None),
        ("GET", f"/traces/{'ab' * 16}", None),
        ("POST", "/query", {"sql": "SELECT 1"}),
    ):
        for token in (None, "not-a-token-of-this-mixer"):
            status, answer = await rest(method, path, token=token, body=body)
            error_of(status, answer, 401, "unauthenticated")


async def test_bad_parameters_are_400_naming_them(rest: Rest) -> None:
    for param, value in (("since", "yesterday"), ("until", "15x"), ("since", "99999999999d")):
        status, body = await rest("GET", "/metrics", params={param: value})
        error = error_of(status, body, 400, "invalid_parameter")
        assert error["message"].startswith(param)
        assert [d["path"] for d in error["details"]] == [f"query.{param}"]
    status, body = await rest("GET", "/logs", params={"trace_id": "not-a-trace"})
    error = error_of(status, body, 400, "invalid_parameter")
    assert error["details"][0]["path"] == "query.trace_id"
    status, body = await rest("GET", "/traces/12345")
    error = error_of(status, body, 400, "invalid_parameter")
    assert error["details"][0]["path"] == "path.trace_id"
    status, body = await rest("GET", f"/traces/{'ab' * 16}")
    assert "ab" * 16 in error_of(status, body, 404, "trace_not_found")["message"]
    status, body = await rest("GET", "/spans", params={"limit": "0"})
    error = error_of(status, body, 422, "invalid_request")  # a typed parameter: as every route
    assert error["details"][0]["path"] == "query.limit"


async def test_sql_that_is_not_one_read_only_statement_is_refused(rest: Rest) -> None:
    before = (await rest.sql("SELECT count(*) AS n FROM spans"))["rows"]
    for text in HOSTILE_SQL:
        status, body = await rest("POST", "/query", body={"sql": text})
        error = error_of(status, body, 400, "invalid_query")
        assert error["message"], text
    status, body = await rest("POST", "/query", body={"sql": "SELEC gear FROM spans"})
    assert "syntax error" in error_of(status, body, 400, "invalid_query")["message"]
    status, body = await rest("POST", "/query", body={"sql": "SELECT nope FROM spans"})
    assert "nope" in error_of(status, body, 400, "invalid_query")["message"]  # DuckDB's message
    assert (await rest.sql("SELECT count(*) AS n FROM spans"))["rows"] == before == [{"n": 6}]


async def test_disabled_telemetry_answers_503_over_rest_and_grpc(tmp_path: Path) -> None:
    async with Mixer(mixer_settings(tmp_path / "m", telemetry=False)) as mixer:
        assert mixer.telemetry is None
        assert mixer.api_url is not None
        assert mixer.grpc_target is not None
        async with aiohttp.ClientSession() as session:
            rest = Rest(session, mixer.api_url)
            for method, path, body in (("GET", "/metrics", None), ("GET", "/logs", None),
                                       ("GET", f"/traces/{'ab' * 16}", None),
                                       ("POST", "/query", {"sql": "SELECT 1"})):  # fmt: skip
                status, answer = await rest(method, path, body=body, token=READ)
                error = error_of(status, answer, 503, "unavailable")
                assert "[telemetry] enabled = false" in error["message"]
        async with grpc.aio.insecure_channel(mixer.grpc_target) as channel:
            stub = telemetry_pb2_grpc.TelemetryServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.QueryMetrics(telemetry_pb2.QueryMetricsRequest(), metadata=bearer(READ))
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "[telemetry] enabled = false" in (refused.value.details() or "")


# --- gRPC -----------------------------------------------------------------------------------------


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)
    return ts


@pytest.fixture
async def stub(fed: tuple[Mixer, Fed]) -> AsyncIterator[telemetry_pb2_grpc.TelemetryServiceStub]:
    mixer, _ = fed
    assert mixer.grpc_target is not None
    async with grpc.aio.insecure_channel(mixer.grpc_target) as channel:
        yield telemetry_pb2_grpc.TelemetryServiceStub(channel)


async def test_grpc_answers_the_same_rows(
    stub: telemetry_pb2_grpc.TelemetryServiceStub, rest: Rest, fed: tuple[Mixer, Fed]
) -> None:
    _, ids = fed
    read = bearer(READ)  # every RPC of the service only reads
    trace = await stub.GetTrace(telemetry_pb2.GetTraceRequest(trace_id=ids.trace_a), metadata=read)
    over_rest = (await rest.ok(f"/traces/{ids.trace_a}"))["spans"]
    assert [s.span_id for s in trace.spans] == [s["span_id"] for s in over_rest]
    assert [s.parent_span_id for s in trace.spans] == [s["parent_span_id"] or ""
                                                       for s in over_rest]  # fmt: skip
    decode = trace.spans[1]
    assert (decode.gear, decode.flux_id, decode.rack) == ("decode", FLUX_A, "edge-1")
    assert decode.attributes["fluxrig.gear"] == "decode"
    assert decode.ts_start.ToDatetime(tzinfo=UTC) == datetime.fromisoformat(
        over_rest[1]["ts_start"]
    )

    spans = await stub.QuerySpans(telemetry_pb2.QuerySpansRequest(flux_id=FLUX_B), metadata=read)
    assert [(s.name, s.trace_id) for s in spans.spans] == [("pos-in", ids.trace_b),
                                                          ("decode", ids.trace_b)]  # fmt: skip

    points = await stub.QueryMetrics(
        telemetry_pb2.QueryMetricsRequest(rack="edge-1", name="fluxrig.gear.latency"), metadata=read
    )
    (latency,) = points.points
    assert (latency.kind, latency.count, latency.sum, latency.min, latency.max) == (
        "histogram", 3, 130.0, 3.0, 120.0)  # fmt: skip
    assert sum(latency.bucket_counts) == 3
    assert len(latency.bucket_counts) == len(latency.bucket_bounds) + 1
    assert not latency.HasField("value")
    messages = await stub.QueryMetrics(
        telemetry_pb2.QueryMetricsRequest(name="fluxrig.gear.messages"), metadata=read
    )
    assert sorted((p.rack, p.value, p.monotonic) for p in messages.points) == [
        ("edge-1", 3.0, True), ("edge-2", 5.0, True)]  # fmt: skip

    logs = await stub.QueryLogs(
        telemetry_pb2.QueryLogsRequest(trace_id=ids.trace_a, min_severity=17), metadata=read
    )
    assert [(r.body, r.severity_number, r.trace_id) for r in logs.logs] == [
        ("field 39 missing", 17, ids.trace_a)]  # fmt: skip

    hour_ago = timestamp(datetime.now(UTC) - timedelta(hours=1))
    tomorrow = timestamp(datetime.now(UTC) + timedelta(days=1))
    window = telemetry_pb2.QueryLogsRequest(since=hour_ago, until=tomorrow)
    assert len((await stub.QueryLogs(window, metadata=read)).logs) == 3
    later = telemetry_pb2.QueryLogsRequest(since=tomorrow)
    assert list((await stub.QueryLogs(later, metadata=read)).logs) == []

    text = "SELECT gear, count(*) AS n FROM spans GROUP BY gear ORDER BY gear"
    sql = await stub.QuerySql(telemetry_pb2.QuerySqlRequest(sql=text, limit=3), metadata=read)
    assert list(sql.columns) == ["gear", "n"]
    assert [dict(r) for r in sql.rows] == [
        {"gear": "audit", "n": 1.0}, {"gear": "decode", "n": 2.0}, {"gear": "pos-in", "n": 2.0}
    ]  # fmt: skip
    assert sql.truncated


async def rpc_error(call: Any, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() is code, info.value.details()
    return info.value.details() or ""


async def test_grpc_refusals(stub: telemetry_pb2_grpc.TelemetryServiceStub) -> None:
    read = bearer(READ)
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    for text in HOSTILE_SQL:
        await rpc_error(stub.QuerySql(telemetry_pb2.QuerySqlRequest(sql=text), metadata=read),
                        invalid)  # fmt: skip
    details = await rpc_error(
        stub.QuerySql(telemetry_pb2.QuerySqlRequest(sql="SELECT nope FROM spans"), metadata=read),
        invalid,
    )
    assert "nope" in details
    details = await rpc_error(
        stub.GetTrace(telemetry_pb2.GetTraceRequest(trace_id="xyz"), metadata=read), invalid
    )
    assert "trace_id" in details
    await rpc_error(
        stub.GetTrace(telemetry_pb2.GetTraceRequest(trace_id="ab" * 16), metadata=read),
        grpc.StatusCode.NOT_FOUND,
    )
    details = await rpc_error(
        stub.QuerySpans(telemetry_pb2.QuerySpansRequest(limit=10_001), metadata=read), invalid
    )
    assert "limit" in details
    details = await rpc_error(
        stub.QueryLogs(telemetry_pb2.QueryLogsRequest(min_severity=25), metadata=read), invalid
    )
    assert "min_severity" in details
    await rpc_error(
        stub.QuerySpans(telemetry_pb2.QuerySpansRequest()), grpc.StatusCode.UNAUTHENTICATED
    )
    await rpc_error(
        stub.QuerySql(telemetry_pb2.QuerySqlRequest(sql="SELECT 1"), metadata=bearer("nope" * 5)),
        grpc.StatusCode.UNAUTHENTICATED,
    )


def test_the_telemetry_rpcs_are_read_only_for_the_roles() -> None:
    service = telemetry_pb2.DESCRIPTOR.services_by_name["TelemetryService"]
    for method in service.methods:
        assert is_read_only_rpc(f"/{service.full_name}/{method.name}"), method.name
    assert not is_read_only_rpc("/fluxrig.v1.RackService/AdoptRack")


# --- the contract ---------------------------------------------------------------------------------


def test_row_models_mirror_the_hub_tables() -> None:
    for model, table in ((Span, SPANS), (MetricPoint, METRIC_POINTS), (LogRecord, LOGS)):
        assert tuple(model.model_fields) == table.column_names, table.name
    for message, table in (
        (telemetry_pb2.Span, SPANS),
        (telemetry_pb2.MetricPoint, METRIC_POINTS),
        (telemetry_pb2.LogRecord, LOGS),
    ):
        assert tuple(f.name for f in message.DESCRIPTOR.fields) == table.column_names


def test_times_are_iso_8601_or_before_now() -> None:
    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert moment("15m", "query.since", now) == now - timedelta(minutes=15)
    assert moment(" 2H ", "query.since", now) == now - timedelta(hours=2)
    assert moment("1w", "query.since", now) == now - timedelta(days=7)
    assert moment("2025-06-01T10:00:00", "q.since") == datetime(2025, 6, 1, 10, tzinfo=UTC)
    assert moment("2025-06-01T12:00:00+02:00", "q.since") == datetime(2025, 6, 1, 10, tzinfo=UTC)
    assert moment("2025-06-01T10:00:00Z", "q.since") == datetime(2025, 6, 1, 10, tzinfo=UTC)
    assert moment(None, "q.since") is None
    for bad in ("", "soon", "-5m", "15", "1y", "0001-01-01T00:00:00+01:00", "999999999w"):
        with pytest.raises(InvalidParameterError) as info:
            moment(bad, "query.until", now)
        assert [d.path for d in info.value.details] == ["query.until"]


async def test_the_document_declares_the_telemetry_routes(ctx: ApiContext) -> None:
    app = build_app(dataclasses.replace(ctx, read_token=READ))
    paths = app[DOCUMENT_KEY]["paths"]
    for route in ("metrics", "logs", "spans", "traces/{trace_id}"):
        responses = paths[f"{V1}/{route}"]["get"]["responses"]
        assert {"200", "400", "401", "422", "503"} <= set(responses)
        assert "403" not in responses
    query = paths[f"{V1}/query"]["post"]
    assert {"200", "400", "401", "413", "422", "503"} <= set(query["responses"])
    assert "403" not in query["responses"]  # a read: the read-only token may send it
    params = {p["name"] for p in paths[f"{V1}/logs"]["get"]["parameters"]}
    assert params == {"rack", "gear", "trace_id", "min_severity", "since", "until", "limit"}
    assert "404" in paths[f"{V1}/traces/{{trace_id}}"]["get"]["responses"]


# --- schemathesis against a live API over a real hub --------------------------------------------


class LiveTelemetryApi:
    """The REST API with a started telemetry hub on 127.0.0.1:0, in a thread of its own (so the
    synchronous schemathesis client can call it), holding the fleet's telemetry."""

    def __init__(self, ctx: ApiContext, state: Path) -> None:
        self.ctx, self.state = ctx, state
        self.url = ""
        self.hub: TelemetryHub | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with TelemetryHub(hub_settings(), self.state) as hub:
            self.hub = hub
            runner = web.AppRunner(build_app(dataclasses.replace(self.ctx, telemetry=hub)))
            await runner.setup()
            try:
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                host, port = runner.addresses[0][:2]
                self.url = f"http://{host}:{port}"
                self._ready.set()
                await self._stop.wait()
            finally:
                await runner.cleanup()

    def __enter__(self) -> LiveTelemetryApi:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the API server did not start")
        assert self._loop is not None
        assert self.hub is not None
        asyncio.run_coroutine_threadsafe(feed(self.hub), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def live_api(ctx: ApiContext, tmp_path: Path) -> Iterator[LiveTelemetryApi]:
    with LiveTelemetryApi(ctx, tmp_path / "telemetry-state") as api:
        yield api


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_telemetry_routes_conform_to_the_document(
    live_api: LiveTelemetryApi, mode: GenerationMode
) -> None:
    """The telemetry operations, fuzzed over a hub holding rows: no 5xx, only documented
    statuses, every response (rows included) matching its schema."""
    schema = schemathesis.openapi.from_url(f"{live_api.url}{API_PREFIX}/openapi.json")
    ours = {f"{op.method} {op.url}" for op in OPERATIONS}
    operations = [
        r.ok() for r in schema.get_all_operations() if isinstance(r, Ok) and r.ok().label in ours
    ]
    assert {op.label for op in operations} == ours
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=25,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)

        check()
