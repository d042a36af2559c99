"""The outbox: what stands between the SDK's processors and the OTLP exporters.

The SDK's BatchSpanProcessor and PeriodicExportingMetricReader hand their batches to a `Lane`
(`SpanLane` / `MetricLane`, exporters in the SDK's sense) which only queues them and returns:
the SDK threads never wait for the network, so their own queues never fill. One sender thread
exports what the lanes hold, oldest first. When the endpoint cannot be reached (refused, hangs,
answers an error), the batch goes back to the front of its lane and the sender retries with a
back-off (0.5 s doubling to 5 s); meanwhile each lane keeps at most `limit` items (spans, metric
data points), dropping the OLDEST and counting them (`dropped`), so what arrives when the
endpoint is back is the newest telemetry. The outage is logged once when it starts and once when
it ends (with what was dropped).

`close(timeout)` (blocking: call it off the event loop) makes one last attempt to send what is
buffered, bounded by `timeout` (none during an outage: it would only wait for the exporter's
retries), then shuts the exporters down; the sender is a daemon thread, so an endpoint that
hangs never holds the process.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["MetricLane", "Outbox", "SpanLane"]

log = logging.getLogger("fluxrig.telemetry")

RETRY_INITIAL = 0.5
RETRY_MAX = 5.0


def _batch_size() -> int:
    try:
        return max(1, int(os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512")))
    except ValueError:
        return 512


class _Lane:
    """One signal's buffer and exporter. `dropped`, `sent` count items (spans or data points)."""

    unit = "items"

    def __init__(self, outbox: Outbox, signal: str, target: str, chunk: int) -> None:
        self.outbox = outbox
        self.signal = signal
        self.target = target
        self.chunk = chunk
        self.queue: deque[tuple[Any, int]] = deque()
        self.weight = 0  # of what `queue` holds
        self.inflight = 0  # weight of the chunk the sender is exporting
        self.dropped = 0
        self.sent = 0

    def send(self, items: list[Any]) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def shutdown_exporter(self, timeout: float) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


def _shutdown(exporter: Any, timeout: float) -> None:
    """Shut an SDK exporter down, passing a timeout to those that take one (gRPC's do)."""
    try:
        if "timeout_millis" in inspect.signature(exporter.shutdown).parameters:
            exporter.shutdown(timeout_millis=max(timeout, 0.0) * 1000)
        else:
            exporter.shutdown()
    except Exception as exc:  # never let a failing exporter stop the rack
        log.debug("telemetry: exporter shutdown failed: %s", exc)


