"""OTLP export requests → rows of the telemetry tables (`mixer.telemetry.schema`).

    span_rows(request, received_ns)     # list of tuples in the column order of `spans`
    log_rows(request, received_ns)      # ... of `logs`

Values become JSON-able Python: OTLP `AnyValue` strings, booleans, ints, lists and key/value
lists as themselves, doubles as floats (NaN and infinities as the strings "NaN", "Infinity",
"-Infinity", since JSON has no such numbers), bytes as base64. The fluxrig attributes
(`mixer.telemetry.attributes`) are promoted to columns. A zero timestamp falls back to the
time the request was received. Metrics are flattened in `mixer.telemetry.flatten_metrics`.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from mixer.telemetry import attributes as attr

__all__ = [
    "Attributes",
    "Row",
    "any_value",
    "as_json",
    "attribute_map",
    "bigint",
    "finite",
    "hex_id",
    "log_rows",
    "micros",
    "promoted",
    "span_rows",
]

Row = tuple[Any, ...]
Attributes = dict[str, Any]

SPAN_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer",
              5: "consumer"}  # fmt: skip
STATUS_CODES = {0: "unset", 1: "ok", 2: "error"}
INT64_MAX = 2**63 - 1


# -- values -------------------------------------------------------------------------------------


def any_value(value: Any) -> Any:
    """An OTLP `AnyValue` as JSON-able Python."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "double_value":
        return finite(value.double_value)
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attribute_map(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return getattr(value, kind)


def finite(number: float) -> float | str:
    """`number`, or its name when JSON cannot hold it (NaN, ±infinity)."""
    if math.isfinite(number):
        return number
    return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")


def attribute_map(pairs: Iterable[Any]) -> Attributes:
    """OTLP `KeyValue`s as a dict (the last value of a repeated key wins)."""
    return {pair.key: any_value(pair.value) for pair in pairs}


def as_json(value: Any) -> str | None:
    """Compact JSON text (None stays None)."""
    if value is None:
        return None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def promoted(key: str, own: Mapping[str, Any], resource: Mapping[str, Any]) -> str | None:
    """Attribute `key` as column text: the item's own value, else the resource's."""
    value = own.get(key, resource.get(key))
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def hex_id(raw: bytes) -> str | None:
    return raw.hex() if raw else None


def micros(nanos: int, fallback: int) -> int:
    """Microseconds of an OTLP time (uint64 nanoseconds: at most year 2554), `fallback` if 0."""
    return (nanos or fallback) // 1000


def bigint(count: int) -> int:
    """An OTLP uint64 count within BIGINT (hostile counts are clamped, not lost)."""
    return count if count <= INT64_MAX else INT64_MAX


# -- spans ----------------------------------------------------------------------------------------


def span_rows(request: Any, received_ns: int) -> list[Row]:
    out: list[Row] = []
    for resource_spans in request.resource_spans:
        resource = attribute_map(resource_spans.resource.attributes)
        resource_json = as_json(resource)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(_span(span, resource, resource_json, received_ns))
    return out


def _span(span: Any, resource: Attributes, resource_json: str | None, received: int) -> Row:
    own = attribute_map(span.attributes)
    start = span.start_time_unix_nano or received
    end = span.end_time_unix_nano or start
    return (
        start // 1000,
        end // 1000,
        max(0, end - start) // 1000,
        hex_id(span.trace_id),
        hex_id(span.span_id),
        hex_id(span.parent_span_id),
        span.name,
        SPAN_KINDS.get(span.kind, str(span.kind)),
        STATUS_CODES.get(span.status.code, str(span.status.code)),
        span.status.message or None,
        promoted(attr.SERVICE_NAME, own, resource),
        promoted(attr.RACK, own, resource),
        promoted(attr.ENTITY_ID, own, resource),
        promoted(attr.SCENARIO, own, resource),
        promoted(attr.SCENARIO_HASH, own, resource),
        promoted(attr.GEAR, own, resource),
        promoted(attr.FLUX_ID, own, resource),
        as_json(own),
        resource_json,
        as_json([_event(e) for e in span.events] or None),
        as_json([_link(link) for link in span.links] or None),
    )


def _event(event: Any) -> dict[str, Any]:
    return {
        "time_unix_nano": event.time_unix_nano,
        "name": event.name,
        "attributes": attribute_map(event.attributes),
    }


def _link(link: Any) -> dict[str, Any]:
    return {
        "trace_id": hex_id(link.trace_id),
        "span_id": hex_id(link.span_id),
        "attributes": attribute_map(link.attributes),
    }


# -- logs -----------------------------------------------------------------------------------------


def log_rows(request: Any, received_ns: int) -> list[Row]:
    out: list[Row] = []
    for resource_logs in request.resource_logs:
        resource = attribute_map(resource_logs.resource.attributes)
        resource_json = as_json(resource)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                out.append(_log(record, resource, resource_json, received_ns))
    return out


def _log(record: Any, resource: Attributes, resource_json: str | None, received: int) -> Row:
    own = attribute_map(record.attributes)
    return (
        micros(record.time_unix_nano or record.observed_time_unix_nano, received),
        record.severity_number,
        record.severity_text or None,
        _body(record),
        hex_id(record.trace_id),
        hex_id(record.span_id),
        promoted(attr.RACK, own, resource),
        promoted(attr.GEAR, own, resource),
        promoted(attr.SERVICE_NAME, own, resource),
        as_json(own),
        resource_json,
    )


def _body(record: Any) -> str | None:
    if not record.HasField("body"):
        return None
    value = any_value(record.body)
    return value if isinstance(value, str) or value is None else as_json(value)
