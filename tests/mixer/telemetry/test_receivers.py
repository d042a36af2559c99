"""The OTLP receivers on hostile and unusual input: OTLP/JSON, gzip, malformed bodies, oversized
bodies, unknown content types, a full write queue — and the server still answers afterwards."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import grpc
import pytest
from google.rpc import status_pb2  # type: ignore[import-untyped, unused-ignore]
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from mixer.telemetry import TelemetryHub
from tests.mixer.telemetry.conftest import (
    JSON,
    PROTOBUF,
    logs_request,
    settings,
    spans_request,
    url,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TRACE_HEX = "5b8efff798038103d269b633813fc60c"
OTLP_JSON = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "fluxrig.rack", "value": {"stringValue": "r2"}}]},
            "scopeSpans": [
                {
                    "spans": [
                        {
                            "traceId": TRACE_HEX,
                            "spanId": "eee19b7ec3c1b174",
                            "parentSpanId": "eee19b7ec3c1b173",
                            "name": "json-span",
                            "kind": 2,
                            "startTimeUnixNano": "1544712660000000000",
                            "endTimeUnixNano": "1544712661000000000",
                            "attributes": [
                                {"key": "fluxrig.gear", "value": {"stringValue": "codec"}},
                                {"key": "n", "value": {"intValue": "7"}},
                            ],
                            "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
                        }
                    ]
                }
            ],
        }
    ]
}


def status_message(body: bytes) -> str:
    status = status_pb2.Status()
    status.ParseFromString(body)
    return str(status.message)


async def post(
    http: aiohttp.ClientSession, target: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    async with http.post(target, data=body, headers=headers) as response:
        return response.status, await response.read()


async def still_answers(hub: TelemetryHub, http: aiohttp.ClientSession) -> None:
    status, _ = await post(http, url(hub, "logs"), logs_request(NOW).SerializeToString(), PROTOBUF)
    assert status == 200


@pytest.fixture
async def stub(hub: TelemetryHub) -> AsyncIterator[trace_service_pb2_grpc.TraceServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{hub.grpc_port}") as channel:
        yield trace_service_pb2_grpc.TraceServiceStub(channel)


async def test_otlp_json_is_accepted_with_hex_ids(
    hub: TelemetryHub, http: aiohttp.ClientSession
) -> None:
    status, body = await post(http, url(hub, "traces"), json.dumps(OTLP_JSON).encode(), JSON)
    assert (status, json.loads(body)) == (200, {})
    await hub.flush()
    (span,) = await hub.query.spans(trace_id=TRACE_HEX.upper())
    assert (span["name"], span["kind"], span["rack"], span["gear"]) == ("json-span", "server",
                                                                        "r2", "codec")  # fmt: skip
    assert span["parent_span_id"] == "eee19b7ec3c1b173"
    assert (span["status_code"], span["status_message"]) == ("error", "boom")
    assert span["attributes"] == {"fluxrig.gear": "codec", "n": 7}
    assert span["ts_start"] == "2018-12-13T14:51:00+00:00"
    assert span["duration_us"] == 1_000_000


async def test_gzip_bodies_are_decompressed(hub: TelemetryHub, http: aiohttp.ClientSession) -> None:
    body = gzip.compress(spans_request(NOW, NOW).SerializeToString())
    status, _ = await post(http, url(hub, "traces"), body,
                           {**PROTOBUF, "Content-Encoding": "gzip"})  # fmt: skip
    assert status == 200
    body = gzip.compress(json.dumps(OTLP_JSON).encode())
    status, _ = await post(http, url(hub, "traces"), body, {**JSON, "Content-Encoding": "gzip"})
    assert status == 200
    await hub.flush()
    assert hub.written["spans"] == 3


@pytest.mark.parametrize(
    ("body", "headers", "status", "named"),
    [
        (b"\xff\xff\xff\xff", PROTOBUF, 400, "not a valid protobuf ExportTraceServiceRequest"),
        (b"{not json", JSON, 400, "is not JSON"),
        (b"[1, 2]", JSON, 400, "must be a JSON object, got list"),
        (b'{"resourceSpans": "nope"}', JSON, 400, "does not match OTLP"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', JSON, 400,
         "$.resourceSpans[0].scopeSpans[0].spans[0].traceId must be a hex string"),
        (b"plain bytes, not gzip", {**PROTOBUF, "Content-Encoding": "gzip"}, 400,
         "not valid gzip"),
        (gzip.compress(b"x" * 100)[:-12], {**PROTOBUF, "Content-Encoding": "gzip"}, 400,
         "truncated gzip"),
        (b"", {**PROTOBUF, "Content-Encoding": "br"}, 415, "content-encoding 'br'"),
        (b"hello", {"Content-Type": "text/plain"}, 415, "content type 'text/plain'"),
    ],
)  # fmt: skip
async def test_malformed_bodies_answer_an_error_naming_the_problem(
    hub: TelemetryHub,
    http: aiohttp.ClientSession,
    body: bytes,
    headers: dict[str, str],
    status: int,
    named: str,
) -> None:
    got, answer = await post(http, url(hub, "traces"), body, headers)
    assert got == status
    message = json.loads(answer)["message"] if headers is JSON else status_message(answer)
    assert named in message
    await still_answers(hub, http)
    await hub.flush()
    assert hub.written == {"spans": 0, "metric_points": 0, "logs": 1}  # only the good request


async def test_oversized_bodies_answer_413(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with TelemetryHub(settings(max_body_bytes=1024), tmp_path) as hub:
        target = url(hub, "traces")
        status, answer = await post(http, target, b"\x00" * 2000, PROTOBUF)  # Content-Length
        assert status == 413
        assert "declares 2000 bytes, over the limit of 1024 bytes" in status_message(answer)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"\x00" * 600

        async with http.post(target, data=chunks(), headers=PROTOBUF) as response:
            assert response.status == 413  # chunked: no Content-Length to refuse early

        bomb = gzip.compress(b"\x00" * 1_000_000)  # 1 KiB compressed, 1 MB inflated
        assert len(bomb) < 1024
        status, answer = await post(http, target, bomb, {**PROTOBUF, "Content-Encoding": "gzip"})
        assert status == 413
        assert "decompresses to more than the limit of 1024 bytes" in status_message(answer)
        await still_answers(hub, http)

        async with grpc.aio.insecure_channel(f"127.0.0.1:{hub.grpc_port}") as channel:
            big = spans_request(*[NOW] * 40)
            assert big.ByteSize() > 1024
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await trace_service_pb2_grpc.TraceServiceStub(channel).Export(big)
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_grpc_malformed_request_is_invalid_argument(
    hub: TelemetryHub,
    http: aiohttp.ClientSession,
    stub: trace_service_pb2_grpc.TraceServiceStub,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{hub.grpc_port}") as channel:
        raw = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await raw(b"\xff\xff\xff\xff")
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf ExportTraceServiceRequest" in (refused.value.details() or "")
    await stub.Export(spans_request(NOW))  # still serving
    await still_answers(hub, http)
    await hub.flush()
    assert hub.written["spans"] == 1


async def test_full_queue_answers_503_and_unavailable(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with TelemetryHub(settings(queue_rows=2, batch_rows=1), tmp_path) as hub:
        gate = threading.Event()
        blocked = hub.store.submit(lambda conn: gate.wait(30))  # the writer is busy
        try:
            target = url(hub, "traces")
            status, _ = await post(http, target, spans_request(NOW, NOW).SerializeToString(),
                                   PROTOBUF)  # fmt: skip
            assert status == 200  # 2 rows: the queue is full now
            async with http.post(target, data=spans_request(NOW).SerializeToString(),
                                 headers=PROTOBUF) as response:  # fmt: skip
                assert response.status == 503
                assert response.headers["Retry-After"] == "1"
                assert "write queue is full" in status_message(await response.read())
            async with grpc.aio.insecure_channel(f"127.0.0.1:{hub.grpc_port}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await trace_service_pb2_grpc.TraceServiceStub(channel).Export(
                        spans_request(NOW)
                    )
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
            assert hub.refused == 2
        finally:
            gate.set()
        assert blocked.result(timeout=10) is True
        await hub.flush()
        status, _ = await post(http, target, spans_request(NOW).SerializeToString(), PROTOBUF)
        assert status == 200  # room again
        await hub.flush()
        assert hub.written["spans"] == 3
        assert hub.received == 3


async def test_hostile_values_are_stored_not_lost(
    hub: TelemetryHub, http: aiohttp.ClientSession
) -> None:
    request = spans_request(NOW)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.start_time_unix_nano = span.end_time_unix_nano = 2**64 - 1  # the last OTLP time
    status, _ = await post(http, url(hub, "traces"), request.SerializeToString(), PROTOBUF)
    assert status == 200
    metrics = ExportMetricsServiceRequest()
    metric = metrics.resource_metrics.add().scope_metrics.add().metrics.add()
    metric.name = "huge"
    point = metric.histogram.data_points.add()
    point.count = 2**64 - 1
    point.bucket_counts.extend([2**64 - 1])
    status, _ = await post(http, url(hub, "metrics"), metrics.SerializeToString(), PROTOBUF)
    assert status == 200
    await hub.flush()
    assert hub.store.failed == 0
    (stored,) = await hub.query.spans()
    assert stored["ts_start"] == "2554-07-21T23:34:33.709551+00:00"
    (huge,) = await hub.query.metrics(name="huge")
    assert huge["count"] == huge["bucket_counts"][0] == 2**63 - 1
    assert len(await hub.archive_now(now=datetime(2200, 1, 1, tzinfo=UTC))) == 1  # the histogram
