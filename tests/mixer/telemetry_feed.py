"""Telemetry for the query surface tests: a small fleet's spans, metrics and logs, sent to a
mixer's OTLP/HTTP receiver with the real OpenTelemetry SDK exporters, and the assembled mixer.

    async with fed_mixer(tmp_path) as (mixer, fed):
        fed.trace_a, fed.trace_b     # the trace ids (32 hex digits)
    fed = await feed(hub)            # into any started TelemetryHub

edge-1 (trace A): pos-in → decode → route, and pos-in → audit; decode and route carry fluxID
4242. edge-2 (trace B): pos-in → decode, both carrying fluxID 777. Every span starts a
millisecond after the one before it (a minute ago), so "oldest first" has one answer.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mixer.app import Mixer
from mixer.settings import MixerSettings
from mixer.telemetry import TelemetryHub
from mixer.telemetry import attributes as attr
from tests.mixer.documents import BOOTSTRAP, TOKEN

READ = "read-only-token-for-telemetry"
FLUX_A = "4242"
FLUX_B = "777"
MS = 1_000_000  # nanoseconds


def resource(rack: str) -> Resource:
    return Resource.create(
        {attr.SERVICE_NAME: "fluxrig-rack", attr.RACK: rack, attr.SCENARIO: "payment-flow"}
    )


@dataclass(frozen=True, slots=True)
class Fed:
    trace_a: str
    trace_b: str


def _spans(rack: str, shape: Sequence[tuple[str, str | None, str | None]], start: int) -> Any:
    """Spans of one trace: (name = gear, parent name, fluxID), each 1 ms after the previous."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource(rack))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("fluxrig.test")
    opened: dict[str, Any] = {}
    for i, (name, parent, flux) in enumerate(shape):
        context = trace.set_span_in_context(opened[parent]) if parent else None
        attributes = {attr.GEAR: name} | ({attr.FLUX_ID: flux} if flux else {})
        opened[name] = tracer.start_span(
            name, context, attributes=attributes, start_time=start + i * MS
        )
    for i, span in enumerate(reversed(list(opened.values()))):
        span.end(end_time=start + (len(opened) + i) * MS)
    provider.shutdown()
    finished: tuple[ReadableSpan, ...] = memory.get_finished_spans()
    trace_id = format(finished[0].context.trace_id, "032x")
    return finished, trace_id, opened


def _metrics(rack: str, counts: dict[tuple[str, str], int], latency: bool) -> Any:
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=resource(rack), metric_readers=[reader])
    meter = provider.get_meter("fluxrig.test")
    counters: dict[str, Any] = {}
    for (name, gear), value in counts.items():
        counter = counters.setdefault(name, meter.create_counter(name, unit="{message}"))
        counter.add(value, {attr.GEAR: gear})
    if latency:
        histogram = meter.create_histogram("fluxrig.gear.latency", unit="ms")
        for value in (3.0, 7.0, 120.0):
            histogram.record(value, {attr.GEAR: "decode"})
    data = reader.get_metrics_data()
    provider.shutdown()
    return data


def _logs(rack: str, records: Sequence[tuple[SeverityNumber, str, str, Any]]) -> Any:
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=resource(rack))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger("fluxrig.test")
    for severity, gear, body, span in records:
        logger.emit(
            severity_number=severity,
            severity_text=severity.name,
            body=body,
            attributes={attr.GEAR: gear},
            context=trace.set_span_in_context(span) if span is not None else None,
        )
    provider.shutdown()
    return memory.get_finished_logs()


def _send(port: int, spans: Any, metrics: Sequence[Any], logs: Any) -> None:
    """Blocking: the SDK's OTLP/HTTP exporters, one request per batch."""
    base = f"http://127.0.0.1:{port}/v1"
    exporter: Any = OTLPSpanExporter(endpoint=f"{base}/traces")
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    exporter = OTLPMetricExporter(endpoint=f"{base}/metrics")
    for data in metrics:
        assert exporter.export(data) is MetricExportResult.SUCCESS
    exporter.shutdown()
    exporter = OTLPLogExporter(endpoint=f"{base}/logs")
    assert exporter.export(logs) is LogRecordExportResult.SUCCESS
    exporter.shutdown()


async def feed(hub: TelemetryHub) -> Fed:
    """Send the fleet's telemetry to `hub` and wait until every row is written."""
    start = time.time_ns() - 60_000 * MS
    spans_a, trace_a, opened = _spans(
        "edge-1",
        [("pos-in", None, None), ("decode", "pos-in", FLUX_A), ("route", "decode", FLUX_A),
         ("audit", "pos-in", None)],
        start,
    )  # fmt: skip
    spans_b, trace_b, _ = _spans(
        "edge-2", [("pos-in", None, FLUX_B), ("decode", "pos-in", FLUX_B)], start + 10 * MS
    )
    metrics = [
        _metrics("edge-1", {("fluxrig.gear.messages", "decode"): 3}, latency=True),
        _metrics("edge-2", {("fluxrig.gear.messages", "decode"): 5,
                            ("fluxrig.gear.errors", "pos-in"): 1}, latency=False),
    ]  # fmt: skip
    logs = [
        *_logs("edge-1", [(SeverityNumber.ERROR, "decode", "field 39 missing", opened["decode"]),
                          (SeverityNumber.INFO, "route", "routed to visa", opened["route"])]),
        *_logs("edge-2", [(SeverityNumber.WARN, "pos-in", "slow peer", None)]),
    ]  # fmt: skip
    await asyncio.to_thread(_send, hub.http_port, [*spans_a, *spans_b], metrics, logs)
    await hub.flush()  # the receiver answered once queued; flush waits for the writer
    return Fed(trace_a, trace_b)


def settings(state: Path, *, telemetry: bool = True) -> MixerSettings:
    return MixerSettings.model_validate(
        {
            "mixer": {"state_dir": state},
            "hub": {"port": 0, "leafnodes": False},
            "api": {"port": 0, "grpc_port": 0, "auth_token": TOKEN, "read_token": READ},
            "telemetry": {"grpc_port": 0, "http_port": 0, "enabled": telemetry,
                          "flush_interval": 0.02, "archive_interval": 3600},
            "enrollment": {"bootstrap_token": BOOTSTRAP},
        }
    )  # fmt: skip


def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FLUXRIG_* setting of the developer's shell leaks into the mixer or the CLI."""
    for key in list(os.environ):
        if key.upper().startswith("FLUXRIG_") and key.upper() != "FLUXRIG_NATS_SERVER":
            monkeypatch.delenv(key)


@asynccontextmanager
async def fed_mixer(tmp_path: Path) -> AsyncIterator[tuple[Mixer, Fed]]:
    """The assembled mixer (every port 0, admin and read tokens) with the fleet's telemetry."""
    async with Mixer(settings(tmp_path / "mixer")) as mixer:
        assert mixer.telemetry is not None
        yield mixer, await feed(mixer.telemetry)
