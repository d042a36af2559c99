"""Cross-rack wires on paper: how a scenario is cut per rack, their names, the hub permissions."""

from __future__ import annotations

from typing import Any

import pytest

from rack.errors import ScenarioError
from rack.gear import GearRegistry
from rack.link.protocol import inbox_prefix
from rack.model.scenario import Blueprint, CrossWire, Endpoint, WirePlan
from rack.preflight import preflight
from rack.wires.jetstream.names import (
    CrossPermissions,
    WireRoute,
    cross_permissions,
    cross_subject,
    cross_subjects,
    hub_allow,
)
from tests.runtime.conftest import Collect, Source, Tag


@pytest.fixture
def registry() -> GearRegistry:
    reg = GearRegistry()
    for gear in (Source, Tag, Collect):
        reg.register(gear)
    return reg


def gear(name: str, type_: str, deploy: str | None = None, **config: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "type": type_, "config": config}
    if deploy is not None:
        spec["deploy"] = deploy
    return spec


# east: src ──────────────► west: tag ──(memory)──► sinkw
#         └─► any (local)          ├─► any (local)
#                                  └─(odd)────────► north: sinkn
THREE_RACKS: dict[str, Any] = {
    "name": "Card Flow",
    "racks": [{"name": "east"}, {"name": "west"}, {"name": "north"}],
    "gears": [
        gear("src", "t_source", "east"),
        gear("tag", "t_tag", "west"),
        gear("sinkw", "t_collect", "west", key="w"),
        gear("sinkn", "t_collect", "north", key="n"),
        gear("any", "t_collect", key="any"),  # no deploy: runs on every rack
    ],
    "wires": [
        {"from": "src", "to": "tag", "max_deliver": 9},
        {"from": "tag", "to": "sinkw", "transport": "memory"},
        {"from": "tag.odd", "to": "sinkn"},
        {"from": "src", "to": "any"},
        {"from": "tag", "to": "any"},
    ],
}


def ends(wires: tuple[WirePlan, ...]) -> list[str]:
    return [f"{w.source}>{w.target}" for w in wires]


def crossing(cross: tuple[CrossWire, ...]) -> list[tuple[str, str]]:
    return [(f"{c.wire.source}>{c.wire.target}", c.peer) for c in cross]


def test_for_rack_splits_local_outbound_and_inbound(registry: GearRegistry) -> None:
    bp = preflight(THREE_RACKS, registry)
    assert [(f"{w.source}>{w.target}", a, b) for w, a, b in bp.cross_wires()] == [
        ("src.out>tag.in", "east", "west"),
        ("tag.odd>sinkn.in", "west", "north"),
    ]
    east, west, north = (bp.for_rack(r) for r in ("east", "west", "north"))
    assert (set(east.gears), ends(east.wires)) == ({"src", "any"}, ["src.out>any.in"])
    assert crossing(east.outbound) == [("src.out>tag.in", "west")]
    assert east.inbound == ()
    assert set(west.gears) == {"tag", "sinkw", "any"}
    assert ends(west.wires) == ["tag.out>sinkw.in", "tag.out>any.in"]
    assert crossing(west.outbound) == [("tag.odd>sinkn.in", "north")]
    assert crossing(west.inbound) == [("src.out>tag.in", "east")]
    assert west.inbound[0].wire.options.max_deliver == 9  # the wire's own options travel along
    assert (set(north.gears), north.wires, north.outbound) == ({"sinkn", "any"}, (), ())
    assert crossing(north.inbound) == [("tag.odd>sinkn.in", "west")]
    assert bp.for_rack("south").outbound == bp.for_rack("south").inbound == ()
    assert (east.rack, bp.rack) == ("east", None)


def test_a_cut_blueprint_is_not_cut_again_for_another_rack(registry: GearRegistry) -> None:
    east = preflight(THREE_RACKS, registry).for_rack("east")
    assert east.for_rack("east") is east
    with pytest.raises(ValueError, match="already cut for rack 'east', not 'west'"):
        east.for_rack("west")


def test_a_gear_without_deploy_keeps_its_wires_local(registry: GearRegistry) -> None:
    doc = {
        "name": "n",
        "gears": [gear("src", "t_source", "east"), gear("all", "t_collect", key="k")],
        "wires": [{"from": "src", "to": "all"}],
    }
    bp = preflight(doc, registry)
    assert bp.cross_wires() == []
    assert ends(bp.for_rack("east").wires) == ["src.out>all.in"]
    west = bp.for_rack("west")
    assert (west.wires, west.outbound, west.inbound) == ((), (), ())


