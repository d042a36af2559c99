"""A rack's connection to JetStream for its standard wires: streams, outlets, inlets, dead letters.

    link = await JetStreamLink.connect(url, rack="edge-1", scenario="Payment Processing")
    async with link:
        await link.ensure_streams(wires, options)      # streams + durable consumers
        outlet = link.outlet(Endpoint("decode", "out"))
        inlet = await link.inlet(wire, options[wire], deliver)
        ...
        await link.drain()                              # stop consuming, flush publishes
    # leaving the block closes the connection (aclose is idempotent)

Streams (one pair per scenario; names in `names.py`):

* data `FLUX_<SLUG>` on `flux.msg.<slug>.>`: file storage, **interest** retention (a message
  is kept until every wire reading its subject acked it; fan-out wires do not delete each
  other's messages, and nothing piles up once all are done), **discard new** (a full stream
  refuses publishes, which the outlets retry: back-pressure rather than silently dropping
  the oldest unprocessed messages), limits from `StreamLimits.covering` (the loosest asked by
  any wire), duplicate window likewise. Interest retention drops messages that no consumer
  wants, so `ensure_streams` creates every wire's durable consumer up front, before anything
  is published.
* dead letters `FLUX_DLQ_<SLUG>` on `flux.dlq.<slug>.>`: file storage, limits retention, no
  limits, discard new, no consumers (read by `dlq_list` / `dlq_replay` / `dlq_purge`).

Cross-rack wires (names.py, forward.py): the sending end is a consumer here whose deliveries are
forwarded to the other rack (`forward`); the receiving end is an inlet like any other, on
`flux.x.<this rack>.<slug>.<gear>.<port>`, which the data stream captures exactly for the
inbound wires it has (see `ensure_streams`). The connection's inbox prefix is
`_INBOX.<rack>`, so the replies it waits for are the only ones the hub must route to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from rack.link.protocol import inbox_prefix
from rack.model.scenario import CrossWire, Endpoint, WirePlan
from rack.wires.jetstream.deadletter import NATS_ERRORS, DeadLetterBox
from rack.wires.jetstream.forward import Forwarder
from rack.wires.jetstream.inlet import Deliver, JetStreamInlet, consumer_config
from rack.wires.jetstream.model import DeadLetter, StreamLimits, WireError, WireOptions
from rack.wires.jetstream.names import (
    WireRoute,
    dlq_stream_name,
    dlq_subjects,
    msg_subjects,
    slug,
    source_subject,
    stream_name,
)
from rack.wires.jetstream.publisher import JetStreamOutlet, Publisher

log = logging.getLogger("fluxrig.wires.jetstream")

_COMPARED = ("subjects", "retention", "storage", "discard", "max_msgs", "max_bytes")


class JetStreamLink:
    """One per rack and scenario. Build with `connect`; use as an async context manager."""

    def __init__(
        self, nc: Client, *, rack: str, scenario: str, publish_timeout: float = 5.0
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream(publish_async_max_pending=1 << 20)  # outlets do the windowing
        self.rack = rack
        self.scenario = scenario
        self.slug = slug(scenario)
        self.stream = stream_name(self.slug)
        self.dlq_stream = dlq_stream_name(self.slug)
        self._publisher = Publisher(nc, ack_timeout=publish_timeout)
        self._dlq = DeadLetterBox(self._js, self.dlq_stream, self.slug, rack)
        self._outlets: dict[Endpoint, JetStreamOutlet] = {}
        self._inlets: dict[str, JetStreamInlet] = {}
        self._forwarders: dict[str, Forwarder] = {}
        self._closed = False

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        rack: str,
        scenario: str,
        connect_timeout: float = 10.0,
        publish_timeout: float = 5.0,
    ) -> JetStreamLink:
        """Connect (retrying for up to `connect_timeout` s); reconnects forever afterwards.

        Replies to this connection use the inbox prefix `_INBOX.<rack>` (`inbox_prefix`)."""
        nc = Client()
        state = {"connected": False}

        async def on_error(exc: Exception) -> None:
            level = logging.WARNING if state["connected"] else logging.DEBUG
            log.log(level, "jetstream: NATS connection error: %s", exc)

        async def on_disconnect() -> None:
            if state["connected"] and not nc.is_closed:
                log.warning("jetstream: disconnected from NATS at %s; reconnecting", url)

        async def on_reconnect() -> None:
            log.info("jetstream: reconnected to NATS at %s", nc.connected_url)

        try:
            async with asyncio.timeout(connect_timeout):
                await nc.connect(
                    url,
                    name=f"fluxrig-rack {rack}",
                    inbox_prefix=inbox_prefix(rack),
                    connect_timeout=2,
                    reconnect_time_wait=1,
                    max_reconnect_attempts=-1,
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                )
        except (TimeoutError, *NATS_ERRORS) as exc:
            await nc.close()
            raise WireError(
                f"cannot connect to NATS at {url} within {connect_timeout:g}s "
                f"({str(exc) or 'no answer'}); is the rack's nats-server running with "
                "JetStream enabled?"
            ) from exc
        state["connected"] = True
        link = cls(nc, rack=rack, scenario=scenario, publish_timeout=publish_timeout)
        await link._publisher.start()
        return link

    async def __aenter__(self) -> JetStreamLink:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def publisher(self) -> Publisher:
        return self._publisher

    def route(self, wire: WirePlan) -> WireRoute:
        return WireRoute.of(self.slug, wire)

    # -- setup ---------------------------------------------------------------------------------

    def outbound_route(self, cross: CrossWire) -> WireRoute:
        """The sending end, here, of a wire to a gear on rack `cross.peer`."""
        return WireRoute.outbound(self.slug, cross)

    def inbound_route(self, cross: CrossWire) -> WireRoute:
        """The receiving end, here, of a wire from a gear on rack `cross.peer`."""
        return WireRoute.inbound(self.slug, self.rack, cross)

    def forward_options(self, options: WireOptions) -> WireOptions:
        """A forwarding consumer's options: its `ack_wait` outlasts a forward's stream ack
        timeout, so a forward in flight is not delivered (and forwarded) a second time."""
        return replace(options, ack_wait=max(options.ack_wait, 2 * self._publisher.ack_timeout))

    # -- setup ---------------------------------------------------------------------------------

    async def ensure_streams(
        self,
        wires: Sequence[WirePlan],
        options: Mapping[WirePlan, WireOptions],
        *,
        outbound: Sequence[CrossWire] = (),
        inbound: Sequence[CrossWire] = (),
    ) -> None:
        """Create or update both streams, and the durable consumer of every standard wire and
        of this rack's end of each cross-rack wire (`outbound`: fed by a gear here; `inbound`:
        feeding a gear here). A wire missing from `options` uses its own `wire.options`.

        The data stream captures the cross subjects of `inbound` exactly (not all of
        `flux.x.<rack>.<slug>.>`), and a subject is added only once its consumer exists: with
        interest retention, a message that no consumer wants is acked to its sender and
        dropped, so a rack that is not ready for a wire must answer "no responders" instead
        (the sender then retries). Subjects of wires gone are removed here, before their
        consumers are deleted (`delete_wire`)."""
        standard = [w for w in wires if w.transport == "standard"]
        routes = [(self.route(w), options.get(w, w.options)) for w in standard]
        routes += [(self.outbound_route(c), self.forward_options(c.wire.options)) for c in outbound]
        routes += [(self.inbound_route(c), c.wire.options) for c in inbound]
        limits = StreamLimits.covering(o for _, o in routes)
        wanted = sorted({self.inbound_route(c).source_subject for c in inbound})
        current = await self._stream_config(self.stream)
        kept = [s for s in (current.subjects or []) if s in wanted] if current else []
        await self._ensure_stream(self._data_config(kept, limits))
        await self._ensure_stream(
            StreamConfig(
                name=self.dlq_stream,
                description=f"fluxrig scenario '{self.scenario}': dead letters",
                subjects=[dlq_subjects(self.slug)],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                discard=DiscardPolicy.NEW,
                max_msgs=-1,
                max_bytes=-1,
                max_age=0,
                duplicate_window=WireOptions().duplicate_window,
            )
        )
        for route, opts in routes:
            try:
                await self._js.add_consumer(self.stream, consumer_config(route, opts))
            except NATS_ERRORS as exc:
                raise WireError(f"cannot create consumer for wire {route.label}: {exc}") from exc
        if kept != wanted:
            await self._ensure_stream(self._data_config(wanted, limits))

    def _data_config(self, cross: list[str], limits: StreamLimits) -> StreamConfig:
        return StreamConfig(
            name=self.stream,
            description=f"fluxrig scenario '{self.scenario}': standard wires",
            subjects=[msg_subjects(self.slug), *cross],
            retention=RetentionPolicy.INTEREST,
            storage=StorageType.FILE,
            discard=DiscardPolicy.NEW,
            max_msgs=limits.max_msgs,
            max_bytes=limits.max_bytes,
            max_age=limits.max_age,
            duplicate_window=limits.duplicate_window,
        )

    async def _stream_config(self, name: str) -> StreamConfig | None:
        try:
            return (await self._js.stream_info(name)).config
        except nats.js.errors.NotFoundError:
            return None
        except NATS_ERRORS as exc:
            raise WireError(f"cannot read stream {name}: {exc}") from exc

    async def _ensure_stream(self, wanted: StreamConfig) -> None:
        assert wanted.name is not None
        current = await self._stream_config(wanted.name)
        try:
            if current is None:
                await self._js.add_stream(wanted)
                log.info("jetstream: created stream %s", wanted.name)
            elif differences := _differences(current, wanted):
                await self._js.update_stream(wanted)
                log.info("jetstream: updated stream %s (%s)", wanted.name, ", ".join(differences))
        except NATS_ERRORS as exc:
            raise WireError(
                f"cannot create or update stream {wanted.name}: {exc}; if its storage or "
                f"retention changed, delete it (`nats stream rm {wanted.name}`) to recreate it"
            ) from exc

    # -- wire ends -----------------------------------------------------------------------------

    def outlet(self, source: Endpoint, *, window: int = 1024) -> JetStreamOutlet:
        """The publishing end of `source` (one per source port, shared by its wires)."""
        outlet = self._outlets.get(source)
        if outlet is None:
            outlet = JetStreamOutlet(self._publisher, source_subject(self.slug, source), window)
            self._outlets[source] = outlet
        return outlet

    async def inlet(
        self,
        wire: WirePlan | WireRoute,
        options: WireOptions,
        deliver: Deliver,
        *,
        bind_timeout: float = 2.0,
    ) -> JetStreamInlet:
        """Bind the wire's durable consumer; `deliver(port, msg, delivery)` gets each message.

        `wire` is a local wire, or the route of another consumer (`inbound_route`). Refused
        (`WireError`) while another subscriber holds the consumer (see `JetStreamInlet.start`)."""
        return await self._bind(self._route_of(wire), options, deliver, bind_timeout, -1)

    async def forward(self, cross: CrossWire, *, bind_timeout: float = 2.0) -> JetStreamInlet:
        """Bind the sending end of a wire to rack `cross.peer`: its messages are forwarded
        there (forward.py), redelivered after the back-off until that rack stored them."""
        route = self.outbound_route(cross)
        forwarder = Forwarder(self._publisher, route, self.rack)
        options = self.forward_options(cross.wire.options)
        inlet = await self._bind(route, options, forwarder, bind_timeout, None)
        self._forwarders[route.durable] = forwarder
        return inlet

    async def _bind(
        self,
        route: WireRoute,
        options: WireOptions,
        deliver: Deliver,
        bind_timeout: float,
        dead_letter_after: int | None,
    ) -> JetStreamInlet:
        if self._closed:
            raise WireError("the JetStream link is closed")
        current = self._inlets.get(route.durable)
        if current is not None and not current.closed:
            raise WireError(f"wire {route.label} already has an inlet on this link")
        inlet = JetStreamInlet(
            self._nc, self._js, route, options, deliver, self._dlq,
            dead_letter_after=dead_letter_after,
        )  # fmt: skip
        await inlet.start(bind_timeout)
        self._inlets[route.durable] = inlet
        return inlet

    def _route_of(self, wire: WirePlan | WireRoute) -> WireRoute:
        return wire if isinstance(wire, WireRoute) else self.route(wire)

    async def close_inlet(self, wire: WirePlan | WireRoute) -> None:
        """Stop consuming one wire (e.g. removed by a reload); its durable consumer stays."""
        durable = self._route_of(wire).durable
        inlet = self._inlets.pop(durable, None)
        forwarder = self._forwarders.pop(durable, None)
        if inlet is not None:
            try:
                await inlet.drain()
            finally:
                await inlet.aclose()  # no-op once drained; unsubscribes if drain was cancelled
        if forwarder is not None:  # its forwards in flight are acked or nak'd (bounded)
            try:
                async with asyncio.timeout(2 * self._publisher.ack_timeout):
                    await forwarder.settled()
            except TimeoutError:
                log.warning(
                    "jetstream: wire %s: %d forwards still unsettled; they are redelivered "
                    "after ack_wait", forwarder.route.label, forwarder.pending,
                )  # fmt: skip

    async def delete_wire(self, wire: WirePlan | WireRoute) -> None:
        """Forget a wire for good: delete its durable consumer (and its interest in messages)."""
        await self.close_inlet(wire)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._js.delete_consumer(self.stream, self._route_of(wire).durable)

    # -- stop ----------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Stop every consumer receiving, then wait until every accepted publish is stored."""
        for inlet in list(self._inlets.values()):
            await inlet.drain()
        for forwarder in list(self._forwarders.values()):
            await forwarder.settled()
        await self._publisher.flush()

    async def flush(self) -> None:
        """Wait until every message put on an outlet so far is stored."""
        await self._publisher.flush()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for inlet in self._inlets.values():
                await inlet.aclose()
            self._inlets.clear()
            self._forwarders.clear()
            await self._publisher.aclose()
        finally:
            await self._nc.close()

    # -- dead letters --------------------------------------------------------------------------

    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        return await self._dlq.list(limit)

    async def dlq_replay(self, seq: int | None = None) -> int:
        return await self._dlq.replay(seq)

    async def dlq_purge(self) -> int:
        return await self._dlq.purge()

    def stats(self) -> dict[str, Any]:
        """Publish counters, and per wire consumed here (by label): delivered, acked, failed,
        dead_lettered; plus `peer` for cross-rack wires, and `forwarded`, `forward_failures`,
        `forwarding` (in flight) for their sending end."""
        return {
            "published": self._publisher.published,
            "publish_retries": self._publisher.retries,
            "unconfirmed": self._publisher.outstanding,
            "wires": {i.route.label: self._wire_stats(i) for i in self._inlets.values()},
        }

    def _wire_stats(self, inlet: JetStreamInlet) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "delivered": inlet.delivered,
            "acked": inlet.acked,
            "failed": inlet.failed,
            "dead_lettered": inlet.dead_lettered,
        }
        if inlet.route.peer:
            stats["peer"] = inlet.route.peer
        forwarder = self._forwarders.get(inlet.route.durable)
        if forwarder is not None:
            stats["forwarded"] = forwarder.forwarded
            stats["forward_failures"] = forwarder.failures
            stats["forwarding"] = forwarder.pending
        return stats


def _differences(current: StreamConfig, wanted: StreamConfig) -> list[str]:
    def norm(value: Any) -> Any:
        return getattr(value, "value", value)

    diffs = [
        name for name in _COMPARED if norm(getattr(current, name)) != norm(getattr(wanted, name))
    ]
    for name in ("max_age", "duplicate_window"):
        if round((getattr(current, name) or 0) * 1000) != round(getattr(wanted, name) * 1000):
            diffs.append(name)
    if (current.description or "") != (wanted.description or ""):
        diffs.append("description")
    return diffs
