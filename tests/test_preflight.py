"""Pre-flight: a raw scenario becomes a Blueprint, or every problem is reported with its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest

from rack.errors import GearConfigError, Problem, ScenarioError
from rack.gear.base import Gear, GearConfig, Ports
from rack.gear.registry import GearRegistry
from rack.model.scenario import Endpoint, WirePlan, fingerprint
from rack.preflight import digest, preflight, preflight_file
from rack.scenario_files import parse_document

# --- test gears (independent of the built-ins) --------------------------------------------------


class TcpConfig(GearConfig):
    bind: str
    mode: Literal["server", "client"] = "server"


class Tcp(Gear[TcpConfig]):
    type_name = "tcp"
    config_model = TcpConfig


class CodecConfig(GearConfig):
    spec: str
    direction: Literal["decode", "encode"] = "decode"


class Codec(Gear[CodecConfig]):
    type_name = "codec"
    config_model = CodecConfig


class SwitchConfig(GearConfig):
    routes: list[str] = ["default"]


class Switch(Gear[SwitchConfig]):
    """Dynamic ports: one output per route."""

    type_name = "switch"
    config_model = SwitchConfig

    @classmethod
    def ports(cls, config: SwitchConfig) -> Ports:
        return Ports(("in",), (*config.routes, "error"))


class Sink(Gear[GearConfig]):
    type_name = "sink"
    outputs = ()


class Auth(GearConfig):
    token: str


class PickyConfig(GearConfig):
    limit: int | Literal["auto"] | None = None
    auth: Auth | None = None


class Picky(Gear[PickyConfig]):
    type_name = "picky"
    config_model = PickyConfig

    @classmethod
    def parse_config(cls, raw: dict[str, Any] | None) -> PickyConfig:
        config = super().parse_config(raw)
        if config.limit == 13:
            raise GearConfigError("limit 13 is unlucky")
        return config


@pytest.fixture
def registry() -> GearRegistry:
    registry = GearRegistry()
    for gear in (Tcp, Codec, Switch, Sink, Picky):
        registry.register(gear)
    registry.load_errors["broken"] = "acme.gears:Broken: ImportError: no module named acme"
    return registry


def problems_of(raw: Any, registry: GearRegistry, **kw: Any) -> list[Problem]:
    with pytest.raises(ScenarioError) as exc:
        preflight(raw, registry, **kw)
    return exc.value.problems


def paths_of(raw: Any, registry: GearRegistry) -> list[str]:
    return [p.path for p in problems_of(raw, registry)]


# --- valid scenarios ---------------------------------------------------------------------------


def test_seed_shape_echo_wire_to_itself(registry: GearRegistry) -> None:
    raw = {
        "name": "echo",
        "spec": "visa:v1.0.0",
        "gears": [{"name": "gw", "type": "tcp", "config": {"bind": ":9000"}}],
        "wires": [{"from": "gw.out", "to": "gw.in", "transport": "memory"}],
    }
    bp = preflight(raw, registry)
    assert bp.name == "echo"
    assert bp.scenario.spec == "visa:v1.0.0"
    gw = bp.gears["gw"]
    assert gw.gear_cls is Tcp
    assert gw.config == TcpConfig(bind=":9000")
    assert gw.ports == Ports(("in",), ("out", "error"))
    assert gw.fingerprint == fingerprint("tcp", TcpConfig(bind=":9000"))
    assert bp.wires == (WirePlan(Endpoint("gw", "out"), Endpoint("gw", "in"), "memory"),)
    assert bp.digest == digest(raw)
    assert len(bp.digest) == 64


def test_full_shape_with_racks_deploy_and_dynamic_ports(registry: GearRegistry) -> None:
    raw = {
        "meta": {"name": "payment-flow", "version": "1.2.0"},
        "racks": [{"name": "east", "labels": {"region": "eu"}}, {"name": "west"}],
        "gears": [
            {"name": "pos-in", "type": "tcp", "deploy": "east", "config": {"bind": ":8583"}},
            {"name": "route", "type": "switch", "deploy": "east", "config": {"routes": ["a", "b"]}},
            {"name": "decode", "type": "codec", "deploy": "west", "config": {"spec": "visa:v1"}},
            {"name": "dead", "type": "sink", "ports": ["in"]},
        ],
        "wires": [
            {"from": "pos-in", "to": "route", "transport": "memory"},
            {"from": "route.b", "to": "decode.in"},
            {"from": "route.error", "to": "dead"},
        ],
    }
    bp = preflight(raw, registry)
    assert bp.name == "payment-flow"
    assert bp.scenario.version == "1.2.0"
    assert list(bp.gears) == ["pos-in", "route", "decode", "dead"]
    assert bp.gears["route"].ports.outputs == ("a", "b", "error")
    assert [str(w.source) + ">" + str(w.target) for w in bp.wires] == [
        "pos-in.out>route.in",
        "route.b>decode.in",
        "route.error>dead.in",
    ]
    assert bp.wires[1].transport == "standard"
    east = bp.for_rack("east")
    assert set(east.gears) == {"pos-in", "route", "dead"}
    assert len(east.wires) == 2


def test_digest_is_independent_of_key_order(registry: GearRegistry) -> None:
    a = {"name": "n", "gears": [{"name": "s", "type": "sink"}]}
    b = {"gears": [{"type": "sink", "name": "s"}], "name": "n"}
    assert preflight(a, registry).digest == preflight(b, registry).digest
    assert preflight(a, registry).digest != preflight({**a, "name": "m"}, registry).digest


# --- every problem at once -----------------------------------------------------------------------

BROKEN = """\
name: broken-flow
colour: blue
gears:
  - name: gw
    type: tcp
    config:
      bind: ":9000"
      mode: sideways
  - name: dec
    type: codec
    config:
      spec: visa:v1
      directon: decode
  - name: gw
    type: tcp
  - name: mystery
    type: nosuch
