"""Rack metrics: per gear and per wire, read from the runtime's plain counters when collected.

Nothing here runs per message except `Durations.record` (per timed message: every one on a
gear with idle time, one in 8 under load, see `rack.runtime.slot`; a bisect and two additions,
~0.15 µs; the SDK's `Histogram.record` costs ~10 µs on the same machine, attribute hashing
mostly). Everything else is an observable instrument whose callback reads
`GearStats`, inbox lengths and the standard wires' counters in the SDK's reader thread (plain
int reads; a collection that races a reload skips that reading). The duration histograms are
added to each export by `RackMetrics.extend` as explicit-bucket histogram points.

Per gear (`fluxrig.gear`, `fluxrig.scenario`): `fluxrig.gear.messages` (`fluxrig.direction`
in/out), `.errors`, `.dropped`, `.queue.depth`, `.process.duration`, and one
`fluxrig.gear.<name>` per counter or gauge the gear keeps (`bytes_in`, `connections`,
`open_connections`, …; registered when first seen, from the next collection on). Per standard
wire (`fluxrig.wire`): `fluxrig.wire.pending` (per publishing port) and `.delivered`, `.acked`,
`.failed`, `.dead_lettered` (per wire consumed here). The rack's own: `fluxrig.telemetry.dropped`
and `.buffered` (`fluxrig.signal`).
"""

from __future__ import annotations

import logging
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from rack.telemetry import names

if TYPE_CHECKING:
    from rack.runtime.rack import Rack
    from rack.telemetry.outbox import Outbox

__all__ = ["Durations", "RackMetrics"]

log = logging.getLogger("fluxrig.telemetry")

Callback = Callable[[CallbackOptions], Iterable[Observation]]
_HOT = frozenset(("in", "out", "errors", "dropped"))  # exported under fixed names
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-/]{0,200}$")
_RESERVED = frozenset(("messages", "errors", "dropped", "queue.depth", "process.duration"))


class Durations:
    """One gear's process-duration histogram (seconds, explicit buckets `DURATION_BOUNDS`)."""

    __slots__ = ("bounds", "counts", "first", "max", "min", "start_ns", "sum")

    def __init__(self) -> None:
        self.bounds = names.DURATION_BOUNDS
        self.first = self.bounds[0]
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.min = float("inf")
        self.max = 0.0
        self.start_ns = time.time_ns()

    def record(self, seconds: float, count: int = 1) -> None:
        """`count` messages took `seconds` each (the gear's runner times one in a few under
        load: that one stands for the untimed ones after it)."""
        # Bucket i holds bounds[i-1] < v <= bounds[i] (OTLP: upper bounds inclusive). A fast
        # gear's messages mostly fall in the first: checked before the bisection (~70 ns).
        if seconds <= self.first:
            self.counts[0] += count
        else:
            self.counts[bisect_left(self.bounds, seconds)] += count
        self.sum += seconds * count
        if seconds > self.max:
            self.max = seconds
        if seconds < self.min:
            self.min = seconds

    def point(self, attributes: dict[str, str], now: int) -> HistogramDataPoint | None:
        counts = list(self.counts)  # one copy: consistent buckets
        count = sum(counts)
        if not count:
            return None
        return HistogramDataPoint(
            attributes=attributes,
            start_time_unix_nano=self.start_ns,
            time_unix_nano=now,
            count=count,
            sum=self.sum,
            bucket_counts=counts,
            explicit_bounds=list(self.bounds),
            min=self.min,
            max=self.max,
        )


