"""Values of standard wires: the stream limits their options add up to, dead letters.

`WireOptions` (per wire: max_deliver, ack_wait, max_ack_pending, backoff, stream limits,
duplicate window) lives in `rack.model.scenario`, validated there by the scenario model. Keep
`ack_wait` above `max_ack_pending` × the gear's time per message: a message waiting in a full
inbox is still "delivered", and times out like one being processed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from rack.errors import FluxError
from rack.model.scenario import WireOptions

__all__ = ["DeadLetter", "StreamLimits", "WireError", "WireOptions", "nak_delay"]


class WireError(FluxError):
    """A standard (JetStream) wire cannot be set up or operated: bad options, NATS refused."""


def nak_delay(options: WireOptions, attempt: int) -> float:
    """Redelivery delay after failed attempt number `attempt` (1-based): `backoff[attempt-1]`,
    the last delay repeating."""
    backoff = options.backoff or (0.0,)
    return backoff[min(max(attempt, 1), len(backoff)) - 1]


@dataclass(frozen=True, slots=True)
class StreamLimits:
    max_msgs: int = -1
    max_bytes: int = -1
    max_age: float = 0
    duplicate_window: float = 120.0

    @classmethod
    def covering(cls, options: Iterable[WireOptions]) -> StreamLimits:
        """The loosest limits of the wires sharing a stream, so no wire gets less than it asked.

        Unlimited (-1 / 0) wins; otherwise the maximum. With no wires, the `WireOptions` defaults.
        The duplicate window is the largest asked for, capped by `max_age` (NATS requires it).
        """
        opts = list(options) or [WireOptions()]

        def loosest(values: list[int]) -> int:
            return -1 if -1 in values else max(values)

        max_age = 0.0 if any(o.max_age == 0 for o in opts) else max(o.max_age for o in opts)
        window = max(o.duplicate_window for o in opts)
        return cls(
            max_msgs=loosest([o.max_msgs for o in opts]),
            max_bytes=loosest([o.max_bytes for o in opts]),
            max_age=max_age,
            duplicate_window=min(window, max_age) if max_age else window,
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message in a scenario's dead-letter stream (`fluxrig dlq list`)."""

    seq: int  # sequence in the dead-letter stream: what `dlq replay <seq>` takes
    wire: str  # "src.port → tgt.port"
    reason: str
    deliveries: int
    msg_id: int | None  # fluxID; None when the payload was not a valid fluxMsg
    time: datetime  # when it was dead-lettered (UTC)
    consumer: str = ""
    size: int = 0