class SpanLane(_Lane, SpanExporter):
    """A `SpanExporter` for the BatchSpanProcessor: queues the spans in the outbox."""

    unit = "spans"

    def __init__(self, outbox: Outbox, exporter: SpanExporter, target: str) -> None:
        _Lane.__init__(self, outbox, "spans", target, _batch_size())
        self.exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.outbox.put(self, [(span, 1) for span in spans])
        return SpanExportResult.SUCCESS

    def send(self, items: list[Any]) -> bool:
        return self.exporter.export(items) is SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """The processor is done with us; the outbox shuts the real exporter down."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # never block a caller: the sender thread is on it

    def shutdown_exporter(self, timeout: float) -> None:
        _shutdown(self.exporter, timeout)


class MetricLane(_Lane, MetricExporter):
    """A `MetricExporter` for the periodic reader: `extend` may add metrics (the rack's duration
    histograms), then the batch is queued in the outbox."""

    unit = "data points"

    def __init__(
        self,
        outbox: Outbox,
        exporter: MetricExporter,
        target: str,
        extend: Callable[[MetricsData], MetricsData] | None = None,
    ) -> None:
        _Lane.__init__(self, outbox, "metrics", target, 1)
        MetricExporter.__init__(
            self,
            preferred_temporality=exporter._preferred_temporality,
            preferred_aggregation=exporter._preferred_aggregation,
        )
        self.exporter = exporter
        self.extend = extend

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        if self.extend is not None:
            metrics_data = self.extend(metrics_data)
        self.outbox.put(self, [(metrics_data, _points(metrics_data))])
        return MetricExportResult.SUCCESS

    def send(self, items: list[Any]) -> bool:
        return all(self.exporter.export(data) is MetricExportResult.SUCCESS for data in items)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """The reader is done with us; the outbox shuts the real exporter down."""

    def shutdown_exporter(self, timeout: float) -> None:
        _shutdown(self.exporter, timeout)


def _points(data: MetricsData) -> int:
    return sum(
        len(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    )


class _ExporterLog(logging.Handler):
    """While an outbox runs, the SDK exporters' own log lines (several per failed attempt) are
    kept here as `last` (and logged at DEBUG) instead of reaching the rack's log: the outbox says
    once per outage what happened."""

    NAME = "opentelemetry.exporter"

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.last = ""
        self._users = 0
        self._propagate = True
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.last = record.getMessage()[:300]
        except Exception:  # a bad format string in a library's log call
            return
        log.debug("exporter: %s", self.last)

    def capture(self) -> None:
        with self._guard:
            self._users += 1
            if self._users == 1:
                logger = logging.getLogger(self.NAME)
                self._propagate = logger.propagate
                logger.propagate = False
                logger.addHandler(self)

    def uncapture(self) -> None:
        with self._guard:
            self._users -= 1
            if self._users == 0:
                logger = logging.getLogger(self.NAME)
                logger.removeHandler(self)
                logger.propagate = self._propagate


EXPORTER_LOG = _ExporterLog()


class Outbox:
    """Bounded buffers (one lane per signal) and the sender thread; see the module doc."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the telemetry buffer must hold at least 1 item, got {limit}")
        self.limit = limit
        self.lanes: list[_Lane] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._hurry = threading.Event()  # closing: retry now, not after the back-off
        self._closing = False
        self._thread: threading.Thread | None = None
        self._outage: tuple[float, int, str] | None = None  # (since, dropped then, lane)

    # -- producers (SDK threads) ----------------------------------------------------------------

    def add(self, lane: _Lane) -> None:
        self.lanes.append(lane)

    def put(self, lane: _Lane, items: Sequence[tuple[Any, int]]) -> None:
        with self._lock:
            lane.queue.extend(items)
            lane.weight += sum(weight for _, weight in items)
            self._trim(lane)
        self._wake.set()

    def _trim(self, lane: _Lane) -> None:
        """Drop the oldest items past the limit (the newest one always stays). Under the lock."""
        queue = lane.queue
        while lane.weight > self.limit and len(queue) > 1:
            _, weight = queue.popleft()
            lane.weight -= weight
            lane.dropped += weight

    @property
    def dropped(self) -> dict[str, int]:
        return {lane.signal: lane.dropped for lane in self.lanes}

    @property
    def buffered(self) -> dict[str, int]:
        """Items waiting to be exported (or being exported), per signal."""
        return {lane.signal: lane.weight + lane.inflight for lane in self.lanes}

    # -- the sender thread -----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            EXPORTER_LOG.capture()
            self._thread = threading.Thread(
                target=self._run, name="fluxrig-telemetry-outbox", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closing and self._outage is not None:
                return  # stopping during an outage: nothing more to try
            retry = RETRY_INITIAL
            while not self._send_all():
                if self._closing:
                    return  # one last attempt at stop, no retries
                self._hurry.wait(retry)
                retry = min(retry * 2, RETRY_MAX)
            if self._closing:
                return

    def _send_all(self) -> bool:
        """Send every lane's items, oldest first; False at the first failure."""
        for lane in self.lanes:
            while True:
                with self._lock:
                    if not lane.queue:
                        break
                    chunk = [lane.queue.popleft() for _ in range(min(lane.chunk, len(lane.queue)))]
                    weight = sum(w for _, w in chunk)
                    lane.weight -= weight
                    lane.inflight = weight
                try:
                    ok = lane.send([item for item, _ in chunk])
                except Exception as exc:  # an exporter bug must not kill the sender
                    log.debug("telemetry: exporting %s raised %s", lane.signal, exc)
                    ok = False
                if not ok:
                    with self._lock:
                        lane.queue.extendleft(reversed(chunk))
                        lane.weight += weight
                        lane.inflight = 0
                        self._trim(lane)
                    self._failed(lane)
                    return False
                with self._lock:
                    lane.inflight = 0
                lane.sent += weight
                self._recovered()
        return True

    def _failed(self, lane: _Lane) -> None:
        if self._outage is not None or self._closing:
            return
        self._outage = (time.monotonic(), sum(self.dropped.values()), lane.signal)
        reason = EXPORTER_LOG.last or "no answer"
        log.warning(
            "telemetry: cannot export %s to %s (%s); buffering until it answers: the newest %d "
            "spans and %d metric data points are kept, older ones dropped",
            lane.signal, lane.target, reason, self.limit, self.limit,
        )  # fmt: skip

    def _recovered(self) -> None:
        if self._outage is None:
            return
        since, dropped_before, _ = self._outage
        self._outage = None
        dropped = sum(self.dropped.values()) - dropped_before
        log.info(
            "telemetry: exporting again after %.1fs; %d items dropped meanwhile (buffer %d)",
            time.monotonic() - since, dropped, self.limit,
        )  # fmt: skip

    # -- closing ---------------------------------------------------------------------------------

    def close(self, timeout: float) -> bool:
        """Blocking: send what is buffered (one attempt, within `timeout` s; none during an
        outage), then shut the exporters down. True when nothing was left unsent."""
        deadline = time.monotonic() + timeout
        self._closing = True
        thread = self._thread
        if thread is not None and self._outage is None:
            self._hurry.set()
            self._wake.set()
            thread.join(max(timeout, 0.0))
        with self._lock:
            left = sum(lane.weight + lane.inflight for lane in self.lanes)
        for lane in self.lanes:  # also ends the retries of an export still in flight
            lane.shutdown_exporter(deadline - time.monotonic())
        self._hurry.set()
        self._wake.set()
        if thread is not None:
            EXPORTER_LOG.uncapture()
        if left:
            why = "the endpoint cannot be reached" if self._outage else f"not sent in {timeout:g}s"
            log.warning("telemetry: %d items dropped at stop (%s)", left, why)
        return left == 0