wires:
  - from: gw.out
    to: dec.in
  - from: dec.out
    to: ghost.in
  - from: dec.nope
    to: gw
"""


def test_one_document_reports_every_problem_with_path_and_line(registry: GearRegistry) -> None:
    doc = parse_document(BROKEN)
    with pytest.raises(ScenarioError) as exc:
        preflight(doc.raw, registry, lines=doc.lines)
    assert exc.value.summary == "scenario 'broken-flow' is invalid (7 problems)"
    got = [(p.path, p.line) for p in exc.value.problems]
    assert got == [
        ("colour", 2),
        ("gears[0].config.mode", 8),
        ("gears[1].config.directon", 13),
        ("gears[2].name", 14),
        ("gears[3].type", 17),
        ("wires[1].to", 22),
        ("wires[2].from", 23),
    ]
    messages = [p.message for p in exc.value.problems]
    assert messages[0] == (
        "unknown top-level key 'colour'; known: name, meta, spec, racks, gears, wires"
    )
    assert "Input should be 'server' or 'client'" in messages[1]
    assert "'sideways'" in messages[1]
    assert messages[2] == "gear 'dec': unknown config key 'directon'; known: spec, direction"
    assert messages[3] == "duplicate gear name 'gw' (first: gears[0])"
    assert messages[4].startswith("unknown gear type 'nosuch'; known: codec, picky, sink")
    assert messages[5].startswith("unknown gear 'ghost' in 'ghost.in'; gears: gw, dec, mystery")
    assert messages[6] == "gear 'dec' (codec) has no output port 'nope'; output ports: out, error"
    assert "colour (line 2): unknown top-level key" in str(exc.value)


def test_problems_without_lines_follow_document_order(registry: GearRegistry) -> None:
    raw = {
        "name": "n",
        "gears": [
            {"name": "a", "type": "tcp", "config": {}},
            {"name": "b", "type": "nosuch"},
        ],
        "wires": [{"from": "a.out", "to": "zz"}],
        "extra": 1,
    }
    problems = problems_of(raw, registry)
    assert [(p.path, p.line) for p in problems] == [
        ("gears[0].config.bind", None),
        ("gears[1].type", None),
        ("wires[0].to", None),
        ("extra", None),
    ]
    assert problems[0].message == "gear 'a': missing required config key 'bind'"


def test_missing_key_gets_the_line_of_its_parent(registry: GearRegistry) -> None:
    doc = parse_document(
        "name: n\ngears:\n  - name: a\n    type: tcp\n    config:\n      mode: server\n"
    )
    problems = problems_of(doc.raw, registry, lines=doc.lines)
    assert [(p.path, p.line) for p in problems] == [("gears[0].config.bind", 5)]


# --- single checks -----------------------------------------------------------------------------


def test_structural_errors_of_each_piece(registry: GearRegistry) -> None:
    raw = {
        "name": "n",
        "racks": [{"name": "bad name!"}],
        "gears": [
            {"name": "ok", "type": "sink"},
            {"name": "a", "type": "sink", "confg": {}},
            {"type": "sink"},
            "not-a-gear",
        ],
        "wires": [{"from": "ok", "to": "ok", "transport": "carrier-pigeon"}, {"to": "ok"}],
    }
    problems = problems_of(raw, registry)
    assert [p.path for p in problems] == [
        "racks[0].name",
        "gears[1].confg",
        "gears[2].name",
        "gears[3]",
        "wires[0].transport",
        "wires[1].from",
    ]
    assert "not a valid name" in problems[0].message
    assert problems[1].message == "unknown key 'confg'; known: name, type, deploy, config, ports"
    assert problems[2].message == "missing required key 'name'"
    assert "'memory' or 'standard'" in problems[4].message
    assert problems[5].message == "missing required key 'from'"


def test_scenario_needs_a_name_and_lists(registry: GearRegistry) -> None:
    problems = problems_of({"gears": {"a": 1}, "wires": "x"}, registry)
    assert [p.path for p in problems] == ["name", "gears", "wires"]
    assert "needs `name`" in problems[0].message
    assert problems[1].message == "must be a list, not dict"
    mismatch = problems_of({"name": "a", "meta": {"name": "b"}}, registry)
    assert "differ" in mismatch[0].message


def test_raw_that_is_not_a_mapping(registry: GearRegistry) -> None:
    problems = problems_of(["a"], registry)
    assert problems[0].path == "<document>"


def test_gear_type_that_failed_to_load(registry: GearRegistry) -> None:
    problems = problems_of({"name": "n", "gears": [{"name": "b", "type": "broken"}]}, registry)
    assert problems[0].message.startswith("gear type 'broken' failed to load: acme.gears:Broken")


def test_ports_entries_must_exist(registry: GearRegistry) -> None:
    raw = {
        "name": "n",
        "gears": [
            {"name": "s", "type": "switch", "config": {"routes": ["x"]}, "ports": ["in", "x", "y"]}
        ],
    }
    (problem,) = problems_of(raw, registry)
    assert problem.path == "gears[0].ports[2]"
    assert problem.message == (
        "gear 's' (switch) has no port 'y'; its ports: inputs in; outputs x, error"
    )


def test_wire_ports_follow_dynamic_ports_and_direction(registry: GearRegistry) -> None:
    raw = {
        "name": "n",
        "gears": [
            {"name": "s", "type": "switch", "config": {"routes": ["x"]}},
            {"name": "k", "type": "sink"},
        ],
        "wires": [
            {"from": "s.x", "to": "k"},
            {"from": "s.default", "to": "k"},
            {"from": "k.error", "to": "s.x"},
            {"from": "k", "to": "s"},
        ],
    }
    problems = problems_of(raw, registry)
    assert [(p.path, p.message) for p in problems] == [
        ("wires[1].from", "gear 's' (switch) has no output port 'default'; output ports: x, error"),
        ("wires[2].to", "gear 's' (switch) has no input port 'x'; input ports: in"),
        ("wires[3].from", "gear 'k' (sink) has no output port 'out'; output ports: error"),
    ]


def test_memory_wire_across_racks_and_unknown_deploy(registry: GearRegistry) -> None:
    raw = {
        "name": "n",
        "racks": [{"name": "east"}, {"name": "west"}, {"name": "east"}],
        "gears": [
            {"name": "a", "type": "tcp", "deploy": "east", "config": {"bind": ":1"}},
            {"name": "b", "type": "tcp", "deploy": "west", "config": {"bind": ":2"}},
            {"name": "c", "type": "tcp", "deploy": "north", "config": {"bind": ":3"}},
            {"name": "d", "type": "tcp", "config": {"bind": ":4"}},
        ],
        "wires": [
            {"from": "a", "to": "b", "transport": "memory"},
            {"from": "a", "to": "b"},
            {"from": "a", "to": "d", "transport": "memory"},
        ],
    }
    problems = problems_of(raw, registry)
    assert [p.path for p in problems] == [
        "racks[2].name",
        "gears[2].deploy",
        "wires[0].transport",
        "wires[1]",
    ]
    assert problems[1].message == (
        "gear 'c' is deployed to rack 'north', which is not listed in racks; racks: east, west"
    )
    assert "use transport: standard" in problems[2].message
    assert problems[3].message == "duplicate wire a.out → b.in (same as wires[0])"


def test_deploy_is_free_when_no_racks_are_listed(registry: GearRegistry) -> None:
    raw = {"name": "n", "gears": [{"name": "a", "type": "sink", "deploy": "anywhere"}]}
    assert preflight(raw, registry).gears["a"].deploy == "anywhere"


def test_wires_to_gears_that_failed_are_not_reported_twice(registry: GearRegistry) -> None:
    raw = {
        "name": "n",
        "gears": [
            {"name": "a", "type": "tcp", "config": {"mode": "server"}},
            {"name": "b", "type": "nosuch"},
            {"name": "c", "type": "sink", "bogus": 1},
        ],
        "wires": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}],
    }
    assert paths_of(raw, registry) == ["gears[0].config.bind", "gears[1].type", "gears[2].bogus"]


def test_config_errors_inside_nested_and_union_fields(registry: GearRegistry) -> None:
    raw = {
        "name": "n",
        "gears": [
            {"name": "p", "type": "picky", "config": {"limit": "lots", "auth": {"tok": "x"}}},
            {"name": "q", "type": "picky", "config": {"limit": 13}},
        ],
    }
    problems = problems_of(raw, registry)
    got = [(p.path, p.message) for p in problems]
    assert (
        "gears[1].config",
        "gear 'q': config rejected: GearConfigError: limit 13 is unlucky",
    ) in got
    paths = [p for p, _ in got]
    assert "gears[0].config.limit" in paths
    assert "gears[0].config.auth.tok" in paths
    assert "gears[0].config.auth.token" in paths
    assert all(not p.endswith((".int", ".Auth")) for p in paths)
    messages = dict(got)
    assert messages["gears[0].config.auth.tok"] == "gear 'p': unknown config key 'tok'"
    assert messages["gears[0].config.auth.token"] == "gear 'p': missing required config key 'token'"


# --- files -------------------------------------------------------------------------------------

EQUIVALENT_YAML = """\
name: edge
gears:
  - name: ingress_gateway
    type: tcp
    config: {mode: server, bind: "0.0.0.0:8000"}
  - name: logic_processor
    type: switch
    config: {routes: [a, b]}
