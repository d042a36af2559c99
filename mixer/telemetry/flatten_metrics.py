"""OTLP metrics → rows of `metric_points`, one per data point (column meanings: `schema`).

    metric_rows(request, received_ns)

Sums and gauges fill `value`; histograms `count`, `sum`, `bucket_bounds`, `bucket_counts`,
`min`, `max`; exponential histograms the same after conversion to explicit bounds (see
`exponential_buckets`); summaries `count`, `sum` and `quantiles`.
"""

from __future__ import annotations

import math
from typing import Any

from mixer.telemetry import attributes as attr
from mixer.telemetry.flatten import (
    Attributes,
    Row,
    as_json,
    attribute_map,
    bigint,
    finite,
    micros,
    promoted,
)

__all__ = ["exponential_buckets", "metric_rows"]

KINDS = frozenset({"sum", "gauge", "histogram", "exponential_histogram", "summary"})
TEMPORALITIES = {1: "delta", 2: "cumulative"}


class _Metric:
    """What every point of one metric shares (name, unit, kind, resource columns)."""

    __slots__ = ("kind", "monotonic", "name", "resource", "resource_json", "temporality", "unit")

    def __init__(self, metric: Any, kind: str, resource: Attributes, resource_json: str | None):
        data = getattr(metric, kind)
        self.name: str = metric.name
        self.unit: str | None = metric.unit or None
        self.kind = kind
        self.resource = resource
        self.resource_json = resource_json
        temporality = getattr(data, "aggregation_temporality", 0)
        self.temporality = TEMPORALITIES.get(temporality)
        self.monotonic: bool | None = data.is_monotonic if kind == "sum" else None


def metric_rows(request: Any, received_ns: int) -> list[Row]:
    out: list[Row] = []
    for resource_metrics in request.resource_metrics:
        resource = attribute_map(resource_metrics.resource.attributes)
        resource_json = as_json(resource)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind not in KINDS:
                    continue
                shared = _Metric(metric, kind, resource, resource_json)
                for point in getattr(metric, kind).data_points:
                    out.append(_row(shared, point, received_ns))
    return out


def _row(metric: _Metric, point: Any, received: int) -> Row:
    own = attribute_map(point.attributes)
    value = count = total = bounds = counts = low = high = quantiles = None
    if metric.kind in ("sum", "gauge"):
        number = point.WhichOneof("value")
        value = float(getattr(point, number)) if number is not None else None
    else:
        count = bigint(point.count)
        total = point.sum if metric.kind == "summary" or point.HasField("sum") else None
        if metric.kind == "histogram":
            bounds, counts = list(point.explicit_bounds), list(map(bigint, point.bucket_counts))
        elif metric.kind == "exponential_histogram":
            bounds, counts = exponential_buckets(point)
        else:
            quantiles = [{"quantile": q.quantile, "value": finite(q.value)}
                         for q in point.quantile_values]  # fmt: skip
        if metric.kind != "summary":
            low = point.min if point.HasField("min") else None
            high = point.max if point.HasField("max") else None
    resource = metric.resource
    return (
        micros(point.time_unix_nano, received),
        metric.name,
        metric.kind,
        metric.unit,
        value,
        count,
        total,
        bounds,
        counts,
        promoted(attr.RACK, own, resource),
        promoted(attr.GEAR, own, resource),
        promoted(attr.WIRE, own, resource),
        promoted(attr.SCENARIO, own, resource),
        promoted(attr.SERVICE_NAME, own, resource),
        as_json(own),
        metric.resource_json,
        micros(point.start_time_unix_nano, 0) or None,
        metric.temporality,
        metric.monotonic,
        low,
        high,
        as_json(quantiles),
    )


def exponential_buckets(point: Any) -> tuple[list[float], list[int]]:
    """An exponential histogram point as explicit (upper bounds, counts), ascending.

    Buckets: the negative ones (most negative first), the zero bucket (upper bound
    `zero_threshold`), the positive ones; as in an explicit histogram the first bucket has no
    lower bound and the last no upper bound, so there is one more count than bounds."""
    base = _power(2.0, _power(2.0, -point.scale))
    uppers: list[float] = []
    counts: list[int] = []
    negative = point.negative
    for index in reversed(range(len(negative.bucket_counts))):
        uppers.append(-_power(base, negative.offset + index))
        counts.append(bigint(negative.bucket_counts[index]))
    uppers.append(point.zero_threshold)
    counts.append(bigint(point.zero_count))
    positive = point.positive
    for index, bucket in enumerate(positive.bucket_counts):
        uppers.append(_power(base, positive.offset + index + 1))
        counts.append(bigint(bucket))
    return uppers[:-1], counts


def _power(base: float, exponent: float) -> float:
    try:
        return float(base**exponent)
    except OverflowError:  # a hostile scale or offset
        return math.inf
