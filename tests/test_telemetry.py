"""Rack telemetry, piece by piece: configuration from settings and OTEL_*, the W3C traceparent,
sampling, hop spans and their children (real SDK, in-memory span exporter), the duration
histogram, and the outbox's bounded buffer (with exporters that fail or hang)."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NoOpTracer, SpanContext, TraceFlags

from mixer.telemetry import attributes as hub_attributes
from rack.errors import SettingsError
from rack.gear.base import GearConfig
from rack.gear.context import GearContext
from rack.model.fluxmsg import FluxMsg
from rack.model.ids import FluxIdGenerator
from rack.settings import RackSettings
from rack.telemetry import config as config_module
from rack.telemetry import names
from rack.telemetry.config import TelemetryConfig
from rack.telemetry.metrics import Durations
from rack.telemetry.outbox import Outbox, SpanLane
from rack.telemetry.tracing import (
    GearProbe,
    RootIds,
    TraceBudget,
    Tracing,
    format_traceparent,
    parse_traceparent,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(autouse=True)
def no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(("OTEL_", "FLUXRIG_")) and key != "FLUXRIG_NATS_SERVER":
            monkeypatch.delenv(key)


def resolve(env: dict[str, str] | None = None, **values: Any) -> TelemetryConfig:
    return TelemetryConfig.resolve(RackSettings(**values), env or {})


# -- configuration ---------------------------------------------------------------------------------


def test_a_standalone_rack_without_otel_variables_exports_nothing() -> None:
    config = resolve()
    assert not config.enabled
    assert "standalone" in config.reason


@pytest.mark.parametrize(
    ("env", "values", "enabled"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, {}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, {}, True),
        ({}, {"telemetry": True}, True),
        ({}, {"mixer_url": "nats://mixer:4222"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, {"telemetry": False}, False),
        ({"OTEL_SDK_DISABLED": "true"}, {"telemetry": True}, False),
    ],
)
def test_when_telemetry_is_on(env: dict[str, str], values: dict[str, Any], enabled: bool) -> None:
    assert resolve(env, **values).enabled is enabled


def test_a_managed_rack_sends_to_its_mixer_unless_an_endpoint_is_set() -> None:
    config = resolve(mixer_url="tls://mixer.example:4222")
    assert config.protocols == {"traces": "http/protobuf", "metrics": "http/protobuf"}
    assert config.endpoints == {"traces": "http://mixer.example:4318",
                                "metrics": "http://mixer.example:4318"}  # fmt: skip
    ipv6 = resolve(mixer_url="nats://[fd00::1]:4222")
    assert ipv6.endpoints["traces"] == "http://[fd00::1]:4318"
    custom = resolve({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, mixer_url="nats://m:4222")
    assert custom.endpoints == {"traces": None, "metrics": None}  # the SDK reads the variable


@pytest.mark.skipif(
    importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is None,
    reason="the otlp-grpc extra is not installed",
)
def test_grpc_to_the_mixer_uses_its_grpc_port() -> None:
    config = resolve({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, mixer_url="nats://mixer:4222")
    assert config.protocols == {"traces": "grpc", "metrics": "grpc"}
    assert config.endpoints["metrics"] == "http://mixer:4317"
    mixed = resolve({"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc"}, telemetry=True)
    assert mixed.protocols == {"traces": "http/protobuf", "metrics": "grpc"}


def test_grpc_without_the_extra_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name.startswith("opentelemetry.exporter.otlp.proto.grpc") else real(name)

    monkeypatch.setattr(config_module.importlib.util, "find_spec", find_spec)
    with pytest.raises(SettingsError, match=r"otlp-grpc.*pip install 'fluxrig\[otlp-grpc\]'"):
        resolve({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, telemetry=True)
    assert not resolve({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}).enabled  # off: not checked


def test_unsupported_protocols_are_refused() -> None:
    with pytest.raises(SettingsError, match=r"http/json.*not supported"):
        resolve({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, telemetry=True)


def test_sampling_from_the_setting_and_the_otel_variables() -> None:
    default = resolve(telemetry=True)
    assert (default.sampler, default.ratio, default.parent_based) == (
        "parentbased_traceidratio", RackSettings().trace_ratio, True)  # fmt: skip
    assert resolve(telemetry=True, trace_ratio=0.5).ratio == 0.5
    arg = resolve({"OTEL_TRACES_SAMPLER_ARG": "0.25"}, telemetry=True, trace_ratio=0.5)
    assert arg.ratio == 0.25
    on = resolve({"OTEL_TRACES_SAMPLER": "always_on"}, telemetry=True)
    assert (on.ratio, on.parent_based, on.known_sampler) == (1.0, False, True)
    off = resolve({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, telemetry=True)
    assert (off.ratio, off.parent_based) == (0.0, True)
    other = resolve({"OTEL_TRACES_SAMPLER": "xray"}, telemetry=True)
    assert not other.known_sampler  # built by the SDK, consulted for every message
    with pytest.raises(SettingsError, match=r"OTEL_TRACES_SAMPLER_ARG='1\.5'"):
        resolve({"OTEL_TRACES_SAMPLER_ARG": "1.5"}, telemetry=True)


def test_the_attribute_names_are_the_ones_the_hub_promotes() -> None:
    for name in hub_attributes.__all__:
        if name != "PROMOTED":
            assert getattr(names, name) == getattr(hub_attributes, name), name
    assert set(hub_attributes.PROMOTED.values()) <= {
        names.SERVICE_NAME, names.RACK, names.ENTITY_ID, names.SCENARIO, names.SCENARIO_HASH,
        names.GEAR, names.WIRE, names.FLUX_ID,
    }  # fmt: skip


# -- traceparent -----------------------------------------------------------------------------------


def test_traceparent_round_trip() -> None:
    ctx = parse_traceparent(TRACEPARENT)
    assert ctx is not None
    assert ctx.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert ctx.span_id == 0x00F067AA0BA902B7
    assert ctx.trace_flags.sampled
    assert format_traceparent(ctx) == TRACEPARENT
    future = parse_traceparent("cc" + TRACEPARENT[2:] + "-what-comes-next")
    assert future is not None
    assert future.span_id == ctx.span_id


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        TRACEPARENT + "-extra",  # version 00 is exactly 55 characters
    ],
)
def test_malformed_traceparents_are_ignored(value: str) -> None:
    assert parse_traceparent(value) is None


# -- spans of hops, sampling -----------------------------------------------------------------------


class _Router:
    """An `Emitter` that keeps what it is given."""

    def __init__(self) -> None:
        self.sent: list[FluxMsg] = []

    def __call__(self, msg: FluxMsg, port: str = "out") -> bool:
        self.sent.append(msg)
        return True

    async def send(self, msg: FluxMsg, port: str = "out") -> None:
        self.sent.append(msg)

    async def ready(self) -> None:
        pass


def _probe(ratio: float, rate_limit: float = 0.0) -> tuple[GearProbe, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    ids = RootIds()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)), id_generator=ids,
                              shutdown_on_exit=False)  # fmt: skip
    provider.add_span_processor(SimpleSpanProcessor(memory))
    config = TelemetryConfig(
        enabled=True, reason="test", protocols={}, endpoints={}, ratio=ratio, rate_limit=rate_limit
    )
    tracing = Tracing(provider.get_tracer("test"), ids, config)
    tracing.use_scenario("s", "abc")
    probe = GearProbe("gw", tracing, tracer=provider.get_tracer("gear"), meter=None)  # type: ignore[arg-type]
    return probe, memory


def test_the_root_decision_keeps_the_ratio_and_the_sdk_agrees() -> None:
    probe, memory = _probe(0.25)
    router = _Router()
    emit = probe.emitter(router)
    for n in range(4000):
        emit(FluxMsg(n + 1))
    traced = [m for m in router.sent if m.trace]
    assert len(router.sent) == 4000
    assert 850 <= len(traced) <= 1150  # 1000 expected: not 0.25² (the SDK agrees)
    spans = memory.get_finished_spans()
    assert len(spans) == len(traced)  # every sampled message got its span, nothing else
    assert {s.name for s in spans} == {"gw ingress"}
    assert all(parse_traceparent(m.trace).trace_flags.sampled for m in traced)  # type: ignore[union-attr]
    span = spans[0]
    assert span.parent is None
    assert span.attributes is not None
    assert span.attributes[names.GEAR] == "gw"
    assert span.attributes[names.SCENARIO] == "s"
    assert span.attributes[names.SCENARIO_HASH] == "abc"


def test_the_rate_limit_caps_new_traces_whatever_the_ratio() -> None:
    probe, memory = _probe(1.0, rate_limit=5)
    router = _Router()
    emit = probe.emitter(router)
    for n in range(100):  # in far less than a second: the burst, one second's worth
        emit(FluxMsg(n + 1))
    assert sum(bool(m.trace) for m in router.sent) == 5
    assert len(memory.get_finished_spans()) == 5
    budget = TraceBudget(2)
    budget.stamp -= 10  # ten seconds later: refilled, up to the burst
    assert [budget.take() for _ in range(3)] == [True, True, False]
    assert all(TraceBudget(0).take() for _ in range(1000))  # 0: no limit


async def test_a_hop_is_the_child_of_the_message_and_the_parent_of_what_it_emits() -> None:
    probe, memory = _probe(1.0)
    router = _Router()
    emit = probe.emitter(router)
    parent = parse_traceparent(TRACEPARENT)
    assert parent is not None
    msg = FluxMsg(42, trace=TRACEPARENT)

    async def consume() -> tuple[str, FluxMsg]:
        probe.consumer = asyncio.current_task()
        child = probe.begin(msg, "in")
        emitted = FluxMsg(43)
        emit(emitted)  # emitted while processing: a child of the hop, not a new trace
        probe.end()
        return child, emitted

    child, emitted = await asyncio.create_task(consume())
    (hop,) = memory.get_finished_spans()
    assert hop.name == "gw"
    assert hop.parent is not None
    assert hop.parent.span_id == parent.span_id
    assert hop.context is not None
    assert hop.context.trace_id == parent.trace_id
    assert child == format_traceparent(hop.context)
    assert emitted.trace == child
    assert hop.attributes is not None
    assert hop.attributes[names.FLUX_ID] == "42"
    assert probe.current == ""
    other = FluxMsg(44)
    emit(other)  # not while processing: a new trace
    assert other.trace
    assert other.trace[3:35] != TRACEPARENT[3:35]


def test_an_unsampled_parent_is_passed_on_without_a_span() -> None:
    probe, memory = _probe(1.0)
    unsampled = TRACEPARENT[:-2] + "00"
    assert probe.begin(FluxMsg(1, trace=unsampled), "in") == unsampled
    probe.end()
    assert probe.begin(FluxMsg(2, trace="garbage"), "in") == ""
    assert memory.get_finished_spans() == ()


def test_a_failed_hop_has_an_error_status() -> None:
    probe, memory = _probe(1.0)
    probe.begin(FluxMsg(1, trace=TRACEPARENT), "in")
    probe.end(ValueError("bad amount"))
    (span,) = memory.get_finished_spans()
    assert span.status.status_code.name == "ERROR"
    assert span.status.description == "ValueError: bad amount"
    assert [e.name for e in span.events] == ["exception"]


def test_gear_context_has_no_op_tracer_and_meter_by_default() -> None:
    async def build() -> GearContext[GearConfig]:
        async with asyncio.TaskGroup() as tg:
            return GearContext(name="g", config=GearConfig(), ids=FluxIdGenerator(),
                               task_group=tg)  # fmt: skip

    ctx = asyncio.run(build())
    assert isinstance(ctx.tracer, NoOpTracer)
    ctx.meter.create_counter("x").add(1)  # a no-op, no error
    with ctx.tracer.start_as_current_span("own") as span:
        assert not span.is_recording()


# -- the duration histogram ------------------------------------------------------------------------


def test_durations_count_into_upper_inclusive_buckets() -> None:
    durations = Durations()
    for seconds in (0.000005, 0.00001, 0.000011, 0.2, 10.0, 60.0):
        durations.record(seconds)
    point = durations.point({names.GEAR: "g"}, time.time_ns())
    assert point is not None
    counts = list(point.bucket_counts)
    assert counts[0] == 2  # ≤ 10 µs, 10 µs included
    assert counts[1] == 1  # (10 µs, 25 µs]
    assert counts[names.DURATION_BOUNDS.index(0.25)] == 1
    assert counts[names.DURATION_BOUNDS.index(10.0)] == 1
    assert counts[-1] == 1  # over 10 s
    assert (point.count, point.min, point.max) == (6, 0.000005, 60.0)
    assert Durations().point({}, 0) is None  # nothing recorded: no point
    weighted = Durations()
    weighted.record(0.00002, 8)  # one timed message standing for eight
    weighted.record(0.2)
    point = weighted.point({}, 0)
    assert point is not None
    assert (point.count, point.bucket_counts[1], point.min, point.max) == (9, 8, 0.00002, 0.2)
    assert point.sum == pytest.approx(8 * 0.00002 + 0.2)


# -- the outbox ------------------------------------------------------------------------------------


class _Endpoint(SpanExporter):
    """An exporter whose endpoint is up, down, or hangs (until released)."""

    def __init__(self) -> None:
        self.up = False
        self.hang = threading.Event()
        self.released = threading.Event()
        self.received: list[int] = []
        self.attempts = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.attempts += 1
        if self.hang.is_set():
            self.released.wait(30)
        if not self.up:
            return SpanExportResult.FAILURE
        self.received.extend(_ids(spans))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.released.set()


def _spans(first: int, count: int) -> list[ReadableSpan]:
    return [
        ReadableSpan(name=str(n), context=SpanContext(1, n, False, TraceFlags(1)))
        for n in range(first, first + count)
    ]


def _ids(spans: Sequence[ReadableSpan]) -> Iterator[int]:
    return (span.context.span_id for span in spans if span.context is not None)


def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)  # polling another thread's state, bounded


def test_the_outbox_keeps_the_newest_while_the_endpoint_is_down_then_flushes_in_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fluxrig.telemetry")
    endpoint = _Endpoint()
    outbox = Outbox(limit=50)
    lane = SpanLane(outbox, endpoint, "http://collector/v1/traces")
    outbox.add(lane)
    outbox.start()
    try:
        for first in range(1, 101, 20):
            assert lane.export(_spans(first, 20)) is SpanExportResult.SUCCESS  # never blocks
        _until(lambda: outbox.buffered["spans"] == 50 and lane.inflight == 0)
        assert outbox.dropped == {"spans": 50}
        assert any("cannot export spans" in r.getMessage() for r in caplog.records)
        endpoint.up = True
        lane.export(_spans(101, 5))  # the buffer is full: 5 more of the oldest go
        _until(lambda: len(endpoint.received) == 50)
        assert endpoint.received == list(range(56, 106))  # the newest, oldest first
        assert outbox.buffered == {"spans": 0}
        assert outbox.dropped == {"spans": 55}
        _until(lambda: any("exporting again" in r.getMessage() for r in caplog.records))
        assert sum("cannot export" in r.getMessage() for r in caplog.records) == 1  # once
    finally:
        assert outbox.close(1.0)


def test_closing_with_an_endpoint_that_hangs_is_bounded() -> None:
    endpoint = _Endpoint()
    endpoint.hang.set()
    outbox = Outbox(limit=100)
    lane = SpanLane(outbox, endpoint, "http://collector/v1/traces")
    outbox.add(lane)
    outbox.start()
    lane.export(_spans(1, 10))
    _until(lambda: endpoint.attempts == 1)
    started = time.monotonic()
    assert not outbox.close(0.3)  # gave up: 10 spans left
    assert time.monotonic() - started < 0.3 + 0.5


def test_closing_during_an_outage_does_not_wait(caplog: pytest.LogCaptureFixture) -> None:
    endpoint = _Endpoint()
    outbox = Outbox(limit=100)
    lane = SpanLane(outbox, endpoint, "http://collector/v1/traces")
    outbox.add(lane)
    outbox.start()
    lane.export(_spans(1, 10))
    _until(lambda: endpoint.attempts >= 1 and lane.inflight == 0)
    started = time.monotonic()
    assert not outbox.close(5.0)
    assert time.monotonic() - started < 1.0
    assert any("10 items dropped at stop" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("ratio", "traced"), [(0.0, 0), (1.0, 500)])
def test_ratios_zero_and_one_trace_nothing_and_everything(ratio: float, traced: int) -> None:
    probe, memory = _probe(ratio)
    router = _Router()
    emit = probe.emitter(router)
    for n in range(500):
        emit(FluxMsg(n + 1))
    assert sum(bool(m.trace) for m in router.sent) == traced
    assert len(memory.get_finished_spans()) == traced
