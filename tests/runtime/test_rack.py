"""The rack runtime with real asyncio tasks and memory wires."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rack.model.scenario import Blueprint
from rack.runtime.rack import Rack
from tests.runtime.conftest import (
    COLLECTED,
    CRASHES,
    GATES,
    INSTANCES,
    gear,
    wait_until,
    wire,
)

Build = Callable[[dict[str, Any]], Blueprint]


async def test_fan_out_fan_in_and_port_routing(rack: Rack, blueprint: Build) -> None:
    bp = blueprint(
        {
            "name": "fan",
            "gears": [
                gear("src", "t_source", count=100),
                gear("a", "t_tag", tag="a", odd_port=True),
                gear("b", "t_tag", tag="b"),
                gear("all", "t_collect", key="all"),
                gear("odd", "t_collect", key="odd"),
            ],
            "wires": [
                wire("src.out", "a.in"),
                wire("src.out", "b.in"),
                wire("a.out", "all.in"),
                wire("b.out", "all.in"),
                wire("a.odd", "odd.in"),
            ],
        }
    )
    await rack.apply(bp)
    await rack.wait_ready(5)
    await wait_until(lambda: len(COLLECTED["all"]) + len(COLLECTED["odd"]) == 200)
    via = [m.meta["via"] for m in COLLECTED["all"]]
    assert via.count("b") == 100  # every target got every message (fan-out)
    assert via.count("a") == 50  # a's even numbers on `out` ...
    assert sorted(m.data["n"] for m in COLLECTED["odd"]) == list(range(1, 100, 2))  # odd on `odd`
    assert {m.meta["via"] for m in COLLECTED["odd"]} == {"a"}
    hops = COLLECTED["odd"][0].path
    assert [(h.gear, h.port) for h in hops] == [("src", "out"), ("a", "odd")]
    # per-producer order is kept across the memory wire
    b_ns = [m.data["n"] for m in COLLECTED["all"] if m.meta["via"] == "b"]
    assert b_ns == sorted(b_ns)


async def test_failing_message_goes_to_error_port_with_reason(rack: Rack, blueprint: Build) -> None:
    bp = blueprint(
        {
            "name": "errors",
            "gears": [
                gear("src", "t_source", count=10),
                gear("t", "t_tag", fail_on=3),
                gear("ok", "t_collect", key="ok"),
                gear("bad", "t_collect", key="bad"),
            ],
            "wires": [wire("src", "t"), wire("t.out", "ok"), wire("t.error", "bad")],
        }
    )
    await rack.apply(bp)
    await wait_until(lambda: len(COLLECTED["ok"]) == 9 and len(COLLECTED["bad"]) == 1)
    failed = COLLECTED["bad"][0]
    assert failed.data["n"] == 3
    assert failed.meta["error.reason"] == "ValueError: refusing n=3"
    assert failed.meta["error.gear"] == "t"
    assert failed.meta["error.port"] == "in"
    assert rack.stats()["t"]["errors"] == 1


async def test_unwired_error_is_counted_and_rack_keeps_running(
    rack: Rack, blueprint: Build
) -> None:
    bp = blueprint(
        {
            "name": "errors",
            "gears": [
                gear("src", "t_source", count=10),
                gear("t", "t_tag", fail_on=0),
                gear("ok", "t_collect", key="ok"),
            ],
            "wires": [wire("src", "t"), wire("t.out", "ok")],
        }
    )
    await rack.apply(bp)
    await wait_until(lambda: len(COLLECTED["ok"]) == 9)
    assert [m.data["n"] for m in COLLECTED["ok"]] == list(range(1, 10))
    assert rack.stats()["t"]["errors"] == 1


async def test_dead_gear_restarts_with_backoff_others_unaffected(
    rack: Rack, blueprint: Build
) -> None:
    bp = blueprint(
        {
            "name": "crash",
            "gears": [
                gear("src", "t_source", count=50),
                gear("c", "t_crash", times=3),
                gear("sink", "t_collect", key="sink"),
                gear("other", "t_tag"),
            ],
            "wires": [wire("src", "c"), wire("c.out", "sink")],
        }
    )
    await rack.apply(bp)
    await wait_until(lambda: len(COLLECTED["sink"]) == 50)
    assert CRASHES["c"] == 3
    assert rack.stats()["c"]["restarts"] == 3
    assert len(INSTANCES["c"]) == 4  # three crashed instances and the one that runs
    assert len(INSTANCES["other"]) == 1  # never restarted
    assert sorted(m.data["n"] for m in COLLECTED["sink"]) == list(range(50))  # nothing lost


async def test_slow_gear_back_pressures_its_producer(rack: Rack, blueprint: Build) -> None:
    GATES["g"] = gate = __import__("asyncio").Event()
    bp = blueprint(
        {
            "name": "bp",
            "gears": [
                gear("src", "t_source", count=1000),
                gear("slow", "t_gate", gate="g"),
                gear("sink", "t_collect", key="sink"),
            ],
            "wires": [wire("src", "slow"), wire("slow", "sink")],
        }
    )
    await rack.apply(bp)
    inbox = rack.slots["slow"].inbox
    await wait_until(lambda: len(inbox) == inbox.capacity)
    for _ in range(50):  # the producer stays blocked: the queue does not grow past capacity
        await __import__("asyncio").sleep(0)
    assert len(inbox) == inbox.capacity == 16
    assert rack.stats()["src"]["out"] == 17  # 16 queued + 1 in the slow gear's hands
    gate.set()
    await wait_until(lambda: len(COLLECTED["sink"]) == 1000)
    assert [m.data["n"] for m in COLLECTED["sink"]] == list(range(1000))


async def test_partial_reload_restarts_only_changed_gears(rack: Rack, blueprint: Build) -> None:
    doc: dict[str, Any] = {
        "name": "v1",
        "gears": [
            gear("keep", "t_tag", tag="k"),
            gear("change", "t_tag", tag="one"),
            gear("drop", "t_tag"),
            gear("sink", "t_collect", key="sink"),
        ],
        "wires": [wire("keep", "change"), wire("change", "sink")],
    }
    await rack.apply(blueprint(doc))
    await rack.wait_ready(5)
    keep, sink = rack.slots["keep"].gear, rack.slots["sink"].gear
    doc2 = {
        "name": "v2",
        "gears": [
            gear("keep", "t_tag", tag="k"),
            gear("change", "t_tag", tag="two"),
            gear("sink", "t_collect", key="sink"),
            gear("new", "t_collect", key="new"),
        ],
        "wires": [wire("keep", "change"), wire("change", "sink"), wire("change", "new")],
    }
    report = await rack.apply(blueprint(doc2))
    await rack.wait_ready(5)
    assert report.unchanged == ["keep", "sink"]
    assert report.restarted == ["change"]
    assert report.started == ["new"]
    assert report.stopped == ["drop"]
    assert rack.slots["keep"].gear is keep
    assert rack.slots["sink"].gear is sink
    assert len(INSTANCES["change"]) == 2
    assert "drop" not in rack.slots
    # the new wiring is live: one message through `change` reaches both sinks, tagged by v2
    rack.slots["change"].inbox.put("in", rack.slots["keep"].gear.ctx.new_msg(data={"n": 0}))
    await wait_until(lambda: len(COLLECTED["sink"]) == 1 and len(COLLECTED["new"]) == 1)
    assert COLLECTED["sink"][0].meta["via"] == "two"


async def test_restarted_gear_keeps_its_queued_messages(rack: Rack, blueprint: Build) -> None:
    import asyncio

    GATES["g"] = asyncio.Event()
    doc: dict[str, Any] = {
        "name": "v1",
        "gears": [
            gear("src", "t_source", count=10),
            gear("slow", "t_gate", gate="g"),
            gear("sink", "t_collect", key="sink"),
        ],
        "wires": [wire("src", "slow"), wire("slow", "sink")],
    }
    await rack.apply(blueprint(doc))
    inbox = rack.slots["slow"].inbox
    await wait_until(lambda: len(inbox) == 9)  # one in hand, nine queued
    GATES["h"] = asyncio.Event()
    doc["gears"][1] = gear("slow", "t_gate", gate="h")
    apply = asyncio.create_task(rack.apply(blueprint(doc)))
    GATES["g"].set()  # the old instance finishes the message in hand, then stops
    report = await apply
    assert report.restarted == ["slow"]
    GATES["h"].set()
    await wait_until(lambda: len(COLLECTED["sink"]) == 10)
    assert [m.data["n"] for m in COLLECTED["sink"]] == list(range(10))


async def test_drain_finishes_in_flight_messages(rack: Rack, blueprint: Build) -> None:
    import asyncio

    GATES["g"] = asyncio.Event()
    bp = blueprint(
        {
            "name": "drain",
            "gears": [
                gear("src", "t_source", count=12),
                gear("slow", "t_gate", gate="g"),
                gear("sink", "t_collect", key="sink"),
            ],
            "wires": [wire("src", "slow"), wire("slow", "sink")],
        }
    )
    await rack.apply(bp)
    await wait_until(lambda: rack.stats()["src"].get("out", 0) == 12)
    drain = asyncio.create_task(rack.drain(grace=5))
    await wait_until(lambda: rack.slots["src"]._draining)
    assert not drain.done()
    GATES["g"].set()
    assert await drain is True
    assert len(COLLECTED["sink"]) == 12


async def test_unreachable_nats_fails_apply_and_keeps_the_running_scenario(
    blueprint: Build,
) -> None:
    import socket

    from rack.settings import RackSettings
    from rack.wires.jetstream import WireError

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"nats://127.0.0.1:{closed.getsockname()[1]}"  # nothing listens there
    settings = RackSettings(nats_url=url, nats_connect_timeout=0.5)
    async with Rack(settings, name="test-rack") as rack:
        memory_only = blueprint(
            {"name": "v1", "gears": [gear("a", "t_tag"), gear("b", "t_collect", key="b")],
             "wires": [wire("a", "b")]}
        )  # fmt: skip
        await rack.apply(memory_only)
        await rack.wait_ready(5)
        with_standard = blueprint(
            {"name": "v2", "gears": [gear("a", "t_tag"), gear("c", "t_collect", key="c")],
             "wires": [{"from": "a.out", "to": "c.in"}]}
        )  # fmt: skip
        with pytest.raises(WireError, match=r"cannot connect to NATS at nats://127\.0\.0\.1:"):
            await rack.apply(with_standard)
        assert rack.blueprint is not None
        assert rack.blueprint.name == "v1"
        assert sorted(rack.slots) == ["a", "b"]
        assert rack.is_ready()
