"""The sending end of a cross-rack wire: forward what a port stored here to the other rack.

A wire from gear `g` on rack A to a gear on rack B is, on A, a durable consumer of the port's
subject (`<durable>__to__<B>`) whose `deliver` is a `Forwarder`: each message is published,
byte for byte, to `flux.x.<B>.<slug>.<g>.<port>`, which the hub carries to B's stream, with a
`Nats-Msg-Id` that is the same for every attempt (`<id of the copy stored on A>@<A>`). B's
stream ack (on A's inbox, `_INBOX.<A>.…`) acks A's copy; any failure (no responders while the
hub or B is away, a timeout, B's stream refusing it) naks it with the wire's back-off, as often
as it takes: a link outage delays messages, never dead-letters them. A retry of a message B did
store is dropped by B's duplicate window.

Forwards go through the link's `Publisher` pump (pipelined, one reply subject per message), so
up to the wire's `max_ack_pending` messages are on their way at once.
"""

from __future__ import annotations

import asyncio
import logging

from rack.model.fluxmsg import FluxMsg
from rack.wires.jetstream.inlet import Delivery
from rack.wires.jetstream.names import WireRoute
from rack.wires.jetstream.publisher import Publisher, _Publish

log = logging.getLogger("fluxrig.wires.jetstream")


class Forwarder:
    """The `deliver` callback of an outbound cross-rack wire's consumer; see the module doc."""

    __slots__ = (
        "_idle", "_pending", "_publisher", "_rack", "failures", "forwarded", "retries", "route"
    )  # fmt: skip

    def __init__(self, publisher: Publisher, route: WireRoute, rack: str) -> None:
        if not route.forwarding:
            raise ValueError(f"wire {route.label} is not the sending end of a cross-rack wire")
        self._publisher = publisher
        self._rack = rack
        self.route = route
        self.forwarded = 0
        self.failures = 0
        self.retries = 0  # (the Publisher's outlet interface; forwards are nak'd, not retried)
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending(self) -> int:
        """Forwards published and not yet settled."""
        return self._pending

    async def __call__(self, port: str, msg: FluxMsg, delivery: Delivery) -> None:
        raw = delivery.raw
        original = raw.headers or {}
        headers = {"Nats-Msg-Id": self._msg_id(original.get("Nats-Msg-Id"), delivery)}
        if trace := original.get("traceparent"):
            headers["traceparent"] = trace
        self._publisher.forward(
            _Publish(self, self.route.forward_subject, raw.data, headers, delivery)
        )
        self._pending += 1
        self._idle.clear()

    def _msg_id(self, stored: str | None, delivery: Delivery) -> str:
        """The same for every attempt, so B drops a retry of what it has: the id of the copy
        stored here (one without, fluxID 0, is named by its place in this rack's stream), tagged
        with this rack. The tag keeps it apart from B's own ids (fluxIDs are unique per machine
        id only) and from a copy of the original that reached B by another path."""
        base = stored or f"{self.route.durable}-{delivery.stream_seq}"
        return f"{base}@{self._rack}"

    async def settle(self, delivery: Delivery, failure: str | None) -> None:
        """Called by the Publisher with the outcome of one forward."""
        self._confirmed()
        if failure is None:
            self.forwarded += 1
            await delivery.ok()
            return
        self.failures += 1
        if failure.startswith("no responders"):
            failure = f"no responders: the hub link is down, or rack '{self.route.peer}' is away "
            failure += "or does not run this wire yet"
        n = self.failures
        if n <= 3 or n & (n - 1) == 0:
            log.warning(
                "jetstream: wire %s: rack '%s' did not store message %s (%s); it stays here and "
                "is sent again after the back-off (%d failed forwards so far)",
                self.route.label, self.route.peer, delivery.msg_id, failure, n,
            )  # fmt: skip
        await delivery.fail(f"not forwarded to rack '{self.route.peer}': {failure}")

    def _confirmed(self) -> None:
        self._pending -= 1
        if not self._pending:
            self._idle.set()

    async def settled(self) -> None:
        """Wait until every forward published so far is settled (each within the publish
        timeout: acked, or nak'd for a later attempt)."""
        await self._idle.wait()

    def __repr__(self) -> str:
        return f"Forwarder({self.route.forward_subject}, pending={self._pending})"
