"""One conformance suite, run against both wire transports: memory and standard (JetStream)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest

from rack.model.scenario import Blueprint
from rack.natsd import NatsServer
from rack.runtime.rack import Rack
from rack.settings import RackSettings
from tests.runtime.conftest import COLLECTED, GATES, gear, wait_until

Build = Callable[[dict[str, Any]], Blueprint]


@pytest.fixture(params=["memory", "standard"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def wired_rack(transport: str, nats_server: NatsServer) -> AsyncIterator[Rack]:
    settings = RackSettings(
        queue_depth=16,
        grace_period=10,
        restart_backoff_initial=0.01,
        restart_backoff_max=0.05,
        nats_url=nats_server.url if transport == "standard" else None,
    )
    async with Rack(settings, name="conformance") as rack:
        yield rack


def link(src: str, dst: str, transport: str) -> dict[str, str]:
    return {"from": src, "to": dst, "transport": transport}


async def test_order_per_producer_is_kept(
    wired_rack: Rack, blueprint: Build, transport: str
) -> None:
    bp = blueprint(
        {
            "name": f"order-{transport}",
            "gears": [gear("src", "t_source", count=500), gear("sink", "t_collect", key="sink")],
            "wires": [link("src", "sink", transport)],
        }
    )
    await wired_rack.apply(bp)
    await wait_until(lambda: len(COLLECTED["sink"]) >= 500, timeout=30)
    assert [m.data["n"] for m in COLLECTED["sink"]] == list(range(500))
    assert [(h.gear, h.port) for h in COLLECTED["sink"][0].path] == [("src", "out")]


async def test_fan_out_and_fan_in(wired_rack: Rack, blueprint: Build, transport: str) -> None:
    bp = blueprint(
        {
            "name": f"fan-{transport}",
            "gears": [
                gear("src", "t_source", count=100),
                gear("a", "t_tag", tag="a"),
                gear("b", "t_tag", tag="b"),
                gear("all", "t_collect", key="all"),
            ],
            "wires": [
                link("src", "a", transport),
                link("src", "b", transport),
                link("a", "all", transport),
                link("b", "all", transport),
            ],
        }
    )
    await wired_rack.apply(bp)
    await wait_until(lambda: len(COLLECTED["all"]) >= 200, timeout=30)
    by_tag = {t: [m.data["n"] for m in COLLECTED["all"] if m.meta["via"] == t] for t in "ab"}
    assert by_tag == {"a": list(range(100)), "b": list(range(100))}


async def test_slow_consumer_back_pressures_without_loss(
    wired_rack: Rack, blueprint: Build, transport: str
) -> None:
    GATES["g"] = gate = asyncio.Event()
    bp = blueprint(
        {
            "name": f"bp-{transport}",
            "gears": [
                gear("src", "t_source", count=300),
                gear("slow", "t_gate", gate="g"),
                gear("sink", "t_collect", key="sink"),
            ],
            "wires": [link("src", "slow", transport), link("slow", "sink", "memory")],
        }
    )
    await wired_rack.apply(bp)
    inbox = wired_rack.slots["slow"].inbox
    await wait_until(lambda: len(inbox) >= inbox.capacity, timeout=30)
    peak = len(inbox)
    for _ in range(100):
        await asyncio.sleep(0)
        peak = max(peak, len(inbox))
    assert peak <= inbox.capacity  # the queue in front of a slow gear stays bounded
    gate.set()
    await wait_until(lambda: len(COLLECTED["sink"]) >= 300, timeout=30)
    assert [m.data["n"] for m in COLLECTED["sink"]] == list(range(300))


async def test_drain_finishes_everything_accepted(
    wired_rack: Rack, blueprint: Build, transport: str, nats_server: NatsServer
) -> None:
    GATES["g"] = gate = asyncio.Event()
    bp = blueprint(
        {
            "name": f"drain-{transport}",
            "gears": [
                gear("src", "t_source", count=40),
                gear("slow", "t_gate", gate="g"),
                gear("sink", "t_collect", key="sink"),
            ],
            "wires": [link("src", "slow", "memory"), link("slow", "sink", transport)],
        }
    )
    await wired_rack.apply(bp)
    await wait_until(lambda: wired_rack.stats()["src"]["out"] >= 17, timeout=30)  # inbox full
    drain = asyncio.create_task(wired_rack.drain(grace=20))
    await wait_until(lambda: wired_rack.slots["src"]._draining)
    gate.set()
    assert await drain is True
    processed = sorted(m.data["n"] for m in COLLECTED["sink"])
    if transport == "memory":
        assert processed == list(range(40))  # drained to the end of the flow
        return
    # A standard wire stops consuming at drain: what was emitted into it is stored durably for
    # the next run instead. Every accepted message is processed or stored, none lost.
    nc = await nats.connect(nats_server.url)
    try:
        info = await nc.jetstream().stream_info("FLUX_DRAIN-STANDARD")
    finally:
        await nc.close()
    assert wired_rack.stats()["slow"]["out"] == 40
    assert len(processed) + info.state.messages == 40


async def test_reload_of_standard_wires_rebinds_and_removes_consumers(
    nats_server: NatsServer, blueprint: Build
) -> None:
    settings = RackSettings(queue_depth=16, nats_url=nats_server.url)
    doc: dict[str, Any] = {
        "name": "reload-std",
        "gears": [
            gear("src", "t_source", count=20),
            gear("a", "t_collect", key="a"),
            gear("b", "t_collect", key="b"),
        ],
        "wires": [link("src", "a", "standard"), link("src", "b", "standard")],
    }
    async with Rack(settings, name="reloader") as rack:
        await rack.apply(blueprint(doc))
        await wait_until(lambda: len(COLLECTED["a"]) >= 20 and len(COLLECTED["b"]) >= 20)
        doc["wires"] = [{**link("src", "a", "standard"), "max_deliver": 9}]  # b's wire removed
        report = await rack.apply(blueprint(doc))
        assert report.unchanged == ["src", "a", "b"]
        nc = await nats.connect(nats_server.url)
        try:
            names = [c.name async for c in _consumers(nc, "FLUX_RELOAD-STD")]
        finally:
            await nc.close()
        assert names == ["a__in__src__out"]  # b's consumer deleted, a's rebound with new options


async def _consumers(nc: Any, stream: str) -> AsyncIterator[Any]:
    for info in await nc.jetstream().consumers_info(stream):
        yield info
