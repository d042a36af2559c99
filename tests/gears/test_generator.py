"""The generator gear: count, templates, pacing, back-pressure, drain."""

from __future__ import annotations

import asyncio

import pydantic
import pytest

from rack.gear.testing import GearHarness
from rack.gears.generator import GeneratorConfig, GeneratorGear


async def spin(turns: int = 50) -> None:
    """Let the event loop run `turns` iterations (lets a producer run; not a timing wait)."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def finished(h: GearHarness, within: float = 5.0) -> None:
    gear = h.gear
    assert isinstance(gear, GeneratorGear)
    async with asyncio.timeout(within):
        await gear.finished.wait()


async def test_count_is_honoured_and_sequence_numbered() -> None:
    async with GearHarness(GeneratorGear, {"rate": 0, "count": 25}) as h:
        await finished(h)
        await spin()
        msgs = h.emitted()
        assert [m.raw for m in msgs] == [f"message {n}".encode() for n in range(25)]
        assert h.stats.get("generated") == 25
        ids = [m.id for m in msgs]
        assert ids == sorted(set(ids))
        assert all(m.src_id == "test" and m.path[-1].port == "out" for m in msgs)


async def test_payload_template_fills_n_and_id_and_keeps_other_braces() -> None:
    cfg = {"rate": 0, "count": 3, "payload": '{"seq": {n}, "id": "{id}", "x": {}}'}
    async with GearHarness(GeneratorGear, cfg) as h:
        await finished(h)
        for n, msg in enumerate(h.emitted()):
            assert msg.raw.decode() == f'{{"seq": {n}, "id": "{msg.id}", "x": {{}}}}'


async def test_size_data_and_meta_are_applied_per_message() -> None:
    cfg = {"rate": 0, "count": 2, "size": 100, "data": {"a": 1}, "meta": {"k": "v"}}
    async with GearHarness(GeneratorGear, cfg) as h:
        await finished(h)
        first, second = h.emitted()
        assert first.raw == b"x" * 100
        assert first.data == {"a": 1}
        assert first.meta == {"k": "v"}
        assert first.data is not second.data
        assert first.meta is not second.meta


def test_payload_and_size_are_exclusive() -> None:
    with pytest.raises(pydantic.ValidationError, match="either 'payload' or 'size'"):
        GeneratorConfig(payload="x", size=10)
    assert GeneratorConfig(size=10).size == 10


@pytest.mark.parametrize("bad", [{"rate": -1}, {"count": -1}, {"size": 2**30}, {"speed": 1}])
def test_bad_config_is_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        GeneratorGear.parse_config(bad)


def test_ports_have_no_input() -> None:
    ports = GeneratorGear.ports(GeneratorConfig())
    assert ports.inputs == ()
    assert ports.outputs == ("out", "error")


async def test_full_wire_stops_it_and_room_resumes_it() -> None:
    async with GearHarness(GeneratorGear, {"rate": 0}, emitter_capacity=5) as h:
        await h.emitter.wait_for("out", 5)
        await spin()
        assert len(h.emitted()) == 5
        assert h.stats.get("generated") == 5
        first = h.emitter.take()
        await h.emitter.wait_for("out", 5)
        await spin()
        second = h.emitter.take()
        assert len(second) == 5
        assert [m.raw for m in first + second] == [f"message {n}".encode() for n in range(10)]


async def test_drain_stops_production() -> None:
    async with GearHarness(GeneratorGear, {"rate": 0}) as h:
        await h.emitter.wait_for("out", 100)
        await h.gear.drain()
        produced = h.stats.get("generated")
        await spin()
        assert h.stats.get("generated") == produced
        await finished(h)


async def test_rate_paces_messages() -> None:
    # message n is due at n / rate: 20 messages at 200/s cannot finish before 95 ms
    loop = asyncio.get_running_loop()
    async with GearHarness(GeneratorGear, {"rate": 200, "count": 20}) as h:
        started = loop.time()
        await finished(h)
        elapsed = loop.time() - started
    assert len(h.emitted()) == 20
    assert elapsed >= 19 / 200 - 0.005


async def test_high_rate_sends_in_batches() -> None:
    # one sleep per message (≥ 1 ms each) would take 5 s; batching catches up with the schedule
    async with GearHarness(GeneratorGear, {"rate": 100_000, "count": 5000}) as h:
        await finished(h, within=3.0)
    assert len(h.emitted()) == 5000
    assert h.stats.get("generated") == 5000
