"""Cross-rack standard wires: two racks, each on its own nats-server (JetStream domain = rack
name) that is a leaf node of a hub (its own JetStream), all real processes on fixed free ports
with temp stores, so the hub or a rack can be stopped and started again where it was.

The hub lets each rack's leaf connection through only what `cross_permissions` (+ `hub_allow`)
lists, as the mixer's hub does; one test runs on an open hub too (plain leaf connections: the
racks' local subjects then leak to each other, which the data path must survive)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest

from rack.gear import Emitter, Gear, GearConfig, GearRegistry, Output
from rack.model.fluxmsg import FluxMsg
from rack.model.scenario import Blueprint
from rack.natsd import NatsServer, NatsServerConfig, NatsUser, Permissions
from rack.preflight import preflight
from rack.runtime.rack import Rack
from rack.settings import RackSettings
from rack.wires.jetstream import JetStreamLink
from rack.wires.jetstream.names import cross_permissions, cross_subject, hub_allow, slug

log = logging.getLogger(__name__)

FEEDS: dict[str, asyncio.Queue[int]] = {}
KEPT: defaultdict[str, list[int]] = defaultdict(list)
TIMEOUT = 30.0


class FeedConfig(GearConfig):
    key: str


class Feed(Gear[FeedConfig]):
    type_name = "x_feed"
    summary = "emits one message per number put on FEEDS[key]"
    config_model = FeedConfig
    inputs = ()

    async def start(self, emit: Emitter) -> None:
        self.ctx.spawn(self._feed(emit, FEEDS.setdefault(self.config.key, asyncio.Queue())))

    async def _feed(self, emit: Emitter, queue: asyncio.Queue[int]) -> None:
        while True:
            n = await queue.get()
            await emit.send(self.ctx.new_msg(data={"n": n}))


class KeepConfig(GearConfig):
    key: str


class Keep(Gear[KeepConfig]):
    type_name = "x_keep"
    summary = "appends each message's n to KEPT[key]"
    config_model = KeepConfig
    outputs = ()

    async def process(self, msg: FluxMsg, port: str) -> Output:
        KEPT[self.config.key].append(msg.data["n"])
        return None


@pytest.fixture
def registry() -> GearRegistry:
    FEEDS.clear()
    KEPT.clear()
    reg = GearRegistry()
    for gear in (Feed, Keep):
        reg.register(gear)
    return reg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - state of other processes, no single event
            await asyncio.sleep(0.02)


class Fleet:
    """A hub and racks `a` and `b`, each rack on its own leaf nats-server; every process can be
    stopped and started again on the same ports and store."""

    def __init__(self, root: Path, users: list[NatsUser] | None = None) -> None:
        self.root = root
        self.hub_port, self.leaf_port = free_port(), free_port()
        self.hub_users = users or []
        self.hub: NatsServer | None = None
        self.ports = {name: free_port() for name in ("a", "b")}
        self.servers: dict[str, NatsServer] = {}
        self.racks: dict[str, Rack] = {}

    async def start_hub(self) -> None:
        config = NatsServerConfig(
            port=self.hub_port,
            store_dir=self.root / "hub",
            server_name="hub",
            domain="hub",
            leafnode_port=self.leaf_port,
            users=self.hub_users,
        )
        self.hub = NatsServer(config)
        await self.hub.start()

    async def stop_hub(self) -> None:
        hub, self.hub = self.hub, None
        if hub is not None:
            await hub.aclose()

    async def start_rack(self, name: str, blueprint: Blueprint) -> Rack:
        creds = f"{name}:pw-{name}@" if self.hub_users else ""
        server = NatsServer(
            NatsServerConfig(
                port=self.ports[name],
                store_dir=self.root / f"{name}-js",
                server_name=name,
                domain=name,
                leaf_remotes=[f"nats://{creds}127.0.0.1:{self.leaf_port}"],
            )
        )
        await server.start()
        self.servers[name] = server
        settings = RackSettings(
            name=name,
            state_dir=self.root / f"{name}-state",
            nats_url=server.url,
            grace_period=5,
            queue_depth=64,
            machine_id=1 if name == "a" else 2,
            restart_backoff_initial=0.01,
            restart_backoff_max=0.05,
        )
        rack = Rack(settings, name=name)
        await rack.__aenter__()
        self.racks[name] = rack
        await rack.apply(blueprint.for_rack(name))
        await rack.wait_ready(timeout=10)
        return rack

    async def stop_rack(self, name: str) -> None:
        rack = self.racks.pop(name, None)
        if rack is not None:
            await rack.drain(grace=5)
            await rack.aclose()
        server = self.servers.pop(name, None)
        if server is not None:
            await server.aclose()

    def link(self, name: str) -> JetStreamLink:
        link = self.racks[name].standard.link
        assert link is not None
        return link

    def wire_stats(self, name: str, label: str) -> dict[str, Any]:
        stats: dict[str, Any] = self.racks[name].standard.stats()["wires"][label]
        return stats

    async def aclose(self) -> None:
        for name in list(self.racks):
            await self.stop_rack(name)
        for server in self.servers.values():
            await server.aclose()
        await self.stop_hub()


def hub_users(blueprint: Blueprint) -> list[NatsUser]:
    """One leaf user per rack, allowed exactly its cross subjects and inboxes."""
    users = []
    for rack, perms in cross_permissions(blueprint).items():
        publish, subscribe = hub_allow(rack, perms)
        allow = Permissions(publish=tuple(publish), subscribe=tuple(subscribe))
        users.append(
            NatsUser(
                user=rack,
                password=f"pw-{rack}",
                permissions=allow,
                connection_types=("LEAFNODE",),
            )
        )
    return users


@pytest.fixture(params=["restricted"])
async def fleet(
    request: pytest.FixtureRequest, tmp_path: Path, registry: GearRegistry
) -> AsyncIterator[Fleet]:
    users = hub_users(preflight(relay(extra=True), registry)) if request.param != "open" else []
    fleet = Fleet(tmp_path, users)
    await fleet.start_hub()
    try:
        yield fleet
    finally:
        await fleet.aclose()


def relay(*, with_wire: bool = True, extra: bool = False) -> dict[str, Any]:
    """feed@a ─standard─► keep@b (and, with `extra`, feed2@a ─► keep2@b)."""
    gears = [
        {"name": "feed", "type": "x_feed", "deploy": "a", "config": {"key": "feed"}},
        {"name": "keep", "type": "x_keep", "deploy": "b", "config": {"key": "keep"}},
    ]
    wire = {"backoff": [0.05, 0.2, 0.5], "ack_wait": 10}
    wires = [{"from": "feed", "to": "keep", **wire}] if with_wire else []
    if extra:
        gears += [
            {"name": "feed2", "type": "x_feed", "deploy": "a", "config": {"key": "feed2"}},
            {"name": "keep2", "type": "x_keep", "deploy": "b", "config": {"key": "keep2"}},
        ]
        wires.append({"from": "feed2", "to": "keep2", **wire})
    racks = [{"name": "a"}, {"name": "b"}]
    return {"name": "Relay", "racks": racks, "gears": gears, "wires": wires}


OUT = "feed.out → keep.in (to b)"
IN = "feed.out → keep.in (from a)"
FORWARDER = "keep__in__feed__out__to__b"
RECEIVER = "keep__in__feed__out__from__a"


def produce(key: str, numbers: range) -> None:
    queue = FEEDS[key]
    for n in numbers:
        queue.put_nowait(n)


def stored_on_a(fleet: Fleet, count: int) -> Callable[[], bool]:
    """True once `count` messages of rack a are confirmed by its own stream (durable there)."""
    return lambda: fleet.link("a").stats()["published"] >= count


def received(key: str, count: int) -> Callable[[], bool]:
    return lambda: len(set(KEPT[key])) >= count


async def consumer_exists(link: JetStreamLink, durable: str) -> bool:
    try:
        await link._js.consumer_info(link.stream, durable)
    except nats.js.errors.NotFoundError:
        return False
    return True


@pytest.mark.parametrize("fleet", ["restricted", "open"], indirect=True)
async def test_messages_cross_from_a_to_b(fleet: Fleet, registry: GearRegistry) -> None:
    bp = preflight(relay(), registry)
    await fleet.start_rack("b", bp)
    await fleet.start_rack("a", bp)
    produce("feed", range(100))
    await until(received("keep", 100))
    assert sorted(KEPT["keep"]) == list(range(100))

    await until(lambda: fleet.wire_stats("a", OUT)["forwarded"] >= 100)
    sent = fleet.wire_stats("a", OUT)
    assert (sent["peer"], sent["dead_lettered"], sent["acked"]) == ("b", 0, sent["forwarded"])
    await until(lambda: fleet.wire_stats("b", IN)["acked"] >= 100)
    assert fleet.wire_stats("b", IN)["peer"] == "a"
    # b's stream takes exactly the subject of its inbound wire; a's stream no cross subject
    info = await fleet.link("b")._js.stream_info("FLUX_RELAY")
    assert info.config.subjects == [
        "flux.msg.relay.>",
        cross_subject("b", slug("Relay"), bp.wires[0].source),
    ]
    assert (await fleet.link("a")._js.stream_info("FLUX_RELAY")).config.subjects == [
        "flux.msg.relay.>"
    ]
    # replies to a rack come back on its own inbox prefix
    assert fleet.link("a")._publisher._prefix.startswith("_INBOX.a.")
    assert fleet.link("b")._publisher._prefix.startswith("_INBOX.b.")


async def paced(key: str, numbers: range, every: float = 0.004) -> None:
    """Produce `numbers` over time (a steady producer, so outages hit it mid-stream)."""
    for n in numbers:
        FEEDS[key].put_nowait(n)
        await asyncio.sleep(every)  # pacing the producer, not waiting for anything


def failures(fleet: Fleet) -> int:
    return int(fleet.wire_stats("a", OUT)["forward_failures"])


async def test_hub_outage_loses_nothing_and_dead_letters_nothing(
    fleet: Fleet, registry: GearRegistry
) -> None:
    n = 200
    bp = preflight(relay(), registry)
    await fleet.start_rack("b", bp)
    await fleet.start_rack("a", bp)
    async with asyncio.TaskGroup() as tg:
        producer = tg.create_task(paced("feed", range(n)))
        await until(received("keep", 20))  # the leaf connections are up: data crossed
        await fleet.stop_hub()  # mid-stream: forwards in flight lose their stream ack
        crossed = len(set(KEPT["keep"]))
        before = failures(fleet)
        await until(stored_on_a(fleet, crossed + 50))  # durable on a while the hub is away
        await until(lambda: failures(fleet) > before)
        assert not producer.done()
        restarted = time.monotonic()
        await fleet.start_hub()  # same ports, same store
    await until(received("keep", n))
    caught_up = time.monotonic() - restarted

    assert set(KEPT["keep"]) == set(range(n))
    duplicates = len(KEPT["keep"]) - n
    log.warning(
        "hub outage: %d messages (%d crossed before the hub stopped), %d duplicates on b, all "
        "on b %.2fs after the hub restarted, %d failed forwards meanwhile",
        n, crossed, duplicates, caught_up, failures(fleet),
    )  # fmt: skip
    # nothing dead-lettered on a (nor on b): an outage only delays
    assert fleet.wire_stats("a", OUT)["dead_lettered"] == 0
    assert await fleet.link("a").dlq_list() == []
    assert await fleet.link("b").dlq_list() == []
    assert (await fleet.link("a")._js.stream_info("FLUX_DLQ_RELAY")).state.messages == 0


async def test_rack_b_away_then_back(fleet: Fleet, registry: GearRegistry) -> None:
    n = 200
    bp = preflight(relay(), registry)
    await fleet.start_rack("b", bp)
    await fleet.start_rack("a", bp)
    async with asyncio.TaskGroup() as tg:
        producer = tg.create_task(paced("feed", range(n)))
        await until(received("keep", 20))
        await fleet.stop_rack("b")  # its rack (drained) and its nats-server
        crossed = len(set(KEPT["keep"]))
        before = failures(fleet)
        await until(stored_on_a(fleet, crossed + 50))
        await until(lambda: failures(fleet) > before)
        assert not producer.done()
        restarted = time.monotonic()
        await fleet.start_rack("b", bp)
    await until(received("keep", n))
    log.warning(
        "rack b away: %d messages (%d crossed before b stopped), %d duplicates, all on b %.2fs "
        "after b restarted",
        n, crossed, len(KEPT["keep"]) - n, time.monotonic() - restarted,
    )  # fmt: skip
    assert set(KEPT["keep"]) == set(range(n))
    assert fleet.wire_stats("a", OUT)["dead_lettered"] == 0
    assert await fleet.link("a").dlq_list() == []


async def test_a_rack_not_ready_for_a_wire_answers_no_responders(
    fleet: Fleet, registry: GearRegistry
) -> None:
    """Rollout skew: a runs a version with a second cross wire before b does. b's stream takes
    only the subjects of the inbound wires it knows, so a's forwards are refused (and retried),
    not stored without a consumer and dropped."""
    await fleet.start_rack("b", preflight(relay(), registry))
    await fleet.start_rack("a", preflight(relay(extra=True), registry))
    produce("feed", range(10))
    produce("feed2", range(30))
    await until(received("keep", 10))
    extra = "feed2.out → keep2.in (to b)"
    await until(lambda: fleet.wire_stats("a", extra)["forward_failures"] >= 30)
    assert KEPT["keep2"] == []

    await fleet.racks["b"].apply(preflight(relay(extra=True), registry).for_rack("b"))
    await until(received("keep2", 30))
    assert sorted(set(KEPT["keep2"])) == list(range(30))
    assert fleet.wire_stats("a", extra)["dead_lettered"] == 0


async def test_malformed_payload_is_dead_lettered_on_a(
    fleet: Fleet, registry: GearRegistry
) -> None:
    bp = preflight(relay(), registry)
    await fleet.start_rack("b", bp)
    await fleet.start_rack("a", bp)
    link = fleet.link("a")
    await link._js.publish("flux.msg.relay.feed.out", b"\xff not cbor")
    produce("feed", range(5))
    await until(received("keep", 5))

    await until(lambda: fleet.wire_stats("a", OUT)["dead_lettered"] == 1)
    [letter] = await link.dlq_list()
    assert letter.consumer == FORWARDER
    assert letter.reason.startswith("malformed payload")
    assert await fleet.link("b").dlq_list() == []


async def test_removing_the_wire_deletes_both_consumers(
    fleet: Fleet, registry: GearRegistry
) -> None:
    bp = preflight(relay(), registry)
    await fleet.start_rack("b", bp)
    await fleet.start_rack("a", bp)
    produce("feed", range(5))
    await until(received("keep", 5))
    a, b = fleet.link("a"), fleet.link("b")
    assert await consumer_exists(a, FORWARDER)
    assert await consumer_exists(b, RECEIVER)

    without = preflight(relay(with_wire=False), registry)
    await fleet.racks["a"].apply(without.for_rack("a"))
    await fleet.racks["b"].apply(without.for_rack("b"))
    assert not await consumer_exists(a, FORWARDER)
    assert not await consumer_exists(b, RECEIVER)
    info = await b._js.stream_info("FLUX_RELAY")
    assert info.config.subjects == ["flux.msg.relay.>"]  # the cross subject went first
    assert OUT not in fleet.racks["a"].standard.stats()["wires"]

    await fleet.racks["a"].apply(bp.for_rack("a"))  # and back: provisioned again
    await fleet.racks["b"].apply(bp.for_rack("b"))
    assert await consumer_exists(a, FORWARDER)
    assert await consumer_exists(b, RECEIVER)
    produce("feed", range(5, 10))
    await until(received("keep", 10))