def test_memory_wire_between_racks_is_a_preflight_error(registry: GearRegistry) -> None:
    doc = {
        "name": "n",
        "gears": [gear("src", "t_source", "east"), gear("tag", "t_tag", "west")],
        "wires": [{"from": "src", "to": "tag", "transport": "memory"}],
    }
    with pytest.raises(ScenarioError) as caught:
        preflight(doc, registry)
    [problem] = caught.value.problems
    assert problem.path == "wires[0].transport"
    assert problem.message.startswith(
        "memory wire src.out → tag.in crosses racks ('east' → 'west'): only standard wires "
        "travel between racks"
    )
    # A blueprint built by other means is refused when cut, with the same words.
    standard = preflight({**doc, "wires": [{"from": "src", "to": "tag"}]}, registry)
    memory = WirePlan(Endpoint("src", "out"), Endpoint("tag", "in"), "memory")
    forged = Blueprint(standard.scenario, standard.gears, (memory,))
    with pytest.raises(ValueError, match="only standard wires travel between racks"):
        forged.for_rack("east")


def test_cross_permissions_of_three_racks(registry: GearRegistry) -> None:
    doc = {
        **THREE_RACKS,
        "gears": [*THREE_RACKS["gears"], gear("audit", "t_collect", "west", key="a")],
        # a second wire from src.out to west shares the subject: listed once
        "wires": [*THREE_RACKS["wires"], {"from": "src", "to": "audit"}],
    }
    perms = cross_permissions(preflight(doc, registry))
    assert perms == {
        "east": CrossPermissions(["flux.x.west.card_flow.src.out"], [], []),
        "west": CrossPermissions(
            ["flux.x.north.card_flow.tag.odd"], ["flux.x.west.card_flow.src.out"], ["east"]
        ),
        "north": CrossPermissions([], ["flux.x.north.card_flow.tag.odd"], ["west"]),
    }
    publish, subscribe, reply_to = perms["west"]  # a plain 3-tuple too
    assert (len(publish), len(subscribe), reply_to) == (1, 1, ["east"])
    assert hub_allow("west", perms["west"]) == (
        ["flux.x.north.card_flow.tag.odd", "_INBOX.east.>"],
        ["flux.x.west.card_flow.src.out", "_INBOX.west.>"],
    )
    assert hub_allow("east", perms["east"]) == (
        ["flux.x.west.card_flow.src.out"],
        ["_INBOX.east.>"],
    )


def test_cross_permissions_name_every_rack_even_without_cross_wires(
    registry: GearRegistry,
) -> None:
    doc = {
        "name": "solo",
        "racks": [{"name": "idle"}, {"name": "east"}],
        "gears": [gear("src", "t_source", "east"), gear("sink", "t_collect", "east", key="k")],
        "wires": [{"from": "src", "to": "sink"}],
    }
    assert cross_permissions(preflight(doc, registry)) == {
        "idle": CrossPermissions([], [], []),
        "east": CrossPermissions([], [], []),
    }


def test_cross_names() -> None:
    src = Endpoint("pos-in", "out")
    assert cross_subject("rack-b", "pay", src) == "flux.x.rack-b.pay.pos-in.out"
    assert cross_subject("b.c", "pay", Endpoint("g w", "o*")) == "flux.x.b_c.pay.g_w.o_"
    assert cross_subjects("rack-b", "pay") == "flux.x.rack-b.pay.>"
    assert inbox_prefix("rack-a") == "_INBOX.rack-a"
    wire = WirePlan(src, Endpoint("decode", "in"), "standard")
    out = WireRoute.outbound("pay", CrossWire(wire, "rack-b"))
    assert out.durable == "decode__in__pos-in__out__to__rack-b"
    assert out.source_subject == "flux.msg.pay.pos-in.out"  # what the port stored on rack A
    assert out.forward_subject == "flux.x.rack-b.pay.pos-in.out"
    assert out.replay_subject == "flux.msg.pay._replay.decode__in__pos-in__out__to__rack-b"
    assert (out.forwarding, out.peer, out.label) == (
        True,
        "rack-b",
        "pos-in.out → decode.in (to rack-b)",
    )
    into = WireRoute.inbound("pay", "rack-b", CrossWire(wire, "rack-a"))
    assert into.durable == "decode__in__pos-in__out__from__rack-a"
    assert into.source_subject == "flux.x.rack-b.pay.pos-in.out"
    assert into.dlq_subject == "flux.dlq.pay.decode__in__pos-in__out__from__rack-a"
    assert (into.forwarding, into.label) == (False, "pos-in.out → decode.in (from rack-a)")
    local = WireRoute.of("pay", wire)
    assert (local.durable, local.peer, local.forwarding) == ("decode__in__pos-in__out", "", False)
