"""Standard wires against a real nats-server (JetStream, free port, temp store)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from rack.model.fluxmsg import FluxMsg
from rack.model.scenario import Endpoint, WirePlan
from rack.wires.base import Outlet
from rack.wires.jetstream import (
    Delivery,
    JetStreamInlet,
    JetStreamLink,
    StreamLimits,
    WireError,
    WireOptions,
    nak_delay,
    slug,
)
from rack.wires.jetstream.names import WireRoute

NATS_SERVER = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "nats-server"
SCENARIO = "Payment Processing"
SRC = Endpoint("pos-in", "out")
WIRE = WirePlan(SRC, Endpoint("decode", "in"), "standard")
FAST = WireOptions(max_deliver=3, backoff=(0.02, 0.05), ack_wait=5.0)


class Server:
    """nats-server -js on a free port; restartable on the same port and store."""

    def __init__(self, store: Path) -> None:
        self.store = store
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        args = ["-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)]
        self.proc = proc = await asyncio.create_subprocess_exec(
            str(NATS_SERVER), *args, stderr=asyncio.subprocess.PIPE
        )
        assert proc.stderr is not None
        async with asyncio.timeout(10):
            while b"Server is ready" not in (line := await proc.stderr.readline()):
                if not line:
                    raise RuntimeError(f"nats-server exited with {await proc.wait()}")
        self._drain = asyncio.ensure_future(_discard(proc.stderr))

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            await proc.wait()
            await self._drain


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = Server(tmp_path / "js")
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def link(server: Server) -> AsyncIterator[JetStreamLink]:
    async with await JetStreamLink.connect(server.url, rack="r1", scenario=SCENARIO) as lk:
        yield lk


class Collector:
    """A `deliver` callback that queues what it gets and settles it by a rule."""

    def __init__(self, settle: Callable[[Delivery], Awaitable[None]] | None = None) -> None:
        self.got: asyncio.Queue[tuple[str, FluxMsg, Delivery]] = asyncio.Queue()
        self.settle = settle

    async def __call__(self, port: str, msg: FluxMsg, delivery: Delivery) -> None:
        self.got.put_nowait((port, msg, delivery))
        if self.settle is not None:
            await self.settle(delivery)

    async def next(self, timeout: float = 5.0) -> tuple[str, FluxMsg, Delivery]:
        async with asyncio.timeout(timeout):
            return await self.got.get()


async def ok(d: Delivery) -> None:
    await d.ok()


async def refuse(d: Delivery) -> None:
    await d.fail(f"refused on attempt {d.attempt}")


def message(n: int) -> FluxMsg:
    msg = FluxMsg(1000 + n, data={"n": n}, trace="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")
    msg.add_hop(SRC.gear, SRC.port)
    return msg


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():  # noqa: ASYNC110 - polling server-side state
            await asyncio.sleep(0.01)


async def consumer_quiet(lk: JetStreamLink, wire: WirePlan = WIRE) -> bool:
    info = await lk._js.consumer_info(lk.stream, WireRoute.of(lk.slug, wire).durable)
    return info.num_ack_pending == 0 and info.num_pending == 0


async def setup(lk: JetStreamLink, collector: Collector, options: WireOptions = FAST) -> None:
    await lk.ensure_streams([WIRE], {WIRE: options})
    await lk.inlet(WIRE, options, collector)


# -- pure ------------------------------------------------------------------------------------


def test_names() -> None:
    assert slug("Payment Processing") == "payment_processing"
    assert slug("visa.v1 émission") == "visa_v1__mission"
    route = WireRoute.of("pay", WIRE)
    assert route.stream == "FLUX_PAY"
    assert route.source_subject == "flux.msg.pay.pos-in.out"
    assert route.durable == "decode__in__pos-in__out"
    assert route.replay_subject == "flux.msg.pay._replay.decode__in__pos-in__out"
    assert route.label == "pos-in.out → decode.in"


def test_limits_cover_the_loosest_wire() -> None:
    a = WireOptions(max_msgs=10, max_bytes=1000, max_age=60, duplicate_window=120)
    b = WireOptions(max_msgs=20, max_bytes=-1, max_age=30, duplicate_window=10)
    assert StreamLimits.covering([a, b]) == StreamLimits(20, -1, 60, 60)
    assert StreamLimits.covering([]) == StreamLimits()
    assert nak_delay(FAST, 1) == 0.02
    assert nak_delay(FAST, 7) == 0.05


# -- delivery ----------------------------------------------------------------------------------


async def test_publish_consume_ack(link: JetStreamLink) -> None:
    got = Collector(ok)
    await setup(link, got)
    outlet: Outlet = link.outlet(SRC)
    assert link.outlet(SRC) is outlet  # one per source port
    for n in range(3):
        assert outlet.put(message(n))
    received = [await got.next() for _ in range(3)]
    assert [(p, m.data["n"], d.attempt) for p, m, d in received] == [
        ("in", 0, 1),
        ("in", 1, 1),
        ("in", 2, 1),
    ]
    assert received[0][1].id == 1000
    assert [h.gear for h in received[0][1].path] == ["pos-in"]
    assert received[0][1].trace == message(0).trace
    await until(lambda: consumer_quiet(link))
    info = await link._js.stream_info(link.stream)
    assert info.state.messages == 0  # interest retention: acked by its only wire → gone


async def test_fail_naks_with_backoff_then_redelivers(link: JetStreamLink) -> None:
    async def first_fails(d: Delivery) -> None:
        await (d.fail("flaky") if d.attempt == 1 else d.ok())

    got = Collector(first_fails)
    await setup(link, got)
    link.outlet(SRC).put(message(1))
    _, first, d1 = await got.next()
    t0 = asyncio.get_running_loop().time()
    _, again, d2 = await got.next()
    assert (d1.attempt, d2.attempt) == (1, 2)
    assert again.id == first.id
    assert asyncio.get_running_loop().time() - t0 >= 0.015  # nak delay backoff[0] = 0.02
    await until(lambda: consumer_quiet(link))
    assert await link.dlq_list() == []


async def test_dead_letter_after_max_deliver_then_replay(link: JetStreamLink) -> None:
    got = Collector(refuse)
    await setup(link, got)
    link.outlet(SRC).put(message(7))
    attempts = [(await got.next())[2].attempt for _ in range(3)]
    assert attempts == [1, 2, 3]

    async def dead() -> bool:
        return len(await link.dlq_list()) == 1

    await until(dead)
    [letter] = await link.dlq_list()
    assert letter.wire == "pos-in.out → decode.in"
    assert letter.reason == "refused on attempt 3"
    assert letter.deliveries == 3
    assert letter.msg_id == 1007
    assert letter.consumer == "decode__in__pos-in__out"
    await until(lambda: consumer_quiet(link))
    assert got.got.empty()  # never handed to the gear a 4th time

    got.settle = ok
    assert await link.dlq_replay(letter.seq) == 1
    _, replayed, d = await got.next()
    assert (replayed.id, replayed.data, d.attempt) == (1007, {"n": 7}, 1)
    assert await link.dlq_list() == []
    await until(lambda: consumer_quiet(link))


async def test_replay_reaches_only_the_failed_wire(link: JetStreamLink) -> None:
    other = WirePlan(SRC, Endpoint("audit", "in"), "standard")
    await link.ensure_streams([WIRE, other], {})
    failing, auditing = Collector(refuse), Collector(ok)
    await link.inlet(WIRE, FAST, failing)
    await link.inlet(other, FAST, auditing)
    link.outlet(SRC).put(message(1))
    assert (await auditing.next())[1].id == 1001
    for _ in range(3):
        await failing.next()

    async def dead() -> bool:
        return len(await link.dlq_list()) == 1

    await until(dead)
    failing.settle = ok
    assert await link.dlq_replay() == 1
    assert (await failing.next())[1].id == 1001
    await until(lambda: consumer_quiet(link))
    await until(lambda: consumer_quiet(link, other))
    assert auditing.got.empty()


async def test_dlq_purge(link: JetStreamLink) -> None:
    got = Collector(refuse)
    await setup(link, got, WireOptions(max_deliver=1))
    for n in range(3):
        link.outlet(SRC).put(message(n))

    async def three() -> bool:
        return len(await link.dlq_list()) == 3

    await until(three)
    assert len(await link.dlq_list(limit=2)) == 2
    assert await link.dlq_purge() == 3
    assert await link.dlq_list() == []
    assert await link.dlq_replay() == 0


async def test_malformed_payload_goes_to_dead_letters(link: JetStreamLink) -> None:
    got = Collector(ok)
    await setup(link, got)
    route = WireRoute.of(link.slug, WIRE)
    await link._js.publish(route.source_subject, b"\xff not cbor")
    link.outlet(SRC).put(message(2))  # the wire goes on with the next message
    assert (await got.next())[1].id == 1002

    async def dead() -> bool:
        return len(await link.dlq_list()) == 1

    await until(dead)
    [letter] = await link.dlq_list()
    assert letter.reason.startswith("malformed payload: not valid CBOR")
    assert letter.msg_id is None
    assert letter.deliveries == 1
    await until(lambda: consumer_quiet(link))


async def test_unacked_past_max_deliver_is_dead_lettered(link: JetStreamLink) -> None:
    """A message whose attempts time out (gear hung) is not dropped by NATS: it dead-letters."""
    got = Collector()  # never settles
    await setup(link, got, WireOptions(max_deliver=2, ack_wait=0.2))
    link.outlet(SRC).put(message(3))
    assert [(await got.next())[2].attempt for _ in range(2)] == [1, 2]

    async def dead() -> bool:
        return len(await link.dlq_list()) == 1

    await until(dead)
    [letter] = await link.dlq_list()
    assert letter.deliveries == 3
    assert "not acknowledged within ack_wait (0.2s) in 2 deliveries" in letter.reason
    assert got.got.empty()


# -- publishing --------------------------------------------------------------------------------


async def test_duplicates_within_window_are_dropped(link: JetStreamLink) -> None:
    await link.ensure_streams([WIRE], {WIRE: FAST})  # consumer exists: messages are retained
    outlet = link.outlet(SRC)
    msg = message(1)
    outlet.put(msg)
    outlet.put(msg)  # a retried publish of the same emission
    passed_on = msg.copy()
    passed_on.add_hop("decode", "out")  # same fluxID, later hop: a different emission
    link.outlet(Endpoint("decode", "out")).put(passed_on)
    no_id = FluxMsg(0, data=1)
    outlet.put(no_id)
    outlet.put(no_id)  # id 0: never deduplicated
    await link.flush()
    info = await link._js.stream_info(link.stream)
    assert info.state.messages == 3
    assert link.stats()["published"] == 5


async def test_outlet_window_back_pressure(link: JetStreamLink) -> None:
    await link.ensure_streams([WIRE], {WIRE: FAST})
    outlet = link.outlet(SRC, window=3)
    assert [outlet.put(message(n)) for n in range(3)] == [True, True, False]
    assert not outlet.has_room()
    async with asyncio.timeout(5):
        await outlet.wait_room()
    assert outlet.has_room()
    await link.flush()
    assert outlet.pending == 0


async def test_publish_retried_until_the_stream_exists(server: Server) -> None:
    lk = await JetStreamLink.connect(server.url, rack="r1", scenario=SCENARIO, publish_timeout=0.5)
    async with lk:
        outlet = lk.outlet(SRC, window=2)
        outlet.put(message(1))
        assert not outlet.put(message(2))

        async def retried() -> bool:
            return outlet.retries >= 2

        await until(retried)  # no stream yet: no responders, retried with back-off
        assert outlet.pending == 2
        await lk.ensure_streams([WIRE], {WIRE: FAST})
        async with asyncio.timeout(5):
            await lk.flush()
        assert (await lk._js.stream_info(lk.stream)).state.messages == 2


async def test_unacknowledged_publishes_time_out_and_are_retried(server: Server) -> None:
    lk = await JetStreamLink.connect(server.url, rack="r1", scenario=SCENARIO, publish_timeout=0.2)
    async with lk:
        # Someone hears the subject but never answers: no "no responders", no ack either.
        silent = await lk._nc.subscribe("flux.msg.>")
        outlet = lk.outlet(SRC)
        for n in range(3):
            outlet.put(message(n))

        async def timed_out_twice() -> bool:
            return outlet.retries >= 6

        await until(timed_out_twice)  # each publish: no ack within 0.2 s, retried, again
        assert outlet.pending == 3
        assert lk.publisher.outstanding == 3
        await lk.ensure_streams([WIRE], {WIRE: FAST})
        async with asyncio.timeout(5):
            await lk.flush()
        assert lk.publisher.outstanding == 0
        assert (await lk._js.stream_info(lk.stream)).state.messages == 3
        await silent.unsubscribe()


async def test_publishes_survive_a_server_restart(server: Server) -> None:
    lk = await JetStreamLink.connect(server.url, rack="r1", scenario=SCENARIO, publish_timeout=0.3)
    async with lk:
        await lk.ensure_streams([WIRE], {WIRE: FAST})
        outlet = lk.outlet(SRC)
        await server.stop()
        for n in range(50):
            outlet.put(message(n))
        await server.start()
        async with asyncio.timeout(10):
            await lk.flush()
        assert (await lk._js.stream_info(lk.stream)).state.messages == 50  # no loss, no dups
        assert outlet.retries > 0


# -- lifecycle ---------------------------------------------------------------------------------


async def test_durable_consumer_resumes_after_reconnect(server: Server) -> None:
    first = Collector()
    async with await JetStreamLink.connect(server.url, rack="r1", scenario=SCENARIO) as lk:
        await setup(lk, first)
        for n in range(5):
            lk.outlet(SRC).put(message(n))
        await lk.flush()
        for _ in range(2):
            await (await first.next())[2].ok()
        await lk.drain()  # stop receiving; buffered but not handed over: given back
        assert lk.publisher.outstanding == 0
        while not first.got.empty():  # handed over but unprocessed at shutdown: given back
            await first.got.get_nowait()[2].release()

    second = Collector(ok)
    async with await JetStreamLink.connect(server.url, rack="r1", scenario=SCENARIO) as lk:
        await setup(lk, second)
        seen = sorted([(await second.next())[1].data["n"] for _ in range(3)])
        assert seen == [2, 3, 4]
        await until(lambda: consumer_quiet(lk))
        assert second.got.empty()


async def test_drain_gives_back_what_was_not_handed_over(server: Server) -> None:
    gate = asyncio.Event()

    async def held(d: Delivery) -> None:
        await gate.wait()  # the gear's inbox is full: back-pressure
        await d.ok()

    first = Collector(held)
    async with await JetStreamLink.connect(server.url, rack="r1", scenario=SCENARIO) as lk:
        await setup(lk, first)
        for n in range(4):
            lk.outlet(SRC).put(message(n))
        await first.next()
        draining = asyncio.ensure_future(lk.drain())
        gate.set()
        async with asyncio.timeout(5):
            await draining
        assert first.got.empty()  # messages 1-3 were not handed over, but nak'd

    second = Collector(ok)
    async with await JetStreamLink.connect(server.url, rack="r1", scenario=SCENARIO) as lk:
        await setup(lk, second)
        got = [(await second.next(timeout=2))[1].data["n"] for _ in range(3)]  # < ack_wait
        assert sorted(got) == [1, 2, 3]
        await until(lambda: consumer_quiet(lk))


async def test_settling_after_the_link_closed_is_quiet(server: Server) -> None:
    got = Collector()
    async with await JetStreamLink.connect(server.url, rack="r1", scenario=SCENARIO) as lk:
        await setup(lk, got)
        lk.outlet(SRC).put(message(1))
        _, _, delivery = await got.next()
    # The connection is gone: the ack cannot be sent, which is not an error for the gear (the
    # server redelivers after ack_wait); the delivery counts as settled.
    await delivery.ok()
    assert delivery.settled
    await delivery.ok()  # settling twice is a no-op


async def test_ensure_streams_is_idempotent_and_updates(link: JetStreamLink) -> None:
    await link.ensure_streams([WIRE], {WIRE: FAST})
    await link.ensure_streams([WIRE], {WIRE: FAST})
    await link.ensure_streams([WIRE], {WIRE: WireOptions(max_msgs=100, max_ack_pending=7)})
    info = await link._js.stream_info(link.stream)
    assert (info.config.name, info.config.max_msgs) == ("FLUX_PAYMENT_PROCESSING", 100)
    assert info.config.subjects == ["flux.msg.payment_processing.>"]
    consumer = await link._js.consumer_info(link.stream, "decode__in__pos-in__out")
    assert consumer.config.max_ack_pending == 7
    dlq = await link._js.stream_info(link.dlq_stream)
    assert dlq.config.subjects == ["flux.dlq.payment_processing.>"]


async def test_one_subscriber_per_wire(link: JetStreamLink, server: Server) -> None:
    got = Collector(ok)
    await setup(link, got)
    with pytest.raises(WireError, match="already has an inlet"):
        await link.inlet(WIRE, FAST, got)
    await link._inlets["decode__in__pos-in__out"].aclose()  # closed directly: may bind again
    inlet = await link.inlet(WIRE, FAST, got)
    link.outlet(SRC).put(message(1))
    assert (await got.next())[1].id == 1001
    async with await JetStreamLink.connect(server.url, rack="r2", scenario=SCENARIO) as other:
        with pytest.raises(WireError, match="still bound to another subscriber"):
            await other.inlet(WIRE, FAST, got, bind_timeout=0.1)
    assert link._inlets["decode__in__pos-in__out"] is inlet
    assert isinstance(inlet, JetStreamInlet)


async def test_connect_failure_is_a_wire_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(WireError, match="cannot connect to NATS"):
        await JetStreamLink.connect(
            f"nats://127.0.0.1:{port}", rack="r1", scenario=SCENARIO, connect_timeout=0.3
        )


async def test_closed_link_refuses_puts_and_reports_abandoned(server: Server) -> None:
    lk = await JetStreamLink.connect(server.url, rack="r1", scenario=SCENARIO, publish_timeout=0.2)
    outlet = lk.outlet(SRC)
    outlet.put(message(1))  # no stream: cannot be stored
    flushing = asyncio.ensure_future(lk.flush())
    await lk.aclose()
    await lk.aclose()  # idempotent
    with pytest.raises(WireError, match="1 messages not stored"):
        await flushing
    with pytest.raises(WireError, match="link is closed"):
        outlet.put(message(2))
