"""Memory wires (bounded inbox, back-pressure, in-flight counting) and the Router on top of them.

No sleeps: a task is known to be parked when it signalled an event right before its first await,
and `settle()` lets every callback that is already runnable run (FIFO ready queue).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from rack.errors import MessageLimitError
from rack.gear.context import GearStats
from rack.model.fluxmsg import MAX_HOPS, FluxMsg, Hop
from rack.runtime.router import Router
from rack.wires.base import Outlet
from rack.wires.memory import Inbox, InflightCounter, MemoryOutlet


async def settle(rounds: int = 3) -> None:
    """Return only after everything runnable before this call has had its turn."""
    for _ in range(rounds):
        ping = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.call_soon(ping.set)
        await ping.wait()


async def parked(tg: asyncio.TaskGroup, waiting: Callable[[], Awaitable[Any]]) -> asyncio.Event:
    """Start `waiting()` in a task, return once it is blocked; the event is set when it returns."""
    started, finished = asyncio.Event(), asyncio.Event()

    async def run() -> None:
        started.set()
        await waiting()
        finished.set()

    tg.create_task(run())
    await started.wait()
    return finished


def msgs(n: int, start: int = 0) -> list[FluxMsg]:
    return [FluxMsg(i, ts=1) for i in range(start, start + n)]


# -- Inbox -----------------------------------------------------------------------------------


async def test_put_get_keeps_order_and_ports() -> None:
    inbox = Inbox("g", capacity=100)
    sent = [(f"in{i % 3}", m) for i, m in enumerate(msgs(50))]
    for port, m in sent:
        assert inbox.put(port, m) is True
    assert len(inbox) == 50
    got = [await inbox.get() for _ in range(50)]
    assert [(p, m.id) for p, m, _ in got] == [(p, m.id) for p, m in sent]
    assert all(a is b for (_, a, _), (_, b) in zip(got, sent, strict=True))
    assert len(inbox) == 0
    assert inbox.get_nowait() is None


async def test_get_nowait_keeps_order() -> None:
    inbox = Inbox("g", capacity=4)
    for m in msgs(3):
        inbox.put("in", m)
    taken = [inbox.get_nowait() for _ in range(4)]
    assert [t[1].id if t else None for t in taken] == [0, 1, 2, None]


def test_capacity_must_be_positive() -> None:
    for capacity in (0, -1):
        with pytest.raises(ValueError, match="inbox capacity must be >= 1"):
            Inbox("g", capacity=capacity)


async def test_put_reports_full_at_capacity_but_never_refuses() -> None:
    inbox = Inbox("g", capacity=3)
    assert [inbox.put("in", m) for m in msgs(3)] == [True, True, False]
    assert not inbox.has_room()
    assert inbox.put("in", FluxMsg(99)) is False  # still accepted: nothing is lost
    assert len(inbox) == 4
    await inbox.get()
    await inbox.get()
    assert inbox.has_room()


async def test_capacity_one() -> None:
    inbox = Inbox("g", capacity=1)
    assert inbox.put("in", FluxMsg(1)) is False
    assert not inbox.has_room()
    assert (await inbox.get())[1].id == 1
    assert inbox.has_room()


async def test_wait_room_returns_at_once_when_there_is_room() -> None:
    inbox = Inbox("g", capacity=2)
    inbox.put("in", FluxMsg(1))
    await inbox.wait_room()  # would hang the test if it blocked


async def test_wait_room_blocks_until_a_get_frees_room() -> None:
    inbox = Inbox("g", capacity=2)
    for m in msgs(2):
        inbox.put("in", m)
    async with asyncio.TaskGroup() as tg:
        room = await parked(tg, inbox.wait_room)
        await settle()
        assert not room.is_set()
        inbox.put("in", FluxMsg(3))  # more puts do not wake it
        await settle()
        assert not room.is_set()
        await inbox.get()  # 2 left: still at capacity
        await settle()
        assert not room.is_set()
        await inbox.get()  # 1 left: room
        await room.wait()
    assert len(inbox) == 1


async def test_wait_room_wakes_on_get_nowait_and_wakes_every_waiter() -> None:
    inbox = Inbox("g", capacity=1)
    inbox.put("in", FluxMsg(1))
    async with asyncio.TaskGroup() as tg:
        rooms = [await parked(tg, inbox.wait_room) for _ in range(3)]
        await settle()
        assert not any(r.is_set() for r in rooms)
        assert inbox.get_nowait() is not None
        for room in rooms:
            await room.wait()


async def test_cancelled_room_waiter_does_not_block_others() -> None:
    inbox = Inbox("g", capacity=1)
    inbox.put("in", FluxMsg(1))
    async with asyncio.TaskGroup() as tg:
        victim = tg.create_task(inbox.wait_room())
        room = await parked(tg, inbox.wait_room)
        await settle()
        victim.cancel()
        await settle()
        assert victim.cancelled()
        await inbox.get()
        await room.wait()


async def test_get_waits_for_a_put() -> None:
    inbox = Inbox("g")
    got: list[tuple[str, FluxMsg, object]] = []

    async def consume() -> None:
        got.append(await inbox.get())

    async with asyncio.TaskGroup() as tg:
        done = await parked(tg, consume)
        await settle()
        assert not done.is_set()
        m = FluxMsg(5)
        inbox.put("in2", m)
        await done.wait()
    assert got == [("in2", m, None)]


async def test_cancelled_get_loses_nothing() -> None:
    inbox = Inbox("g")
    async with asyncio.TaskGroup() as tg:
        getter = tg.create_task(inbox.get())
        await settle()
        getter.cancel()
        await settle()
    assert getter.cancelled()
    inbox.put("in", FluxMsg(1))
    assert (await inbox.get())[1].id == 1


async def test_fan_in_from_several_producers() -> None:
    inbox = Inbox("g", capacity=4)
    producers, per_producer = 5, 40
    received: list[tuple[str, int]] = []

    async def produce(k: int) -> None:
        outlet = MemoryOutlet(inbox, f"in{k}")
        for m in msgs(per_producer, start=k * 1000):
            if not outlet.put(m):
                await outlet.wait_room()

    async def consume() -> None:
        for _ in range(producers * per_producer):
            port, m, _ = await inbox.get()
            received.append((port, m.id))
            inbox.done()

    async with asyncio.TaskGroup() as tg:
        for k in range(producers):
            tg.create_task(produce(k))
        tg.create_task(consume())
    assert len(received) == producers * per_producer
    for k in range(producers):
        mine = [mid for port, mid in received if port == f"in{k}"]
        assert mine == list(range(k * 1000, k * 1000 + per_producer))  # per-wire order kept


async def test_slow_consumer_bounds_the_queue() -> None:
    capacity, total = 8, 300
    inbox = Inbox("slow", capacity=capacity)
    outlet = MemoryOutlet(inbox, "in")
    high_water = 0
    received: list[int] = []

    async def produce() -> None:
        nonlocal high_water
        for m in msgs(total):
            room = outlet.put(m)
            high_water = max(high_water, len(inbox))
            if not room:
                await outlet.wait_room()

    async def consume() -> None:
        for _ in range(total):
            _, m, _ = await inbox.get()
            await settle(5)  # "processing" takes several loop turns
            received.append(m.id)
            inbox.done()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(produce())
        tg.create_task(consume())
    assert received == list(range(total))
    assert high_water <= capacity + 1
    assert high_water >= capacity  # the producer really was ahead of the consumer


async def test_several_producers_overshoot_by_at_most_one_message_each() -> None:
    capacity, producers, each = 4, 3, 50
    inbox = Inbox("slow", capacity=capacity)
    high_water = 0

    async def produce(k: int) -> None:
        nonlocal high_water
        outlet = MemoryOutlet(inbox, "in")
        for m in msgs(each, start=k * 100):
            room = outlet.put(m)
            high_water = max(high_water, len(inbox))
            if not room:
                await outlet.wait_room()

    async def consume() -> None:
        for _ in range(producers * each):
            await inbox.get()
            await settle(2)
            inbox.done()

    async with asyncio.TaskGroup() as tg:
        for k in range(producers):
            tg.create_task(produce(k))
        tg.create_task(consume())
    assert capacity <= high_water <= capacity + producers


def test_outlet_repr() -> None:
    assert repr(MemoryOutlet(Inbox("decode"), "in")) == "MemoryOutlet(decode.in)"


# -- InflightCounter -------------------------------------------------------------------------


async def test_inflight_counts_puts_until_done() -> None:
    counter = InflightCounter()
    a, b = Inbox("a", inflight=counter), Inbox("b", inflight=counter)
    await counter.wait_zero()  # zero at the start
    a.put("in", FluxMsg(1))
    b.put("in", FluxMsg(2))
    b.put("in", FluxMsg(3))
    assert counter.count == 3
    async with asyncio.TaskGroup() as tg:
        zero = await parked(tg, counter.wait_zero)
        await a.get()
        await settle()
        assert counter.count == 3  # taken is not done
        a.done()
        await b.get()
        b.done()
        await settle()
        assert counter.count == 1
        assert not zero.is_set()
        await b.get()
        await settle()
        assert not zero.is_set()
        b.done()
        await zero.wait()
    assert counter.count == 0


async def test_inflight_stays_up_while_outputs_are_routed_before_done() -> None:
    # The slot's order: outputs are put downstream before the input is marked done.
    counter = InflightCounter()
    first, second = Inbox("first", inflight=counter), Inbox("second", inflight=counter)
    first.put("in", FluxMsg(1))
    async with asyncio.TaskGroup() as tg:
        zero = await parked(tg, counter.wait_zero)
        _, m, _ = await first.get()
        second.put("in", m)
        first.done()
        await settle()
        assert not zero.is_set()
        assert counter.count == 1
        await second.get()
        second.done()
        await zero.wait()


async def test_wait_zero_does_not_return_when_the_count_went_back_up() -> None:
    counter = InflightCounter()
    counter.incr()
    async with asyncio.TaskGroup() as tg:
        zero = await parked(tg, counter.wait_zero)
        counter.decr()  # zero for an instant...
        counter.incr()  # ...but busy again before the waiter ran
        await settle()
        assert not zero.is_set()
        counter.decr()
        await zero.wait()


def test_inflight_decr_never_goes_negative() -> None:
    counter = InflightCounter()
    counter.incr()
    counter.decr(5)
    assert counter.count == 0
    counter.incr()
    assert counter.count == 1


async def test_each_inbox_has_its_own_counter_by_default() -> None:
    a, b = Inbox("a"), Inbox("b")
    a.put("in", FluxMsg(1))
    await b._inflight.wait_zero()
    assert a._inflight.count == 1
    assert b._inflight.count == 0


# -- Router ----------------------------------------------------------------------------------


def make_router(routes: dict[str, tuple[Outlet, ...]]) -> tuple[Router, GearStats]:
    stats = GearStats()
    return Router("src", routes, stats), stats


async def test_single_route_delivers_the_same_message_with_a_hop() -> None:
    inbox = Inbox("dst")
    router, stats = make_router({"out": (MemoryOutlet(inbox, "in"),)})
    m = FluxMsg(1)
    assert router(m) is True
    port, got, _ = await inbox.get()
    assert port == "in"
    assert got is m
    assert got.path == [Hop("src", "out", got.path[0].ts)]
    assert got.src_id == "src"
    assert stats.get("out") == 1
    assert stats.get("dropped") == 0


async def test_fan_out_gives_each_target_its_own_copy() -> None:
    a, b, c = Inbox("a"), Inbox("b"), Inbox("c")
    router, stats = make_router(
        {"out": (MemoryOutlet(a, "in"), MemoryOutlet(b, "in"), MemoryOutlet(c, "x"))}
    )
    m = FluxMsg(7, meta={"k": "v"}, data={"n": 1}, raw=b"r")
    assert router(m) is True
    (_, ma, _), (_, mb, _), (pc, mc, _) = await a.get(), await b.get(), await c.get()
    assert pc == "x"
    assert ma is not mb
    assert mb is not mc
    assert ma is not mc
    assert ma == mb == mc
    assert all(x.path[-1].gear == "src" and x.path[-1].port == "out" for x in (ma, mb, mc))
    ma.meta["k"] = "changed"
    mb.meta["extra"] = "1"
    mb.add_hop("b", "out")
    assert mc.meta == {"k": "v"}
    assert ma.meta == {"k": "changed"}
    assert len(ma.path) == 1
    assert len(mb.path) == 2
    assert len(mc.path) == 1
    assert stats.get("out") == 1  # one message out of this gear, however many wires


async def test_fan_out_puts_to_every_target_and_reports_any_full() -> None:
    full, roomy = Inbox("full", capacity=1), Inbox("roomy", capacity=10)
    router, _ = make_router({"out": (MemoryOutlet(full, "in"), MemoryOutlet(roomy, "in"))})
    assert router(FluxMsg(1)) is False
    assert len(full) == 1
    assert len(roomy) == 1
    router2, _ = make_router({"out": (MemoryOutlet(roomy, "in"), MemoryOutlet(full, "in"))})
    assert router2(FluxMsg(2)) is False
    assert len(full) == 2
    assert len(roomy) == 2


async def test_unwired_port_counts_dropped() -> None:
    inbox = Inbox("dst")
    router, stats = make_router({"out": (MemoryOutlet(inbox, "in"),), "empty": ()})
    m = FluxMsg(1)
    assert router(m, "err") is True
    assert router(FluxMsg(2), "empty") is True
    assert stats.get("dropped") == 2
    assert stats.get("out") == 0
    assert len(inbox) == 0
    assert m.path[-1].gear == "src"
    assert m.path[-1].port == "err"
    assert not router.is_wired("err")
    assert not router.is_wired("empty")
    assert router.is_wired("out")


async def test_named_ports_route_separately() -> None:
    ok, err = Inbox("ok"), Inbox("err")
    router, _ = make_router({"out": (MemoryOutlet(ok, "in"),), "error": (MemoryOutlet(err, "in"),)})
    router(FluxMsg(1))
    router(FluxMsg(2), "error")
    assert (await ok.get())[1].id == 1
    _, e, _ = await err.get()
    assert e.id == 2
    assert e.path[-1].port == "error"


async def test_rewire_takes_effect_for_the_next_message() -> None:
    old, new = Inbox("old"), Inbox("new")
    routes: dict[str, tuple[Outlet, ...]] = {"out": (MemoryOutlet(old, "in"),)}
    router, stats = make_router(routes)
    router(FluxMsg(1))
    router.rewire({"out": (MemoryOutlet(new, "in"),)})
    router(FluxMsg(2))
    assert [m.id for _, m, _ in (await old.get(),)] == [1]
    assert len(old) == 0
    assert (await new.get())[1].id == 2
    router.rewire({})
    assert not router.is_wired("out")
    router(FluxMsg(3))
    assert stats.get("dropped") == 1


async def test_router_copies_the_routing_table() -> None:
    inbox = Inbox("dst")
    routes: dict[str, tuple[Outlet, ...]] = {"out": (MemoryOutlet(inbox, "in"),)}
    router, _ = make_router(routes)
    routes["out"] = ()
    assert router.is_wired("out")


async def test_router_enforces_the_hop_limit() -> None:
    inbox = Inbox("dst")
    router, _ = make_router({"out": (MemoryOutlet(inbox, "in"),)})
    looping = FluxMsg(1, path=[Hop("g", "out", i) for i in range(MAX_HOPS)])
    with pytest.raises(MessageLimitError, match="exceeds 64 hops"):
        router(looping)
    assert len(inbox) == 0


async def test_send_waits_for_room_before_putting() -> None:
    inbox = Inbox("dst", capacity=2)
    for m in msgs(2):
        inbox.put("in", m)
    router, stats = make_router({"out": (MemoryOutlet(inbox, "in"),)})
    async with asyncio.TaskGroup() as tg:
        sent = await parked(tg, lambda: router.send(FluxMsg(99)))
        await settle()
        assert not sent.is_set()
        assert len(inbox) == 2
        await inbox.get()
        await sent.wait()
    assert [(await inbox.get())[1].id for _ in range(2)] == [1, 99]
    assert stats.get("out") == 1


async def test_send_waits_for_every_fan_out_target() -> None:
    a, b = Inbox("a", capacity=1), Inbox("b", capacity=1)
    a.put("in", FluxMsg(1))
    b.put("in", FluxMsg(2))
    router, _ = make_router({"out": (MemoryOutlet(a, "in"), MemoryOutlet(b, "in"))})
    async with asyncio.TaskGroup() as tg:
        sent = await parked(tg, lambda: router.send(FluxMsg(3)))
        await a.get()
        await settle()
        assert not sent.is_set()  # b is still full
        await b.get()
        await sent.wait()
    assert len(a) == 1
    assert len(b) == 1


async def test_send_on_an_unwired_port_drops_without_waiting() -> None:
    router, stats = make_router({})
    await router.send(FluxMsg(1), "nowhere")
    assert stats.get("dropped") == 1


async def test_ready_waits_for_room_on_every_wire() -> None:
    a, b = Inbox("a", capacity=1), Inbox("b", capacity=5)
    router, _ = make_router({"out": (MemoryOutlet(b, "in"),), "alt": (MemoryOutlet(a, "in"),)})
    await router.ready()  # all have room: immediate
    assert router(FluxMsg(1), "alt") is False
    async with asyncio.TaskGroup() as tg:
        ready = await parked(tg, router.ready)
        await settle()
        assert not ready.is_set()
        await a.get()
        await ready.wait()
