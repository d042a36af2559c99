"""`Telemetry`: one rack's OpenTelemetry providers, exporters and outbox.

    telemetry = Telemetry(config, rack)      # on the loop: builds objects, starts SDK threads
    telemetry.use_scenario(name, digest)     # at every apply
    slot.probe = telemetry.probe("decode", "codec_json")
    await telemetry.aclose()                 # bounded by config.stop_timeout, off the loop

Threads (all daemons): the BatchSpanProcessor's worker, the PeriodicExportingMetricReader's
ticker (both the SDK's, configured by OTEL_BSP_* and OTEL_METRIC_EXPORT_*), and the outbox's
sender. Nothing is registered globally (no global tracer/meter provider, no atexit hook).

Resource: `service.name` = fluxrig-rack, `fluxrig.rack`, `fluxrig.entity_id` (when the rack has
a machine id), merged over OTEL_RESOURCE_ATTRIBUTES. The scenario (`fluxrig.scenario`,
`fluxrig.scenario_hash`) changes on reload, so it is an attribute of every span and data point
rather than of the resource (the mixer's hub fills the same columns from either).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from rack.model.ids import EntityId, EntityType
from rack.telemetry import names
from rack.telemetry.config import Signal, TelemetryConfig
from rack.telemetry.metrics import RackMetrics
from rack.telemetry.outbox import MetricLane, Outbox, SpanLane
from rack.telemetry.tracing import GearProbe, RootIds, Tracing

if TYPE_CHECKING:
    from rack.runtime.rack import Rack

__all__ = ["Telemetry"]

log = logging.getLogger("fluxrig.telemetry")

_PATHS: dict[Signal, str] = {"traces": "/v1/traces", "metrics": "/v1/metrics"}
SCHEDULE_DELAY_MS = 500.0  # spans are handed to the outbox at least this often (see below)


class Telemetry:
    """See the module doc. `aclose()` is idempotent."""

    def __init__(self, config: TelemetryConfig, rack: Rack) -> None:
        self.config = config
        self.resource = _resource(rack)
        self.outbox = Outbox(config.buffer)
        ids = RootIds()
        self.tracer_provider = TracerProvider(
            sampler=_sampler(config), resource=self.resource, id_generator=ids,
            shutdown_on_exit=False,
        )  # fmt: skip
        self.tracing = Tracing(self.tracer_provider.get_tracer(names.SCOPE), ids, config)
        self.metrics = RackMetrics(rack, self.outbox, self.resource, lambda: self.tracing.scenario)
        spans, metrics = _exporter(config, "traces"), _exporter(config, "metrics")
        span_lane = SpanLane(self.outbox, spans, _target(spans))
        metric_lane = MetricLane(self.outbox, metrics, _target(metrics), self.metrics.extend)
        self.outbox.add(span_lane)
        self.outbox.add(metric_lane)
        self.tracer_provider.add_span_processor(
            BatchSpanProcessor(span_lane, schedule_delay_millis=_schedule_delay())
        )
        self.meter_provider = MeterProvider(
            metric_readers=[PeriodicExportingMetricReader(metric_lane)],
            resource=self.resource,
            shutdown_on_exit=False,
        )
        self.metrics.register(self.meter_provider.get_meter(names.SCOPE))
        self.outbox.start()
        self._closed = False

    def use_scenario(self, name: str, digest: str) -> None:
        self.tracing.use_scenario(name, digest)

    def probe(self, gear: str, type_name: str) -> GearProbe:
        scope = f"fluxrig.gear.{type_name}"
        return GearProbe(
            gear,
            self.tracing,
            tracer=self.tracer_provider.get_tracer(scope),
            meter=self.meter_provider.get_meter(scope),
        )

    async def aclose(self) -> None:
        """Flush and stop, in a thread of its own, waiting at most `stop_timeout` (+1 s)."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        # A thread of its own, not asyncio.to_thread: a default-executor thread stuck on an
        # endpoint that hangs would hold up the loop's executor shutdown (asyncio.run's exit).
        thread = threading.Thread(
            target=self._shutdown, args=(loop, done), name="fluxrig-telemetry-stop", daemon=True
        )
        thread.start()
        try:
            async with asyncio.timeout(self.config.stop_timeout + 1.0):
                await asyncio.shield(done)
        except TimeoutError:
            log.warning(
                "telemetry did not stop within %.1fs; whatever it still holds is dropped",
                self.config.stop_timeout,
            )

    def _shutdown(self, loop: asyncio.AbstractEventLoop, done: asyncio.Future[None]) -> None:
        deadline = time.monotonic() + self.config.stop_timeout
        try:
            self.tracer_provider.shutdown()  # the processor's last batch, into the outbox
            remaining = max(deadline - time.monotonic(), 0.0)
            self.meter_provider.shutdown(timeout_millis=remaining * 1000)  # a last collection
            self.outbox.close(max(deadline - time.monotonic(), 0.0))
        except Exception as exc:
            log.warning("telemetry: stopping failed: %s", exc)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(_resolve, done)


def _resolve(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


def _schedule_delay() -> float | None:
    """OTEL_BSP_SCHEDULE_DELAY when set (None: the SDK reads it), else SCHEDULE_DELAY_MS.

    Finished spans wait in the processor's queue as Python objects (~11 each that the garbage
    collector tracks): with the SDK's 5 s default, at 0.1% of 150k messages/s, ~1500 spans wait,
    and every full collection walks their ~16k objects (+0.4 µs per message on the test VM)."""
    return None if os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "").strip() else SCHEDULE_DELAY_MS


def _resource(rack: Rack) -> Resource:
    attributes: dict[str, Any] = {names.SERVICE_NAME: names.SERVICE, names.RACK: rack.name}
    if rack.ids.machine_id:
        entity = EntityId(EntityType.RACK, rack.ids.machine_id)
        attributes[names.ENTITY_ID] = str(int(entity))
    return Resource.create(attributes)


def _sampler(config: TelemetryConfig) -> Sampler | None:
    """The SDK sampler (None: the SDK builds it from OTEL_TRACES_SAMPLER)."""
    if not config.known_sampler:
        return None
    root: Sampler
    if config.sampler.endswith("always_on"):
        root = ALWAYS_ON
    elif config.sampler.endswith("always_off"):
        root = ALWAYS_OFF
    else:
        root = TraceIdRatioBased(config.ratio)
    return ParentBased(root) if config.parent_based else root


def _exporter(config: TelemetryConfig, signal: Signal) -> Any:
    """The SDK's OTLP exporter of `signal`; it reads OTEL_EXPORTER_OTLP_* (headers, timeout,
    compression, certificates, and the endpoint unless the rack chose one)."""
    base = config.endpoints[signal]
    if config.protocols[signal] == "grpc":
        if signal == "traces":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpans,
            )

            return GrpcSpans(endpoint=base)
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetrics,
        )

        return GrpcMetrics(endpoint=base)
    endpoint = base + _PATHS[signal] if base else None
    if signal == "traces":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=endpoint)


def _target(exporter: SpanExporter | MetricExporter) -> str:
    """Where an exporter sends (for log lines)."""
    return str(getattr(exporter, "_endpoint", "") or "the OTLP endpoint")
