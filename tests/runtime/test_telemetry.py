"""Rack telemetry end to end: real racks (io_tcp over real sockets, the embedded nats-server for
standard wires), the real OpenTelemetry SDK and OTLP/HTTP exporter, and the mixer's real OTLP hub
(`TelemetryHub`, DuckDB) as the receiver; what arrived is read back with its query API."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mixer.telemetry import TelemetryHub, TelemetrySection
from rack.gear.registry import GearRegistry
from rack.gears.io_tcp import TcpGear
from rack.model.ids import EntityId, EntityType
from rack.model.scenario import Blueprint, Scenario
from rack.preflight import preflight
from rack.runtime.rack import Rack
from rack.settings import RackSettings
from rack.telemetry import names

BOUND = 20.0  # seconds: generous upper bound for what takes well under a second
GEARS = GearRegistry.discover()
TELEMETRY_THREADS = ("OtelBatchSpanRecordProcessor", "OtelPeriodicExportingMetricReader",
                     "fluxrig-telemetry-outbox")  # fmt: skip


@pytest.fixture(autouse=True)
def otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL_*/FLUXRIG_* variable of the developer's shell; fast export cadence."""
    for key in list(os.environ):
        if key.startswith(("OTEL_", "FLUXRIG_")) and key != "FLUXRIG_NATS_SERVER":
            monkeypatch.delenv(key)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")


def hub_settings(http_port: int = 0) -> TelemetrySection:
    return TelemetrySection(grpc_port=0, http_port=http_port, flush_interval=0.02,
                            archive_interval=3600)  # fmt: skip


@pytest.fixture
async def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TelemetryHub]:
    async with TelemetryHub(hub_settings(), tmp_path / "hub") as started:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{started.http_port}")
        yield started


def settings(tmp_path: Path, **values: Any) -> RackSettings:
    """Every message traced when `trace_ratio` is 1: no rate limit unless a test sets one."""
    return RackSettings(
        **{"state_dir": tmp_path / "rack", "nats_port": 0, "grace_period": 2,
           "trace_rate_limit": 0, **values}
    )  # fmt: skip


def echo(*, standard: bool) -> Blueprint:
    """gw (io_tcp server) → pass (log, passes messages on) → back to gw: every frame echoed.
    The first wire is a standard wire (JetStream) when `standard`."""
    first: dict[str, Any] = {"from": "gw.out", "to": "pass.in"}
    if not standard:
        first["transport"] = "memory"
    doc = {
        "name": "tele-echo",
        "gears": [
            {"name": "gw", "type": "io_tcp", "config": {"mode": "server", "bind": "127.0.0.1:0"}},
            {"name": "pass", "type": "log", "config": {"level": "debug"}},
        ],
        "wires": [first, {"from": "pass.out", "to": "gw.in", "transport": "memory"}],
    }
    return preflight(doc, GEARS)


async def request(rack: Rack, frames: int) -> None:
    """Send `frames` lines to the gw gear and read every echo back."""
    await rack.wait_ready(BOUND)
    gear = rack.slots["gw"].gear
    assert isinstance(gear, TcpGear)
    host, port = gear.address
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for n in range(frames):
            writer.write(b"frame %d\n" % n)
            await writer.drain()
            assert await reader.readline() == b"frame %d\n" % n
    finally:
        writer.close()
        await writer.wait_closed()


async def poll(read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool]) -> Any:
    """Read until `done(value)`, or fail after BOUND (what the rack exports arrives in batches)."""
    async with asyncio.timeout(BOUND):
        while True:
            value = await read()
            if done(value):
                return value
            await asyncio.sleep(0.05)


def spans_of(hub: TelemetryHub, rack: str) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
    async def read() -> list[dict[str, Any]]:
        await hub.flush()
        return await hub.query.spans(rack=rack, limit=10_000)

    return read


