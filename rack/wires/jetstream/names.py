"""Names on the NATS side of standard wires: scenario slug, streams, subjects, durable consumers.

One scenario = one data stream and one dead-letter stream::

    FLUX_<SLUG>       flux.msg.<slug>.>     data: one subject per source port
    FLUX_DLQ_<SLUG>   flux.dlq.<slug>.>     dead letters: one subject per wire

A source port publishes on `flux.msg.<slug>.<gear>.<port>`; each standard wire fed by it is a
durable consumer named `<tgtgear>__<tgtport>__<srcgear>__<srcport>` filtering that subject plus
the wire's own replay subject `flux.msg.<slug>._replay.<durable>` (gear names cannot start with
`_`, so it never clashes with a port subject). Replaying a dead letter publishes there, so only
the wire that failed sees it again, not its siblings fed by the same port.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rack.model.scenario import Endpoint, WirePlan

_NOT_SLUG = re.compile(r"[^a-z0-9_-]")
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


def slug(scenario: str) -> str:
    """`Payment Processing` → `payment_processing`: lowercase, `[a-z0-9_-]`, others → `_`."""
    return _NOT_SLUG.sub("_", scenario.lower()) or "_"


def token(name: str) -> str:
    """A gear or port name as one subject token / consumer-name part."""
    return _NOT_TOKEN.sub("_", name) or "_"


def stream_name(scenario_slug: str) -> str:
    return f"FLUX_{scenario_slug.upper()}"


def dlq_stream_name(scenario_slug: str) -> str:
    return f"FLUX_DLQ_{scenario_slug.upper()}"


def msg_subjects(scenario_slug: str) -> str:
    return f"flux.msg.{scenario_slug}.>"


def dlq_subjects(scenario_slug: str) -> str:
    return f"flux.dlq.{scenario_slug}.>"


def source_subject(scenario_slug: str, source: Endpoint) -> str:
    return f"flux.msg.{scenario_slug}.{token(source.gear)}.{token(source.port)}"


def durable_name(wire: WirePlan) -> str:
    src, tgt = wire.source, wire.target
    return f"{token(tgt.gear)}__{token(tgt.port)}__{token(src.gear)}__{token(src.port)}"


def wire_label(source: str, target: str) -> str:
    return f"{source} → {target}"


@dataclass(frozen=True, slots=True)
class WireRoute:
    """Every NATS name one standard wire uses."""

    wire: WirePlan
    stream: str
    durable: str
    source_subject: str
    replay_subject: str
    deliver_subject: str
    dlq_subject: str

    @classmethod
    def of(cls, scenario_slug: str, wire: WirePlan) -> WireRoute:
        durable = durable_name(wire)
        return cls(
            wire=wire,
            stream=stream_name(scenario_slug),
            durable=durable,
            source_subject=source_subject(scenario_slug, wire.source),
            replay_subject=f"flux.msg.{scenario_slug}._replay.{durable}",
            deliver_subject=f"flux.deliver.{scenario_slug}.{durable}",
            dlq_subject=f"flux.dlq.{scenario_slug}.{durable}",
        )

    @property
    def label(self) -> str:
        return wire_label(str(self.wire.source), str(self.wire.target))
