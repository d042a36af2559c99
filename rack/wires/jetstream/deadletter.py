"""The dead-letter stream of a scenario: what gave up lands here, to be listed, replayed or purged.

A dead letter is the original payload (byte for byte) on `flux.dlq.<slug>.<durable>` with
headers saying where it came from and why::

    Flux-Source / Flux-Target   the wire's ends (gear.port)
    Flux-Consumer               the wire's durable consumer
    Flux-Replay-Subject         where `replay` republishes it (that wire only)
    Flux-Reason                 percent-encoded text
    Flux-Deliveries             attempts made
    Flux-Msg-Id                 fluxID ("" when the payload was malformed)
    Flux-Stream-Seq, Flux-Rack, Flux-Time (RFC 3339, UTC), traceparent

Writing is confirmed (stream ack) before the original is terminated, and carries
`Nats-Msg-Id: dlq-<durable>-<stream seq>` so a retried write is not stored twice. Replay
publishes with `Nats-Msg-Id: <fluxID>-replay-<dlq seq>`: new to the data stream's dedup window
(so not dropped as a duplicate of the original), yet the same for a retried replay of the same
dead letter; the dead letter is deleted only once the republish is confirmed (at-least-once).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg

from rack.wires.jetstream.model import DeadLetter, WireError
from rack.wires.jetstream.names import WireRoute, dlq_subjects, wire_label

log = logging.getLogger("fluxrig.wires.jetstream")

MAX_REASON = 500
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
NATS_ERRORS = (nats.errors.Error, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why and how often a delivery failed, and the message it was."""

    msg: Msg
    reason: str
    attempt: int
    stream_seq: int
    msg_id: int | None


class DeadLetterBox:
    """Writes and manages one scenario's dead-letter stream."""

    def __init__(self, js: JetStreamContext, stream: str, scenario_slug: str, rack: str) -> None:
        self._js = js
        self.stream = stream
        self._filter = dlq_subjects(scenario_slug)
        self._rack = rack

    async def put(self, route: WireRoute, failure: Failure, timeout: float = 5.0) -> bool:
        """Store `failure` as a dead letter; False (and logged) if the stream did not confirm."""
        msg = failure.msg
        headers = {
            "Nats-Msg-Id": f"dlq-{route.durable}-{failure.stream_seq}",
            "Flux-Source": str(route.wire.source),
            "Flux-Target": str(route.wire.target),
            "Flux-Consumer": route.durable,
            "Flux-Replay-Subject": route.replay_subject,
            "Flux-Reason": quote(failure.reason[:MAX_REASON], safe=_SAFE),
            "Flux-Deliveries": str(failure.attempt),
            "Flux-Msg-Id": "" if failure.msg_id is None else str(failure.msg_id),
            "Flux-Stream-Seq": str(failure.stream_seq),
            "Flux-Rack": self._rack,
            "Flux-Time": datetime.now(UTC).isoformat(),
        }
        if msg.headers and msg.headers.get("traceparent"):
            headers["traceparent"] = msg.headers["traceparent"]
        try:
            await self._js.publish(route.dlq_subject, msg.data, timeout=timeout, headers=headers)
        except NATS_ERRORS as exc:
            log.error(
                "jetstream: cannot dead-letter message %s of wire %s (%s): %s; it stays on the "
                "wire and is tried again", failure.msg_id, route.label, failure.reason, exc,
            )  # fmt: skip
            return False
        log.warning(
            "jetstream: wire %s: message %s dead-lettered after %d deliveries: %s",
            route.label, failure.msg_id, failure.attempt, failure.reason,
        )  # fmt: skip
        return True

    async def list(self, limit: int = 100) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        async for raw in self._scan():
            if len(letters) >= limit:
                break
            letters.append(_dead_letter(raw))
        return letters

    async def replay(self, seq: int | None = None) -> int:
        """Republish dead letter `seq` (None: all present now) to its wire; returns the count."""
        if seq is not None:
            raw = await self._get(seq, exact=True)
            if raw is None:
                return 0
            await self._replay_one(raw)
            return 1
        count = 0
        async for raw in self._scan():
            await self._replay_one(raw)
            count += 1
        return count

    async def purge(self) -> int:
        info = await self._js.stream_info(self.stream)
        count = info.state.messages
        await self._js.purge_stream(self.stream)
        return count

    async def _replay_one(self, raw: RawStreamMsg) -> None:
        headers = raw.headers or {}
        subject = headers.get("Flux-Replay-Subject")
        assert raw.seq is not None
        if not subject:
            raise WireError(
                f"dead letter {raw.seq} in {self.stream} has no Flux-Replay-Subject header: it "
                "was not written by fluxrig and cannot be replayed (purge it instead)"
            )
        msg_id = headers.get("Flux-Msg-Id") or f"raw{headers.get('Flux-Stream-Seq', '')}"
        out = {"Nats-Msg-Id": f"{msg_id}-replay-{raw.seq}"}
        if headers.get("traceparent"):
            out["traceparent"] = headers["traceparent"]
        await self._js.publish(subject, raw.data or b"", headers=out)
        await self._js.delete_msg(self.stream, raw.seq)

    async def _scan(self) -> AsyncIterator[RawStreamMsg]:
        """Dead letters present when the scan starts, in order (later arrivals are left out)."""
        info = await self._js.stream_info(self.stream)
        seq, last = info.state.first_seq, info.state.last_seq
        while seq <= last:
            raw = await self._get(seq, exact=False)
            if raw is None or raw.seq is None or raw.seq > last:
                return
            yield raw
            seq = raw.seq + 1

    async def _get(self, seq: int, *, exact: bool) -> RawStreamMsg | None:
        try:
            if exact:
                return await self._js.get_msg(self.stream, seq=seq)
            return await self._js.get_msg(self.stream, seq=seq, subject=self._filter, next=True)
        except nats.js.errors.NotFoundError:
            return None


def _dead_letter(raw: RawStreamMsg) -> DeadLetter:
    h = raw.headers or {}
    try:
        when = datetime.fromisoformat(h.get("Flux-Time", ""))
    except ValueError:
        when = raw.time or datetime.fromtimestamp(0, UTC)
    msg_id = h.get("Flux-Msg-Id", "")
    return DeadLetter(
        seq=raw.seq or 0,
        wire=wire_label(h.get("Flux-Source", "?"), h.get("Flux-Target", "?")),
        reason=unquote(h.get("Flux-Reason", "")),
        deliveries=int(h.get("Flux-Deliveries", "0") or 0),
        msg_id=int(msg_id) if msg_id.isdigit() else None,
        time=when,
        consumer=h.get("Flux-Consumer", ""),
        size=len(raw.data or b""),
    )