def points_of(hub: TelemetryHub, rack: str) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
    async def read() -> list[dict[str, Any]]:
        await hub.flush()
        return await hub.query.metrics(rack=rack, limit=10_000)

    return read


def new_telemetry_threads(before: set[threading.Thread]) -> list[str]:
    """Telemetry threads started since `before` and still alive."""
    return [
        t.name
        for t in threading.enumerate()
        if t not in before and t.name.startswith(TELEMETRY_THREADS)
    ]


def traces(spans: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_trace.setdefault(span["trace_id"], []).append(span)
    return by_trace


# -- traces ----------------------------------------------------------------------------------------


async def test_a_request_is_one_trace_across_two_gears_and_a_standard_wire(
    tmp_path: Path, hub: TelemetryHub
) -> None:
    async with Rack(settings(tmp_path, telemetry=True, trace_ratio=1.0), name="edge-t") as rack:
        await rack.apply(echo(standard=True))
        await rack.wait_ready(BOUND)
        await request(rack, 3)
        spans = await poll(
            spans_of(hub, "edge-t"), lambda s: sum(len(t) == 3 for t in traces(s).values()) == 3
        )
    assert len(traces(spans)) == 3  # one trace per request
    for trace in traces(spans).values():
        by_name = {span["name"]: span for span in trace}
        ingress, passed, echoed = by_name["gw ingress"], by_name["pass"], by_name["gw"]
        assert ingress["parent_span_id"] is None  # the frame started the trace
        assert ingress["kind"] == "producer"
        assert passed["parent_span_id"] == ingress["span_id"]  # across the standard wire
        assert echoed["parent_span_id"] == passed["span_id"]  # across the memory wire
        assert (passed["kind"], echoed["kind"]) == ("consumer", "consumer")
        assert [s["gear"] for s in (ingress, passed, echoed)] == ["gw", "pass", "gw"]
        assert len({s["flux_id"] for s in trace}) == 1  # the same fluxMsg all along
        assert passed["attributes"][names.WIRE] == "gw.out → pass.in"
        assert echoed["attributes"][names.WIRE] == "pass.out → gw.in"
        for span in trace:
            assert span["rack"] == "edge-t"
            assert span["service_name"] == "fluxrig-rack"
            assert span["scenario"] == "tele-echo"
            assert span["scenario_hash"]
            assert span["status_code"] == "unset"
            assert span["ts_start"] <= span["ts_end"]


async def test_otlp_over_grpc(
    tmp_path: Path, hub: TelemetryHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc")  # the otlp-grpc extra
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{hub.grpc_port}")
    async with Rack(settings(tmp_path, telemetry=True, trace_ratio=1.0), name="edge-g") as rack:
        await rack.apply(echo(standard=False))
        await request(rack, 2)
        spans = await poll(spans_of(hub, "edge-g"), lambda s: len(s) == 6)
        await poll(points_of(hub, "edge-g"), lambda p: any(
            x["name"] == names.PROCESS_DURATION for x in p))  # fmt: skip
    assert len(traces(spans)) == 2


async def test_unsampled_messages_are_not_traced(tmp_path: Path, hub: TelemetryHub) -> None:
    async with Rack(settings(tmp_path, telemetry=True, trace_ratio=0.0), name="edge-u") as rack:
        await rack.apply(echo(standard=False))
        await request(rack, 20)
        points = await poll(
            points_of(hub, "edge-u"),
            lambda p: any(x["name"] == names.PROCESS_DURATION and x["count"] >= 20 for x in p),
        )
        await hub.flush()
        assert await hub.query.spans(rack="edge-u") == []
    assert points  # metrics flow, spans do not


# -- metrics ---------------------------------------------------------------------------------------


async def test_the_duration_histogram_counts_every_processed_message(
    tmp_path: Path, hub: TelemetryHub
) -> None:
    """Under load one message in TIME_EVERY is timed and stands for the untimed ones after it;
    one at a time, every message is timed: the histogram's count is exact either way."""
    from tests.mixer.fleet import until

    async with Rack(settings(tmp_path, telemetry=True), name="edge-h") as rack:
        await rack.apply(echo(standard=False))
        await request(rack, 20)  # one at a time: the inbox runs dry after each
        gear = rack.slots["gw"].gear
        assert isinstance(gear, TcpGear)
        reader, writer = await asyncio.open_connection(*gear.address)
        burst = 3000  # pipelined: the inbox stays full, one in TIME_EVERY timed
        writer.write(b"".join(b"b %d\n" % n for n in range(burst)))
        await writer.drain()
        for _ in range(burst):
            await reader.readline()
        writer.close()
        await writer.wait_closed()
        for name in ("pass", "gw"):  # gw processes the echoes it writes back
            probe = rack.slots[name].probe
            assert probe is not None
            durations = probe.durations

            def counted(d: Any = durations) -> bool:
                return sum(d.counts) == 20 + burst

            await until(counted, BOUND)
            assert 0 < durations.min <= durations.max
            assert durations.sum > 0


async def test_gear_and_wire_metrics_with_the_duration_histogram(
    tmp_path: Path, hub: TelemetryHub
) -> None:
    async with Rack(settings(tmp_path, telemetry=True), name="edge-m") as rack:
        await rack.apply(echo(standard=True))
        await rack.wait_ready(BOUND)
        await request(rack, 10)

        def complete(points: list[dict[str, Any]]) -> bool:
            seen = {(p["name"], p["gear"]) for p in points}
            histogram = [p for p in points if p["name"] == names.PROCESS_DURATION]
            return (
                {(names.MESSAGES, "gw"), (names.MESSAGES, "pass"), ("fluxrig.gear.bytes_in", "gw"),
                 (names.QUEUE_DEPTH, "pass"), ("fluxrig.wire.acked", None)} <= seen
                and sum(p["count"] for p in histogram if p["gear"] == "pass") >= 10
            )  # fmt: skip

        points = await poll(points_of(hub, "edge-m"), complete)

    histogram = next(
        p for p in points if p["name"] == names.PROCESS_DURATION and p["gear"] == "pass"
    )
    assert histogram["kind"] == "histogram"
    assert histogram["unit"] == "s"
    assert histogram["bucket_bounds"] == list(names.DURATION_BOUNDS)
    assert len(histogram["bucket_counts"]) == len(names.DURATION_BOUNDS) + 1
    assert sum(histogram["bucket_counts"]) == histogram["count"]
    assert 0 < histogram["min"] <= histogram["max"] < 10
    assert histogram["temporality"] == "cumulative"
    messages = [p for p in points if p["name"] == names.MESSAGES and p["gear"] == "pass"]
    newest = {p["attributes"][names.DIRECTION]: p for p in reversed(messages)}
    assert newest["in"]["value"] >= 10
    assert newest["out"]["value"] >= 10
    assert newest["in"]["kind"] == "sum"
    assert newest["in"]["monotonic"] is True
    for point in points:
        assert point["rack"] == "edge-m"
        assert point["service_name"] == "fluxrig-rack"
        assert point["resource"][names.RACK] == "edge-m"
    assert any(p["gear"] == "gw" and p["value"] >= 10 * len("frame 0\n")
               for p in points if p["name"] == "fluxrig.gear.bytes_in")  # fmt: skip
    wire = [p for p in points if p["name"] == "fluxrig.wire.acked"]
    assert {p["wire"] for p in wire} == {"gw.out → pass.in"}
    assert max(p["value"] for p in wire) >= 10
    assert {p["wire"] for p in points if p["name"] == names.WIRE_PENDING} == {"gw.out"}
    assert all(p["scenario"] == "tele-echo" for p in points if p["gear"])


# -- the buffer while the endpoint is away ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.slow
async def test_the_buffer_keeps_telemetry_through_an_outage_and_flushes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    async with Rack(settings(tmp_path, telemetry=True, trace_ratio=1.0), name="edge-o") as rack:
        await rack.apply(echo(standard=False))
        await request(rack, 25)  # nobody listens: 75 spans wait in the outbox
        telemetry = rack.telemetry
        assert telemetry is not None
        await poll(_now(lambda: telemetry.outbox.buffered["spans"]), lambda n: n == 75)
        async with TelemetryHub(hub_settings(port), tmp_path / "hub") as hub:  # it is back
            spans = await poll(spans_of(hub, "edge-o"), lambda s: len(s) >= 75)
            assert len(spans) == 75
            assert len(traces(spans)) == 25
            assert telemetry.outbox.dropped == {"spans": 0, "metrics": 0}
            await poll(points_of(hub, "edge-o"), lambda p: any(
                x["name"] == names.TELEMETRY_DROPPED for x in p))  # fmt: skip


@pytest.mark.slow
async def test_a_full_buffer_drops_the_oldest_and_counts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    rack_settings = settings(tmp_path, telemetry=True, trace_ratio=1.0, telemetry_buffer=30)
    async with Rack(rack_settings, name="edge-d") as rack:
        await rack.apply(echo(standard=False))
        telemetry = rack.telemetry
        assert telemetry is not None
        outbox = telemetry.outbox
        last_burst = ""
        for burst in range(1, 5):  # 10 requests (30 spans) at a time, while nobody listens
            last_burst = datetime.now(UTC).isoformat()
            await request(rack, 10)
            await poll(_now(lambda: outbox.buffered["spans"] + outbox.dropped["spans"]),
                       lambda n, burst=burst: n == 30 * burst)  # fmt: skip
        await poll(_now(lambda: (outbox.buffered["spans"], outbox.dropped["spans"])),
                   lambda counts: counts == (30, 90))  # fmt: skip
        async with TelemetryHub(hub_settings(port), tmp_path / "hub") as hub:
            spans = await poll(spans_of(hub, "edge-d"), lambda s: len(s) >= 30)
            assert len(spans) == 30
            assert len(traces(spans)) == 10  # the 30 newest spans: the last 10 requests
            assert all(span["ts_start"] >= last_burst for span in spans)

            def dropped_reported(points: list[dict[str, Any]]) -> bool:
                return any(
                    p["name"] == names.TELEMETRY_DROPPED
                    and p["value"] >= 90
                    and p["attributes"][names.SIGNAL] == "spans"
                    for p in points
                )

            await poll(points_of(hub, "edge-d"), dropped_reported)


def _now(read: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def value() -> Any:
        return read()

    return value


# -- off, pending, and an endpoint that hangs ------------------------------------------------------


async def test_telemetry_off_starts_no_provider_and_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = set(threading.enumerate())
    async with Rack(settings(tmp_path), name="edge-off") as rack:  # standalone, no OTEL_*
        assert not rack.telemetry_config.enabled
        await rack.apply(echo(standard=False))
        await request(rack, 3)
        assert rack.telemetry is None
        assert all(slot.probe is None for slot in rack.slots.values())
        assert new_telemetry_threads(before) == []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    async with Rack(settings(tmp_path, telemetry=False), name="edge-off2") as rack:
        await rack.apply(echo(standard=False))  # the setting wins over the variable
        assert rack.telemetry is None
        assert new_telemetry_threads(before) == []


async def test_a_rack_with_nothing_to_run_starts_no_telemetry(
    tmp_path: Path, hub: TelemetryHub
) -> None:
    before = set(threading.enumerate())
    async with Rack(settings(tmp_path, telemetry=True), name="edge-idle") as rack:
        await rack.apply(Blueprint(Scenario(name="idle"), {}, ()))  # what an idle rack applies
        assert rack.telemetry is None
        assert new_telemetry_threads(before) == []
        await rack.apply(echo(standard=False))
        assert rack.telemetry is not None
        assert len(new_telemetry_threads(before)) == 3
    await poll(_now(lambda: new_telemetry_threads(before)), lambda t: t == [])  # stopped


async def test_an_endpoint_that_hangs_never_slows_the_rack_and_stop_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept, read, never answer

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "60")  # each export hangs for a minute
    rack_settings = settings(tmp_path, telemetry=True, trace_ratio=1.0,
                             telemetry_stop_timeout=1.0)  # fmt: skip
    lags: list[float] = []
    async with server:
        rack = Rack(rack_settings, name="edge-h")
        async with rack:
            await rack.apply(echo(standard=False))
            async with _loop_lag(lags):
                await request(rack, 200)
                await poll(_now(lambda: len(held)), lambda n: n >= 1)  # an export is stuck
                await request(rack, 200)
            assert rack.telemetry is not None
            assert rack.telemetry.outbox.buffered["spans"] > 0
            started = time.monotonic()
        stopped_in = time.monotonic() - started
        for writer in held:
            writer.close()
    assert stopped_in < 1.0 + 1.5  # stop_timeout, plus the gears' own stop
    assert max(lags) < 0.5, f"the event loop stalled for {max(lags):.3f}s"


@contextlib.asynccontextmanager
async def _loop_lag(lags: list[float]) -> AsyncIterator[None]:
    """Measure how late 10 ms sleeps wake up while the body runs."""

    async def tick() -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.01
            await asyncio.sleep(0.01)
            lags.append(loop.time() - due)

    task = asyncio.create_task(tick())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- a managed rack: nothing while pending, then telemetry to its mixer ----------------------------


async def test_a_managed_rack_exports_nothing_while_pending_then_to_its_mixer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mixer.app import Mixer
    from rack.link import MixerLink
    from rack.link.agent import ScenarioAgent
    from tests.mixer.fleet import clean_environment, mixer_settings, scenario, store, until

    clean_environment(monkeypatch, tmp_path)
    before = set(threading.enumerate())
    async with Mixer(mixer_settings(tmp_path / "m")) as mixer:
        assert mixer.telemetry is not None
        http = mixer.telemetry.http_port
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{http}")
        store(mixer, "echo", scenario("echo", "gw"))
        await mixer.orchestrator.activate("echo:1.0.0")
        rack_settings = RackSettings(state_dir=tmp_path / "edge", nats_port=0,
                                     mixer_url=mixer.nats_url, trace_ratio=1.0)  # fmt: skip
        # (the default rate limit, 20 new traces/s, lets this test's one request through)
        async with Rack(rack_settings, name="edge-p") as rack:
            assert rack.telemetry_config.enabled  # managed: on by default
            agent: ScenarioAgent | None = None
            link = MixerLink(
                mixer.nats_url,
                "edge-p",
                running=lambda: agent.digest if agent is not None else None,
                backoff_initial=0.05,
                backoff_max=0.2,
            )
            agent = ScenarioAgent(rack, link, GEARS, start_timeout=5)
            async with link:
                task = asyncio.create_task(agent.run())
                try:
                    await link.wait_until(lambda lk: lk.status == "pending", BOUND)
                    assert rack.telemetry is None  # pending: no telemetry at all
                    assert new_telemetry_threads(before) == []
                    await mixer._rack_changed(mixer.registry.adopt("edge-p"))
                    await until(lambda: set(rack.slots) == {"gw"} and rack.is_ready(), BOUND)
                    assert rack.telemetry is not None
                    await request(rack, 1)
                    hub = mixer.telemetry
                    spans = await poll(spans_of(hub, "edge-p"), lambda s: len(s) >= 2)
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    assert rack.ids.machine_id  # the one the mixer's registry allocated
    entity = str(int(EntityId(EntityType.RACK, rack.ids.machine_id)))
    assert {s["entity_id"] for s in spans} == {entity}
    assert {s["scenario"] for s in spans} == {"echo"}
