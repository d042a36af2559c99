"""The receiving end of a standard wire: a durable push consumer feeding the target gear.

Messages arrive in stream order and are handed to `deliver(port, msg, delivery)` one at a time;
`deliver` may wait (for room in the gear's inbox), and while it waits nothing more is handed
over: with at most `max_ack_pending` unacknowledged messages per consumer, that back-pressures
the server. The gear settles each message with its `Delivery`: `ok()` acks; `fail(reason)` naks
with the wire's back-off delay, and after `max_deliver` attempts dead-letters it (then `term`).

Why the consumer has `max_deliver = -1` (unlimited) rather than the wire's `max_deliver`: when
NATS reaches its own limit it just stops delivering (an advisory is all that is left), so a
message whose last attempt timed out (gear hung, rack crashed, ack lost) would vanish from the
wire silently. Instead the inlet counts: a message arriving for attempt `max_deliver + 1` (only
possible when earlier attempts timed out rather than failed) is dead-lettered without reaching
the gear. A dead letter is written (and confirmed) before the original is terminated; if the
write fails the message is nak'd and comes back to be dead-lettered again, so nothing is lost.
Malformed payloads (not a fluxMsg) are dead-lettered at once.

The sending end of a cross-rack wire is an inlet too, whose `deliver` forwards each message to
the other rack (forward.py); there a failure means "the other rack did not store it yet" (hub
or rack away), never a bad message, so it is redelivered with the back-off as often as it takes
(`dead_letter_after=None`); only a malformed payload is dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, ReplayPolicy

from rack.errors import MessageDecodeError
from rack.model.fluxmsg import FluxMsg
from rack.wires.jetstream.deadletter import NATS_ERRORS, DeadLetterBox, Failure
from rack.wires.jetstream.model import WireError, WireOptions, nak_delay
from rack.wires.jetstream.names import WireRoute

log = logging.getLogger("fluxrig.wires.jetstream")

Deliver = Callable[[str, FluxMsg, "Delivery"], Awaitable[None]]
_REMEMBERED_REASONS = 10_000
_ACK = b"+ACK"  # JetStream's acknowledgement: the body of a plain publish to the reply subject


def consumer_config(route: WireRoute, options: WireOptions) -> ConsumerConfig:
    """The durable push consumer of one wire."""
    return ConsumerConfig(
        name=route.durable,
        durable_name=route.durable,
        description=f"fluxrig wire {route.label}",
        deliver_subject=route.deliver_subject,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=options.ack_wait,
        max_deliver=-1,
        max_ack_pending=options.max_ack_pending,
        filter_subjects=[route.source_subject, route.replay_subject],
        replay_policy=ReplayPolicy.INSTANT,
        metadata={
            "fluxrig.source": str(route.wire.source),
            "fluxrig.target": str(route.wire.target),
        },
    )


class Delivery:
    """The ack handle of one message delivered to a gear. Settling twice is a no-op."""

    __slots__ = ("_attempt", "_inlet", "_msg", "_seq", "_settled", "msg_id")

    def __init__(self, inlet: JetStreamInlet, msg: Msg, attempt: int, seq: int) -> None:
        self._inlet = inlet
        self._msg = msg
        self._attempt = attempt
        self._seq = seq
        self._settled = False
        self.msg_id: int | None = None

    @property
    def attempt(self) -> int:
        """1 on first delivery, +1 per redelivery (JetStream's num_delivered)."""
        return self._attempt

    @property
    def settled(self) -> bool:
        return self._settled

    @property
    def raw(self) -> Msg:
        """The message as JetStream delivered it (payload bytes and headers)."""
        return self._msg

    @property
    def stream_seq(self) -> int:
        return self._seq

    async def ok(self) -> None:
        """Processing finished: acknowledge (the message is not delivered again).

        Once per message, so it publishes the +ACK to the delivery's reply subject itself: a
        plain publish is all `Msg.ack` does too (with an empty body, which JetStream also reads
        as +ACK), minus two coroutine layers and its already-acked check (`settled` is ours)."""
        if not self._settled:
            self._settled = True
            inlet = self._inlet
            inlet.acked += 1
            try:
                await inlet._publish(self._msg.reply, _ACK)
            except (nats.errors.Error, OSError) as exc:  # as in `_quietly`
                log.debug("jetstream: could not settle a message: %s", exc)

    async def fail(self, reason: str) -> None:
        """Processing failed: redeliver after the back-off delay, or dead-letter it."""
        if not self._settled:
            self._settled = True
            await self._inlet._failed(self, reason)

    async def release(self) -> None:
        """Give the message back unprocessed (nak, no delay), e.g. still queued at shutdown:
        redelivered at once instead of after ack_wait. Not a failure, but it is an attempt."""
        if not self._settled:
            self._settled = True
            await _quietly(self._msg.nak())

    async def working(self) -> None:
        """Still processing: restart the ack_wait clock (JetStream +WPI)."""
        if not self._settled:
            await _quietly(self._msg.in_progress())


class JetStreamInlet:
    """A bound durable consumer; build it with `JetStreamLink.inlet`."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        route: WireRoute,
        options: WireOptions,
        deliver: Deliver,
        dlq: DeadLetterBox,
        *,
        dead_letter_after: int | None = -1,
    ) -> None:
        """`dead_letter_after`: attempts before a message is dead-lettered (-1: the wire's
        `max_deliver`; None: never, redelivered with the back-off as long as it takes)."""
        self._publish = nc.publish  # acks (`Delivery.ok`)
        self._js = js
        self.route = route
        self.options = options
        self.port = route.wire.target.port
        self._deliver = deliver
        self._dlq = dlq
        limit = options.max_deliver if dead_letter_after == -1 else dead_letter_after
        self._max_attempts = sys.maxsize if limit is None else limit
        self._sub: Subscription | None = None
        self._closing = False
        self._reasons: dict[int, str] = {}
        self.delivered = self.acked = self.failed = self.dead_lettered = 0

    @property
    def closed(self) -> bool:
        """True once `drain` or `aclose` ran (settling delivered messages still works)."""
        return self._closing

    async def start(self, bind_timeout: float = 2.0) -> None:
        """Create or update the consumer and subscribe to it.

        A consumer still bound to another subscriber is refused, after waiting up to
        `bind_timeout` s: the server clears the interest of one that just left a moment later.
        """
        config = consumer_config(self.route, self.options)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bind_timeout
        try:
            info = await self._js.add_consumer(self.route.stream, config)
            while info.push_bound and loop.time() < deadline:
                await asyncio.sleep(0.02)  # polling server state, bounded
                info = await self._js.consumer_info(self.route.stream, self.route.durable)
        except NATS_ERRORS as exc:
            raise WireError(f"cannot create consumer for wire {self.route.label}: {exc}") from exc
        if info.push_bound:
            raise WireError(
                f"wire {self.route.label}: consumer '{self.route.durable}' is still bound to "
                f"another subscriber after {bind_timeout:g}s (is another rack process running "
                "this scenario?)"
            )
        self._sub = await self._js.subscribe_bind(
            self.route.stream, config, self.route.durable, cb=self._on_msg, manual_ack=True
        )

    async def drain(self) -> None:
        """Stop receiving: what the client buffered but did not hand over is given back (nak).

        Waits for the message being handed over (`deliver` may be waiting for room)."""
        self._closing = True
        sub = self._sub
        if sub is not None:
            try:
                await sub.drain()  # type: ignore[no-untyped-call]
            except NATS_ERRORS as exc:
                log.debug("jetstream: draining %s: %s", self.route.label, exc)
            self._sub = None

    async def aclose(self) -> None:
        """Stop receiving at once (what was buffered is redelivered after ack_wait)."""
        self._closing = True
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except NATS_ERRORS as exc:
                log.debug("jetstream: unsubscribing %s: %s", self.route.label, exc)

    # -- per message -------------------------------------------------------------------------

    async def _on_msg(self, msg: Msg) -> None:
        if self._closing:
            await _quietly(msg.nak())
            return
        attempt, seq = _attempt_and_seq(msg)
        delivery = Delivery(self, msg, attempt, seq)
        try:
            flux = FluxMsg.decode(msg.data)
        except MessageDecodeError as exc:
            delivery._settled = True
            await self._dead_letter(delivery, f"malformed payload: {exc}")
            return
        delivery.msg_id = flux.id
        if not flux.trace and msg.headers:  # a producer that put its trace in the header only
            flux.trace = msg.headers.get("traceparent", "")
        if attempt > self._max_attempts:
            reason = self._reasons.get(seq) or (
                f"not acknowledged within ack_wait ({self.options.ack_wait:g}s) "
                f"in {attempt - 1} deliveries"
            )
            delivery._settled = True
            await self._dead_letter(delivery, reason)
            return
        self.delivered += 1
        try:
            await self._deliver(self.port, flux, delivery)
        except Exception as exc:
            log.error("jetstream: wire %s: delivery to the gear failed: %s", self.route.label, exc)
            await delivery.fail(f"delivery to the gear failed: {exc}")

    async def _failed(self, delivery: Delivery, reason: str) -> None:
        self.failed += 1
        if delivery.attempt >= self._max_attempts:
            await self._dead_letter(delivery, reason)
        else:
            delay = nak_delay(self.options, delivery.attempt)
            await _quietly(delivery._msg.nak(delay=delay))

    async def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        failure = Failure(delivery._msg, reason, delivery.attempt, delivery._seq, delivery.msg_id)
        if await self._dlq.put(self.route, failure):
            self.dead_lettered += 1
            self._reasons.pop(delivery._seq, None)
            await _quietly(delivery._msg.term())
            return
        if len(self._reasons) >= _REMEMBERED_REASONS:
            self._reasons.clear()
        self._reasons[delivery._seq] = reason
        await _quietly(delivery._msg.nak(delay=nak_delay(self.options, 1 << 30)))


def _attempt_and_seq(msg: Msg) -> tuple[int, int]:
    """(num_delivered, stream sequence) from the ack subject; the common form parsed inline."""
    tokens = msg.reply.split(".")
    if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        return int(tokens[4]), int(tokens[5])
    meta = msg.metadata  # with domain and account hash
    return meta.num_delivered, meta.sequence.stream


async def _quietly(action: Awaitable[None]) -> None:
    """Send an ack/nak/term; if the connection is gone the server redelivers later anyway."""
    try:
        await action
    except (nats.errors.Error, OSError) as exc:
        log.debug("jetstream: could not settle a message: %s", exc)