class RackMetrics:
    """The instruments of one rack; `extend` adds the histograms to an export."""

    def __init__(
        self, rack: Rack, outbox: Outbox, resource: Resource, scenario: Callable[[], str]
    ) -> None:
        self._rack = rack
        self._outbox = outbox
        self._resource = resource
        self._scenario = scenario
        self._meter: Meter | None = None
        self._seen: set[str] = set(_RESERVED)

    def register(self, meter: Meter) -> None:
        """The fixed instruments (call once, before the first collection)."""
        self._meter = meter
        gear_counters: list[tuple[str, str, Callback]] = [
            (names.MESSAGES, "Messages a gear took in (`in`) and emitted (`out`)", self._messages),
            (names.ERRORS, "Messages whose processing raised", self._stat("errors")),
            (names.DROPPED, "Messages emitted on a port without a wire", self._stat("dropped")),
        ]
        for name, description, callback in gear_counters:
            meter.create_observable_counter(name, [callback], unit="{message}",
                                            description=description)  # fmt: skip
        meter.create_observable_gauge(
            names.QUEUE_DEPTH, [self._depth], unit="{message}",
            description="Messages waiting in the gear's inbox (its memory wires and standard "
            "deliveries)",
        )  # fmt: skip
        meter.create_observable_gauge(
            names.WIRE_PENDING, [self._pending], unit="{message}",
            description="Messages a port published to JetStream and the stream did not confirm "
            "yet",
        )  # fmt: skip
        for counter in names.WIRE_COUNTERS:
            meter.create_observable_counter(
                f"fluxrig.wire.{counter}", [self._wire(counter)], unit="{message}",
                description=f"Messages of a standard wire consumed here: {counter}",
            )  # fmt: skip
        meter.create_observable_counter(
            names.TELEMETRY_DROPPED, [self._outbox_counts(dropped=True)], unit="{item}",
            description="Spans / metric data points dropped (oldest first) while the OTLP "
            "endpoint could not be reached",
        )  # fmt: skip
        meter.create_observable_gauge(
            names.TELEMETRY_BUFFERED, [self._outbox_counts(dropped=False)], unit="{item}",
            description="Spans / metric data points waiting to be exported",
        )  # fmt: skip

    # -- readings (the SDK's reader thread) ------------------------------------------------------

    def _gears(self) -> list[tuple[dict[str, str], Any]]:
        scenario = self._scenario()
        return [
            ({names.GEAR: slot.name, names.SCENARIO: scenario}, slot)
            for slot in list(self._rack.slots.values())
        ]

    def _messages(self, options: CallbackOptions) -> Iterable[Observation]:
        for attributes, slot in self._gears():
            stats = slot.stats
            yield Observation(stats.msgs_in, {**attributes, names.DIRECTION: "in"})
            yield Observation(stats.msgs_out, {**attributes, names.DIRECTION: "out"})

    def _stat(self, name: str) -> Callback:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            for attributes, slot in self._gears():
                yield Observation(slot.stats.get(name), attributes)

        return observe

    def _depth(self, options: CallbackOptions) -> Iterable[Observation]:
        for attributes, slot in self._gears():
            yield Observation(len(slot.inbox), attributes)

    def _custom(self, name: str) -> Callback:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            for attributes, slot in self._gears():
                values = slot.stats.snapshot()
                if name in values:
                    yield Observation(values[name], attributes)

        return observe

    def _pending(self, options: CallbackOptions) -> Iterable[Observation]:
        scenario = self._scenario()
        for port, count in self._rack.standard.pending().items():
            yield Observation(count, {names.WIRE: port, names.SCENARIO: scenario})

    def _wire(self, counter: str) -> Callback:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            scenario = self._scenario()
            try:
                wires = dict(self._rack.standard.stats().get("wires", {}))
            except RuntimeError:  # the wires changed under us (a reload): next time
                return
            for label, values in wires.items():
                if counter in values:
                    yield Observation(values[counter], {names.WIRE: label,
                                                        names.SCENARIO: scenario})  # fmt: skip

        return observe

    def _outbox_counts(self, *, dropped: bool) -> Callback:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            counts = self._outbox.dropped if dropped else self._outbox.buffered
            for signal, count in counts.items():
                yield Observation(count, {names.SIGNAL: signal})

        return observe

    # -- after each collection (the reader thread, outside the SDK's collection lock) -----------

    def discover(self) -> None:
        """Register an instrument for each gear counter or gauge not seen before."""
        meter = self._meter
        if meter is None:
            return
        for slot in list(self._rack.slots.values()):
            gauges = set(slot.stats.gauges)
            for key in slot.stats.snapshot():
                if key in _HOT or key in self._seen:
                    continue
                self._seen.add(key)
                if not _NAME.match(key):
                    log.debug("telemetry: gear counter %r is not a valid metric name", key)
                    continue
                name = names.GEAR_PREFIX + key
                unit = "By" if "bytes" in key else "1"
                description = f"`{key}` of the gear's stats"
                if key in gauges:
                    meter.create_observable_gauge(name, [self._custom(key)], unit=unit,
                                                  description=description)  # fmt: skip
                else:
                    meter.create_observable_counter(name, [self._custom(key)], unit=unit,
                                                    description=description)  # fmt: skip

    def extend(self, data: MetricsData) -> MetricsData:
        """`data` plus the gears' duration histograms; registers newly seen gear counters."""
        try:
            self.discover()
            histogram = self._histogram()
        except Exception as exc:  # a reload raced the reading: next time
            log.debug("telemetry: gear metrics not read: %s", exc)
            return data
        if histogram is None:
            return data
        resources = list(data.resource_metrics)
        if not resources:
            scope = ScopeMetrics(InstrumentationScope(names.SCOPE), [histogram], schema_url="")
            return MetricsData([ResourceMetrics(self._resource, [scope], schema_url="")])
        # Into the rack's own scope: the OTLP encoder keeps one ScopeMetrics per scope (a
        # second one with the same scope would replace the first).
        first, scopes = resources[0], list(resources[0].scope_metrics)
        for i, scope in enumerate(scopes):
            if scope.scope.name == names.SCOPE:
                scopes[i] = ScopeMetrics(scope.scope, [*scope.metrics, histogram], scope.schema_url)
                break
        else:
            scopes.append(
                ScopeMetrics(InstrumentationScope(names.SCOPE), [histogram], schema_url="")
            )
        resources[0] = ResourceMetrics(first.resource, scopes, first.schema_url)
        return MetricsData(resources)

    def _histogram(self) -> Metric | None:
        now = time.time_ns()
        points = []
        for attributes, slot in self._gears():
            probe = slot.probe
            point = probe.durations.point(attributes, now) if probe is not None else None
            if point is not None:
                points.append(point)
        if not points:
            return None
        return Metric(
            name=names.PROCESS_DURATION,
            description="Time a gear's `process` took per message",
            unit="s",
            data=Histogram(points, AggregationTemporality.CUMULATIVE),
        )
