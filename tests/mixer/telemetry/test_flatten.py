"""OTLP messages → rows: every metric kind, every attribute value type, promotion of the fluxrig
attributes, and the request decoding rules (row counts, hex ids, gzip members)."""

from __future__ import annotations

import gzip
import math

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from mixer.telemetry.errors import MalformedTelemetryError, TelemetryTooLargeError
from mixer.telemetry.flatten import any_value, log_rows, promoted
from mixer.telemetry.flatten_metrics import exponential_buckets, metric_rows
from mixer.telemetry.payload import decode, gunzip
from mixer.telemetry.schema import LOGS, METRIC_POINTS
from tests.mixer.telemetry.conftest import spans_request

RECEIVED = 1_700_000_000_000_000_000


def row_dict(columns: tuple[str, ...], row: tuple[object, ...]) -> dict[str, object]:
    return dict(zip(columns, row, strict=True))


def metrics_request() -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    resource = request.resource_metrics.add()
    pair = resource.resource.attributes.add()
    pair.key, pair.value.string_value = "fluxrig.gear", "resource-gear"
    metrics = resource.scope_metrics.add().metrics
    summary = metrics.add()
    summary.name = "latency.summary"
    point = summary.summary.data_points.add()
    point.count, point.sum = 4, 10.0
    for quantile, value in ((0.5, 2.0), (0.99, math.inf)):
        q = point.quantile_values.add()
        q.quantile, q.value = quantile, value
    expo = metrics.add()
    expo.name = "latency.exp"
    expo.exponential_histogram.aggregation_temporality = 1
    point = expo.exponential_histogram.data_points.add()
    point.scale, point.count, point.zero_count, point.zero_threshold = 0, 6, 1, 0.0
    point.positive.offset = 1
    point.positive.bucket_counts.extend([2, 1])
    point.negative.offset = 0
    point.negative.bucket_counts.extend([1, 1])
    pair = point.attributes.add()
    pair.key, pair.value.string_value = "fluxrig.gear", "own-gear"
    metrics.add().name = "no data"  # a metric without a data field is skipped
    return request


def test_every_metric_kind_becomes_rows() -> None:
    rows = [row_dict(METRIC_POINTS.column_names, r) for r in metric_rows(metrics_request(),
                                                                         RECEIVED)]  # fmt: skip
    summary, expo = rows
    assert summary["kind"] == "summary"
    assert (summary["count"], summary["sum"]) == (4, 10.0)
    assert summary["quantiles"] == ('[{"quantile":0.5,"value":2.0},'
                                    '{"quantile":0.99,"value":"Infinity"}]')  # fmt: skip
    assert summary["ts"] == RECEIVED // 1000  # no time on the point: the receive time
    assert summary["gear"] == "resource-gear"  # falls back to the resource
    assert expo["kind"] == "exponential_histogram"
    assert expo["temporality"] == "delta"
    assert expo["gear"] == "own-gear"  # the point's own attribute wins
    # scale 0: base 2; negative buckets [-4,-2) and [-2,-1) → uppers -2, -1; zero bucket ≤ 0;
    # positive offset 1: (2,4], (4,8]
    assert expo["bucket_bounds"] == [-2.0, -1.0, 0.0, 4.0]
    assert expo["bucket_counts"] == [1, 1, 1, 2, 1]


def test_exponential_buckets_survive_hostile_scales() -> None:
    request = metrics_request()
    point = request.resource_metrics[0].scope_metrics[0].metrics[1].exponential_histogram
    hostile = point.data_points[0]
    hostile.scale = -(2**31)
    bounds, counts = exponential_buckets(hostile)
    assert len(counts) == len(bounds) + 1
    assert math.isinf(bounds[-1])


def test_any_values_become_json_able_python() -> None:
    value = AnyValue()
    entry = value.kvlist_value.values.add()
    entry.key = "list"
    entry.value.array_value.values.add().bytes_value = b"\x00\xff"
    entry.value.array_value.values.add().double_value = float("nan")
    entry.value.array_value.values.add().bool_value = True
    entry.value.array_value.values.add()  # empty AnyValue
    assert any_value(value) == {"list": ["AP8=", "NaN", True, None]}
    assert promoted("k", {"k": 12345678901234}, {}) == "12345678901234"
    assert promoted("k", {"k": False}, {}) == "false"
    assert promoted("k", {"k": ["a"]}, {}) == '["a"]'
    assert promoted("k", {}, {}) is None


def test_log_bodies_and_times() -> None:
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    structured = records.add()
    structured.observed_time_unix_nano = 5_000
    entry = structured.body.kvlist_value.values.add()
    entry.key, entry.value.int_value = "code", 39
    records.add()  # no body, no time
    first, second = (row_dict(LOGS.column_names, r) for r in log_rows(request, RECEIVED))
    assert (first["body"], first["ts"]) == ('{"code":39}', 5)
    assert (second["body"], second["ts"]) == (None, RECEIVED // 1000)


def test_decode_counts_rows_and_keeps_the_raw_request() -> None:
    raw = spans_request().SerializeToString()
    assert decode("traces", raw, "protobuf", limit=1024).rows == 0
    request = metrics_request()
    export = decode("metrics", request.SerializeToString(), "protobuf", limit=1 << 20)
    assert export.rows == 2
    assert export.raw == request.SerializeToString()


def test_gunzip_reads_every_member_within_the_limit() -> None:
    two_members = gzip.compress(b"abc") + gzip.compress(b"def")
    assert gunzip(two_members, 6) == b"abcdef"
    with pytest.raises(TelemetryTooLargeError, match="decompresses to more than the limit of 5"):
        gunzip(two_members, 5)
    with pytest.raises(MalformedTelemetryError, match="not valid gzip"):
        gunzip(gzip.compress(b"abc") + b"trailing junk", 100)
