"""OTLP request bodies: the three signals, and bytes (protobuf, OTLP/JSON, gzip) → `Export`.

    export = decode("traces", body, "json", limit=4 << 20, encoding="gzip")
    export.message      # an ExportTraceServiceRequest
    export.rows         # spans in it (what the write queue counts)
    export.raw          # its protobuf encoding (what the forwarder sends)

Hostile input raises, never crashes: `MalformedTelemetryError` (names the signal, the format and
where parsing stopped), `TelemetryTooLargeError` (more than `limit` bytes after
decompression), `UnsupportedMediaError` (an encoding other than gzip / identity). OTLP/JSON
follows the spec: trace and span ids are hex (not base64), unknown fields are ignored.
Blocking (CPU): call it in a thread for large bodies.
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf import json_format  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import (  # type: ignore[import-untyped, unused-ignore]
    DecodeError,
    Message,
)
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from mixer.telemetry.errors import (
    MalformedTelemetryError,
    TelemetryTooLargeError,
    UnsupportedMediaError,
)
from mixer.telemetry.schema import LOGS, METRIC_POINTS, SPANS, Table

__all__ = [
    "SIGNALS",
    "Export",
    "Format",
    "Ingest",
    "Signal",
    "SignalKind",
    "count_rows",
    "decode",
    "gunzip",
]

Signal = Literal["traces", "metrics", "logs"]
Format = Literal["protobuf", "json"]
_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id",
                        "parent_span_id"})  # fmt: skip


@dataclass(frozen=True, slots=True)
class SignalKind:
    """One OTLP signal: its request/response messages, gRPC service, HTTP path and table."""

    signal: Signal
    request: type[Message]
    response: type[Message]
    service: str
    path: str
    table: Table


def _kind(signal: Signal, module: Any, name: str, table: Table) -> SignalKind:
    service = module.DESCRIPTOR.services_by_name[f"{name}Service"].full_name
    request = getattr(module, f"Export{name}ServiceRequest")
    response = getattr(module, f"Export{name}ServiceResponse")
    return SignalKind(signal, request, response, service, f"/v1/{signal}", table)


SIGNALS: dict[Signal, SignalKind] = {
    "traces": _kind("traces", trace_service_pb2, "Trace", SPANS),
    "metrics": _kind("metrics", metrics_service_pb2, "Metrics", METRIC_POINTS),
    "logs": _kind("logs", logs_service_pb2, "Logs", LOGS),
}


@dataclass(frozen=True, slots=True)
class Export:
    """A decoded OTLP export request, as accepted by a receiver."""

    signal: Signal
    message: Any  # the signal's Export*ServiceRequest
    rows: int
    raw: bytes
    received_ns: int

    @property
    def size(self) -> int:
        return len(self.raw)


# What the receivers hand a request body to: (signal, body, format, content-encoding) → Export
Ingest = Callable[[Signal, bytes, Format, str | None], Awaitable[Export]]


def decode(
    signal: Signal, body: bytes, fmt: Format, *, limit: int, encoding: str | None = None
) -> Export:
    """Decompress (gzip) and parse one request body of `signal`; see the module doc."""
    received = time.time_ns()
    if len(body) > limit:
        raise _too_large(signal, len(body), limit)
    coding = (encoding or "identity").strip().lower()
    if coding == "gzip":
        body = gunzip(body, limit, signal)
    elif coding != "identity":
        raise UnsupportedMediaError(
            f"OTLP {signal} request has content-encoding {encoding!r}; send gzip or identity"
        )
    kind = SIGNALS[signal]
    if fmt == "json":
        message = _parse_json(kind, body)
        raw = message.SerializeToString()
    else:
        message = _parse_protobuf(kind, body)
        raw = body
    return Export(signal, message, count_rows(signal, message), raw, received)


def gunzip(data: bytes, limit: int, signal: str = "OTLP") -> bytes:
    """The gzip `data` decompressed (every member), refusing more than `limit` bytes of output."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        try:
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise MalformedTelemetryError(
                f"OTLP {signal} request body is not valid gzip: {exc}"
            ) from exc
        if len(out) > limit:
            raise _too_large(signal, None, limit, decompressed=True)
        if not inflater.eof:
            raise MalformedTelemetryError(f"OTLP {signal} request body is truncated gzip")
        data = inflater.unused_data
    return bytes(out)


def count_rows(signal: Signal, message: Any) -> int:
    """Spans, data points or log records in an export request."""
    if signal == "traces":
        return sum(len(s.spans) for r in message.resource_spans for s in r.scope_spans)
    if signal == "logs":
        return sum(len(s.log_records) for r in message.resource_logs for s in r.scope_logs)
    total = 0
    for resource in message.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                data = metric.WhichOneof("data")
                if data is not None:
                    total += len(getattr(metric, data).data_points)
    return total


def _parse_protobuf(kind: SignalKind, body: bytes) -> Message:
    message = kind.request()
    try:
        message.ParseFromString(body)
    except (DecodeError, RecursionError) as exc:
        raise MalformedTelemetryError(
            f"OTLP {kind.signal} request ({len(body)} bytes) is not a valid protobuf "
            f"{kind.request.DESCRIPTOR.name}: {exc}"
        ) from exc
    return message


def _parse_json(kind: SignalKind, body: bytes) -> Message:
    what = f"OTLP/JSON {kind.signal} request"
    try:
        document = json.loads(body)
    except UnicodeDecodeError as exc:
        raise MalformedTelemetryError(f"{what} is not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise MalformedTelemetryError(f"{what} is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise MalformedTelemetryError(f"{what} is nested too deeply") from exc
    if not isinstance(document, dict):
        raise MalformedTelemetryError(
            f"{what} must be a JSON object, got {type(document).__name__}"
        )
    try:
        _hex_ids_to_base64(document, "$")
        return json_format.ParseDict(document, kind.request(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise MalformedTelemetryError(f"{what} does not match OTLP: {exc}") from exc
    except RecursionError as exc:
        raise MalformedTelemetryError(f"{what} is nested too deeply") from exc


def _hex_ids_to_base64(node: Any, path: str) -> None:
    """OTLP/JSON writes trace/span ids in hex; protobuf's JSON mapping expects base64."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            _hex_ids_to_base64(item, f"{path}[{index}]")
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
                except ValueError as exc:
                    raise json_format.ParseError(
                        f"{path}.{key} must be a hex string, got {value[:40]!r}"
                    ) from exc
            else:
                _hex_ids_to_base64(value, f"{path}.{key}")


def _too_large(
    signal: str, size: int | None, limit: int, *, decompressed: bool = False
) -> TelemetryTooLargeError:
    what = "decompresses to more than" if decompressed else f"is {size} bytes, over"
    return TelemetryTooLargeError(
        f"OTLP {signal} request {what} the limit of {limit} bytes ([telemetry] max_body_bytes); "
        "send smaller batches"
    )