wires:
  - {from: ingress_gateway, to: logic_processor}
  - {from: logic_processor.a, to: ingress_gateway.in, transport: memory}
"""

EQUIVALENT_TOML = """\
[rack]
name = "edge-1"

[gears.ingress_gateway]
spec = "tcp"
config = { mode = "server", bind = "0.0.0.0:8000" }

[gears.logic_processor]
type = "switch"
config = { routes = ["a", "b"] }

[bus.routes.ingress_gateway]
targets = ["logic_processor"]

[bus.routes.logic_processor]
port = "a"
targets = ["ingress_gateway.in"]
transport = "memory"
"""


def test_toml_form_gives_the_same_blueprint_as_yaml(tmp_path: Path, registry: GearRegistry) -> None:
    (tmp_path / "edge.yaml").write_text(EQUIVALENT_YAML)
    (tmp_path / "edge.toml").write_text(EQUIVALENT_TOML)
    from_yaml = preflight_file(tmp_path / "edge.yaml", registry)
    from_toml = preflight_file(tmp_path / "edge.toml", registry)
    assert from_toml.name == from_yaml.name == "edge"
    assert from_toml.gears == from_yaml.gears
    assert from_toml.wires == from_yaml.wires
    assert from_toml.scenario == from_yaml.scenario
    assert from_toml.digest == from_yaml.digest


def test_toml_problems_use_toml_paths(tmp_path: Path, registry: GearRegistry) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(
        EQUIVALENT_TOML.replace('mode = "server"', 'mode = "sideways"').replace(
            '"ingress_gateway.in"', '"ingress_gateway.nope"'
        )
    )
    with pytest.raises(ScenarioError) as exc:
        preflight_file(path, registry)
    assert [p.path for p in exc.value.problems] == [
        "gears.ingress_gateway.config.mode",
        "bus.routes.logic_processor.targets[0]",
    ]


def test_preflight_file_reports_lines(tmp_path: Path, registry: GearRegistry) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    with pytest.raises(ScenarioError) as exc:
        preflight_file(path, registry)
    assert exc.value.problems[0] == Problem(
        "colour",
        "unknown top-level key 'colour'; known: name, meta, spec, racks, gears, wires",
        2,
    )


def test_standard_wire_options_are_parsed_and_refused_on_memory_wires() -> None:
    from rack.gear.registry import GearRegistry

    registry = GearRegistry.discover()
    doc = {
        "name": "opts",
        "gears": [
            {"name": "a", "type": "generator"},
            {"name": "b", "type": "sink"},
            {"name": "c", "type": "sink"},
        ],
        "wires": [
            {"from": "a", "to": "b", "max_deliver": 3, "backoff": [0.5, 1], "ack_wait": 2},
            {"from": "a", "to": "c", "transport": "memory", "max_deliver": 3},
        ],
    }
    with pytest.raises(ScenarioError) as err:
        preflight(doc, registry)
    [problem] = err.value.problems
    assert problem.path == "wires[1].max_deliver"
    assert "standard (JetStream) wires only" in problem.message
    doc["wires"] = doc["wires"][:1]  # type: ignore[index]
    [wire] = preflight(doc, registry).wires
    assert wire.transport == "standard"
    assert (wire.options.max_deliver, wire.options.backoff, wire.options.ack_wait) == (
        3,
        (0.5, 1.0),
        2.0,
    )
    assert wire.options.max_ack_pending == 1024  # default kept
