"""The real OpenTelemetry SDK exporters (OTLP/gRPC, OTLP/HTTP protobuf, gzip) → rows in DuckDB.

The SDK's exporters are blocking: they run in a thread while the hub serves on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetrics,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetrics,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mixer.telemetry import TelemetryHub
from mixer.telemetry import attributes as attr
from tests.mixer.telemetry.conftest import url

RESOURCE = Resource.create(
    {
        attr.SERVICE_NAME: "fluxrig-rack",
        attr.RACK: "edge-1",
        attr.ENTITY_ID: "844424930131969",
        attr.SCENARIO: "payment-flow",
        attr.SCENARIO_HASH: "sha256:abc",
    }
)
PROTOCOLS = ["grpc", "http", "http-gzip"]
DEFAULT_BOUNDS = [0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0,
                  2500.0, 5000.0, 7500.0, 10000.0]  # fmt: skip


def exporter(protocol: str, signal: str, hub: TelemetryHub) -> Any:
    """The SDK's OTLP exporter of `signal` for `protocol`, pointed at the hub."""
    if protocol == "grpc":
        grpc_kinds: dict[str, Callable[..., Any]] = {
            "traces": GrpcSpans, "metrics": GrpcMetrics, "logs": GrpcLogs,
        }  # fmt: skip
        return grpc_kinds[signal](endpoint=f"127.0.0.1:{hub.grpc_port}", insecure=True)
    http_kinds: dict[str, Callable[..., Any]] = {
        "traces": HttpSpans, "metrics": HttpMetrics, "logs": HttpLogs,
    }  # fmt: skip
    compression = Compression.Gzip if protocol == "http-gzip" else Compression.NoCompression
    return http_kinds[signal](endpoint=url(hub, signal), compression=compression)


def make_spans() -> tuple[InMemorySpanExporter, int]:
    """pos-in → decode → route: three nested spans of one trace, one fluxMsg."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("fluxrig.test")
    with (
        tracer.start_as_current_span("pos-in", attributes={attr.GEAR: "pos-in"}) as root,
        tracer.start_as_current_span(
            "decode", attributes={attr.GEAR: "decode", attr.FLUX_ID: "12345678901234"}
        ),
        tracer.start_as_current_span("route", attributes={attr.GEAR: "route"}),
    ):
        pass
    provider.shutdown()
    return memory, root.get_span_context().trace_id


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_spans_land_with_their_columns_and_parent_chain(
    hub: TelemetryHub, protocol: str
) -> None:
    memory, trace_id = make_spans()
    otlp = exporter(protocol, "traces", hub)
    result = await asyncio.to_thread(otlp.export, memory.get_finished_spans())
    await asyncio.to_thread(otlp.shutdown)
    assert result is SpanExportResult.SUCCESS
    await hub.flush()

    spans = await hub.query.spans(trace_id=f"{trace_id:032x}")
    by_name = {s["name"]: s for s in spans}
    assert [s["name"] for s in spans] == ["pos-in", "decode", "route"]  # oldest first
    assert by_name["pos-in"]["parent_span_id"] is None
    assert by_name["decode"]["parent_span_id"] == by_name["pos-in"]["span_id"]
    assert by_name["route"]["parent_span_id"] == by_name["decode"]["span_id"]
    decode = by_name["decode"]
    assert decode["gear"] == "decode"
    assert decode["flux_id"] == "12345678901234"
    assert decode["rack"] == "edge-1"
    assert decode["service_name"] == "fluxrig-rack"
    assert decode["entity_id"] == "844424930131969"
    assert decode["scenario"] == "payment-flow"
    assert decode["scenario_hash"] == "sha256:abc"
    assert decode["kind"] == "internal"
    assert decode["status_code"] == "unset"
    assert decode["attributes"][attr.GEAR] == "decode"
    assert decode["resource"][attr.RACK] == "edge-1"
    assert decode["ts_start"] <= decode["ts_end"]
    assert decode["duration_us"] >= 0
    assert len(decode["trace_id"]) == 32
    assert len(decode["span_id"]) == 16
    assert (await hub.query.spans(flux_id="12345678901234"))[0]["name"] == "decode"


def make_metrics() -> Any:
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    meter = provider.get_meter("fluxrig.test")
    counter = meter.create_counter("fluxrig.gear.messages", unit="{message}")
    counter.add(3, {attr.GEAR: "decode", attr.WIRE: "decode.out"})
    latency = meter.create_histogram("fluxrig.gear.latency", unit="ms")
    for value in (3.0, 7.0, 120.0):
        latency.record(value, {attr.GEAR: "decode"})
    data = reader.get_metrics_data()
    provider.shutdown()
    return data


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_metrics_keep_sums_and_histogram_buckets(hub: TelemetryHub, protocol: str) -> None:
    otlp = exporter(protocol, "metrics", hub)
    result = await asyncio.to_thread(otlp.export, make_metrics())
    await asyncio.to_thread(otlp.shutdown)
    assert result is MetricExportResult.SUCCESS
    await hub.flush()

    (messages,) = await hub.query.metrics(name="fluxrig.gear.messages")
    assert messages["kind"] == "sum"
    assert messages["value"] == 3.0
    assert messages["unit"] == "{message}"
    assert (messages["rack"], messages["gear"], messages["wire"]) == ("edge-1", "decode",
                                                                     "decode.out")  # fmt: skip
    assert messages["scenario"] == "payment-flow"
    assert messages["service_name"] == "fluxrig-rack"
    assert messages["temporality"] == "cumulative"
    assert messages["monotonic"] is True

    (latency,) = await hub.query.metrics(rack="edge-1", gear="decode", name="fluxrig.gear.latency")
    assert latency["kind"] == "histogram"
    assert latency["count"] == 3
    assert latency["sum"] == 130.0
    assert latency["bucket_bounds"] == DEFAULT_BOUNDS
    counts = latency["bucket_counts"]
    assert len(counts) == len(DEFAULT_BOUNDS) + 1
    assert counts[1] == 1
    assert counts[2] == 1
    assert counts[7] == 1
    assert sum(counts) == 3
    assert (latency["min"], latency["max"]) == (3.0, 120.0)


def make_logs() -> tuple[Any, int, int]:
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    tracer_provider = TracerProvider(resource=RESOURCE)
    tracer = tracer_provider.get_tracer("fluxrig.test")
    with tracer.start_as_current_span("decode") as span:
        provider.get_logger("fluxrig.test").emit(
            severity_number=SeverityNumber.ERROR,
            severity_text="ERROR",
            body="field 39 missing",
            attributes={attr.GEAR: "decode"},
        )
        context = span.get_span_context()
    provider.shutdown()
    tracer_provider.shutdown()
    return memory.get_finished_logs(), context.trace_id, context.span_id


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_logs_keep_severity_body_and_trace(hub: TelemetryHub, protocol: str) -> None:
    records, trace_id, span_id = make_logs()
    otlp = exporter(protocol, "logs", hub)
    result = await asyncio.to_thread(otlp.export, records)
    await asyncio.to_thread(otlp.shutdown)
    assert result is LogRecordExportResult.SUCCESS
    await hub.flush()

    (record,) = await hub.query.logs(gear="decode", min_severity=17)
    assert record["body"] == "field 39 missing"
    assert (record["severity_number"], record["severity_text"]) == (17, "ERROR")
    assert record["trace_id"] == f"{trace_id:032x}"
    assert record["span_id"] == f"{span_id:016x}"
    assert (record["rack"], record["service_name"]) == ("edge-1", "fluxrig-rack")
    assert await hub.query.logs(trace_id=f"{trace_id:032x}") == [record]
    assert hub.received == 1
