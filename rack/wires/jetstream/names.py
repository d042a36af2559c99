"""Names on the NATS side of standard wires: scenario slug, streams, subjects, durable consumers.

One scenario = one data stream and one dead-letter stream per rack::

    FLUX_<SLUG>       flux.msg.<slug>.>     data: one subject per source port
                      flux.x.<rack>.<slug>.<gear>.<port>   what other racks send here (one per
                                            source port of an inbound cross-rack wire)
    FLUX_DLQ_<SLUG>   flux.dlq.<slug>.>     dead letters: one subject per wire

A source port publishes on `flux.msg.<slug>.<gear>.<port>`; each standard wire fed by it is a
durable consumer named `<tgtgear>__<tgtport>__<srcgear>__<srcport>` filtering that subject plus
the wire's own replay subject `flux.msg.<slug>._replay.<durable>` (gear names cannot start with
`_`, so it never clashes with a port subject). Replaying a dead letter publishes there, so only
the wire that failed sees it again, not its siblings fed by the same port.

A wire from rack A to rack B (docs/wires.md, "Cross-rack wires") is two consumers: on A,
`<durable>__to__<B>` filters the port's subject and forwards each message to
`cross_subject(B, …)`, which crosses the hub into B's stream; on B, `<durable>__from__<A>`
filters that subject and feeds the target gear. PubAcks and other replies of rack R travel on
`_INBOX.<R>.…` only (`inbox_prefix`), so the hub lets each rack through exactly what
`cross_permissions` lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from rack.link.protocol import inbox_prefix
from rack.model.scenario import Blueprint, CrossWire, Endpoint, WirePlan

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


def cross_subject(target_rack: str, scenario_slug: str, source: Endpoint) -> str:
    """Where rack `target_rack`'s stream receives what `source` (on another rack) emits."""
    return f"flux.x.{token(target_rack)}.{scenario_slug}.{token(source.gear)}.{token(source.port)}"


def cross_subjects(rack: str, scenario_slug: str) -> str:
    """Every subject other racks may send to `rack` for the scenario."""
    return f"flux.x.{token(rack)}.{scenario_slug}.>"


def durable_name(wire: WirePlan) -> str:
    src, tgt = wire.source, wire.target
    return f"{token(tgt.gear)}__{token(tgt.port)}__{token(src.gear)}__{token(src.port)}"


def wire_label(source: str, target: str) -> str:
    return f"{source} → {target}"


@dataclass(frozen=True, slots=True)
class WireRoute:
    """Every NATS name one standard wire uses on this rack.

    `source_subject` is what the consumer filters (with `replay_subject`). For the sending end
    of a cross-rack wire, `forward_subject` is where each message is forwarded and `peer` the
    target's rack; for its receiving end, `peer` is the source's rack."""

    wire: WirePlan
    stream: str
    durable: str
    source_subject: str
    replay_subject: str
    deliver_subject: str
    dlq_subject: str
    forward_subject: str = ""
    peer: str = ""

    @classmethod
    def of(
        cls,
        scenario_slug: str,
        wire: WirePlan,
        *,
        durable: str | None = None,
        source: str | None = None,
        forward: str = "",
        peer: str = "",
    ) -> WireRoute:
        durable = durable or durable_name(wire)
        return cls(
            wire=wire,
            stream=stream_name(scenario_slug),
            durable=durable,
            source_subject=source or source_subject(scenario_slug, wire.source),
            replay_subject=f"flux.msg.{scenario_slug}._replay.{durable}",
            deliver_subject=f"flux.deliver.{scenario_slug}.{durable}",
            dlq_subject=f"flux.dlq.{scenario_slug}.{durable}",
            forward_subject=forward,
            peer=peer,
        )

    @classmethod
    def outbound(cls, scenario_slug: str, cross: CrossWire) -> WireRoute:
        """The sending end (on the source's rack) of a wire to rack `cross.peer`."""
        wire, peer = cross.wire, cross.peer
        return cls.of(
            scenario_slug,
            wire,
            durable=f"{durable_name(wire)}__to__{token(peer)}",
            forward=cross_subject(peer, scenario_slug, wire.source),
            peer=peer,
        )

    @classmethod
    def inbound(cls, scenario_slug: str, rack: str, cross: CrossWire) -> WireRoute:
        """The receiving end (on `rack`, the target's) of a wire from rack `cross.peer`."""
        wire, peer = cross.wire, cross.peer
        return cls.of(
            scenario_slug,
            wire,
            durable=f"{durable_name(wire)}__from__{token(peer)}",
            source=cross_subject(rack, scenario_slug, wire.source),
            peer=peer,
        )

    @property
    def forwarding(self) -> bool:
        return bool(self.forward_subject)

    @property
    def label(self) -> str:
        label = wire_label(str(self.wire.source), str(self.wire.target))
        if self.peer:
            label += f" (to {self.peer})" if self.forwarding else f" (from {self.peer})"
        return label


class CrossPermissions(NamedTuple):
    """What one rack's hub connection must let through for a scenario's cross-rack wires.

    `publish`: the cross subjects it sends on (its outbound wires); `subscribe`: those it
    receives (its inbound wires); `reply_to`: the racks whose inboxes it answers (the sources
    of its inbound wires: its stream's PubAcks go to `_INBOX.<source rack>.…`). Every rack also
    receives its own replies on `_INBOX.<rack>.>` (see `hub_allow`)."""

    publish: list[str]
    subscribe: list[str]
    reply_to: list[str]


def cross_permissions(blueprint: Blueprint) -> dict[str, CrossPermissions]:
    """Per rack named by the (whole, un-cut) scenario, the subjects of its cross-rack wires."""
    scenario_slug = slug(blueprint.name)
    perms = {rack: CrossPermissions([], [], []) for rack in blueprint.rack_names()}
    for wire, source_rack, target_rack in blueprint.cross_wires():
        subject = cross_subject(target_rack, scenario_slug, wire.source)
        _add(perms[source_rack].publish, subject)
        _add(perms[target_rack].subscribe, subject)
        _add(perms[target_rack].reply_to, source_rack)
    return {
        rack: CrossPermissions(sorted(p.publish), sorted(p.subscribe), sorted(p.reply_to))
        for rack, p in perms.items()
    }


def hub_allow(rack: str, perms: CrossPermissions) -> tuple[list[str], list[str]]:
    """The allow lists (publish, subscribe) of `rack`'s leaf connection to the hub: its cross
    subjects, the inboxes it answers, and its own inbox."""
    publish = [*perms.publish, *(f"{inbox_prefix(r)}.>" for r in perms.reply_to)]
    return publish, [*perms.subscribe, f"{inbox_prefix(rack)}.>"]


def _add(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)
