"""Fixtures of the telemetry hub tests: a started hub on port 0 over a temp state dir, and OTLP
requests built by hand (with chosen timestamps, for archive and retention)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from mixer.telemetry import TelemetryHub, TelemetrySection

BOUND = 10.0  # seconds: an upper bound for anything that should take milliseconds
PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


def settings(**overrides: Any) -> TelemetrySection:
    """Ports 0, a short flush interval, no periodic archive run during a test."""
    values: dict[str, Any] = {
        "grpc_port": 0,
        "http_port": 0,
        "flush_interval": 0.02,
        "archive_interval": 3600,
    }
    return TelemetrySection.model_validate({**values, **overrides})


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[TelemetryHub]:
    async with TelemetryHub(settings(), tmp_path / "state") as started:
        yield started


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def url(hub: TelemetryHub, signal: str) -> str:
    return f"http://127.0.0.1:{hub.http_port}/v1/{signal}"


async def until(check: Callable[[], bool], timeout: float = BOUND) -> None:
    """Poll `check` until it holds, or fail after `timeout`."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - counters of other threads and tasks, no event
            await asyncio.sleep(0.01)


def nanos(moment: datetime) -> int:
    """Nanoseconds since the epoch (a naive `moment` is UTC)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return round(aware.timestamp() * 1_000_000) * 1000


def _attributes(target: Any, values: dict[str, Any]) -> None:
    for key, value in values.items():
        pair = target.add()
        pair.key = key
        if isinstance(value, bool):
            pair.value.bool_value = value
        elif isinstance(value, int):
            pair.value.int_value = value
        elif isinstance(value, float):
            pair.value.double_value = value
        else:
            pair.value.string_value = value


def spans_request(
    *starts: datetime,
    rack: str = "edge-1",
    gear: str = "decode",
    trace_id: bytes = bytes(range(1, 17)),
) -> ExportTraceServiceRequest:
    """One span per start time (1 ms long), rack on the resource, gear on the span."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    _attributes(resource_spans.resource.attributes,
                {"service.name": "fluxrig-rack", "fluxrig.rack": rack})  # fmt: skip
    scope = resource_spans.scope_spans.add()
    for index, start in enumerate(starts):
        span = scope.spans.add()
        span.name = f"span-{index}"
        span.trace_id = trace_id
        span.span_id = (index + 1).to_bytes(8, "big")
        span.start_time_unix_nano = nanos(start)
        span.end_time_unix_nano = nanos(start) + 1_000_000
        _attributes(span.attributes, {"fluxrig.gear": gear})
    return request


def gauge_request(*times: datetime, rack: str = "edge-1") -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    _attributes(resource_metrics.resource.attributes, {"fluxrig.rack": rack})
    metric = resource_metrics.scope_metrics.add().metrics.add()
    metric.name = "fluxrig.queue.depth"
    for index, moment in enumerate(times):
        point = metric.gauge.data_points.add()
        point.time_unix_nano = nanos(moment)
        point.as_int = index
    return request


def logs_request(*times: datetime, rack: str = "edge-1") -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    _attributes(resource_logs.resource.attributes, {"fluxrig.rack": rack})
    scope = resource_logs.scope_logs.add()
    for index, moment in enumerate(times):
        record = scope.log_records.add()
        record.time_unix_nano = nanos(moment)
        record.severity_number = 9
        record.body.string_value = f"line {index}"
    return request
