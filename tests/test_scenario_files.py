"""Reading scenario files: YAML with a line map, the TOML form, and everything rejected on read."""

from __future__ import annotations

from pathlib import Path

import pytest

from rack.errors import ScenarioError
from rack.scenario_files import MAX_BYTES, load_document, parse_document

SCENARIO = """\
name: echo
gears:
  - name: gw
    type: io_tcp
    config:
      mode: server
      bind: ":9000"
  - name: log
    type: log
wires:
  - from: gw.out
    to: gw.in
    transport: memory
"""


def problem_of(exc: pytest.ExceptionInfo[ScenarioError]) -> tuple[str, str, int | None]:
    (problem,) = exc.value.problems
    return problem.path, problem.message, problem.line


def test_yaml_document_has_raw_and_line_map(tmp_path: Path) -> None:
    path = tmp_path / "echo.yaml"
    path.write_text(SCENARIO)
    doc = load_document(path)
    assert doc.source == str(path)
    assert doc.raw["gears"][0]["config"] == {"mode": "server", "bind": ":9000"}
    assert doc.lines["name"] == 1
    assert doc.lines["gears[0]"] == 3
    assert doc.lines["gears[0].config.bind"] == 7
    assert doc.lines["gears[1].type"] == 9
    assert doc.lines["wires[0].transport"] == 13


def test_flow_style_and_anchors_are_mapped() -> None:
    doc = parse_document(
        "name: n\nbase: &cfg {mode: server, bind: ':1'}\n"
        "gears: [{name: a, type: t, config: *cfg}]\n"
    )
    assert doc.source == "<string>"
    assert doc.raw["gears"][0]["config"] == {"mode": "server", "bind": ":1"}
    assert doc.lines["gears[0].config"] == 3
    assert doc.lines["gears[0].config.bind"] == 2  # the alias points at the anchored mapping


def test_syntax_error_carries_line_and_column() -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_document("name: x\ngears:\n  - name: a\n   type: [\n")
    _, message, line = problem_of(exc)
    assert line == 4
    assert "YAML syntax error" in message
    assert "column" in message


def test_duplicate_keys_are_reported_with_their_path() -> None:
    text = "name: x\ngears:\n  - name: a\n    type: t\n    config: {bind: ':1', bind: ':2'}\n"
    text += "name: y\n"
    with pytest.raises(ScenarioError) as exc:
        parse_document(text)
    got = [(p.path, p.line) for p in exc.value.problems]
    assert got == [("name", 6), ("gears[0].config.bind", 5)]
    assert "duplicate key 'name' (first on line 1)" in exc.value.problems[0].message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("- a\n- b\n", "not a list"),
        ("", "not empty"),
        ("just text\n", "not a str"),
    ],
)
def test_top_level_must_be_a_mapping(text: str, words: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_document(text)
    assert words in problem_of(exc)[1]


def test_unsafe_tags_are_rejected() -> None:
    with pytest.raises(ScenarioError, match="could not determine a constructor"):
        parse_document("name: !!python/object/apply:os.system ['true']\n")


def test_alias_bomb_and_recursive_alias_are_rejected() -> None:
    rows = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, cur in zip("abcde", "bcdef", strict=True):
        rows.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 10)}]")
    with pytest.raises(ScenarioError, match="more than 100000 nodes"):
        parse_document("\n".join(rows))
    with pytest.raises(ScenarioError, match="recursive alias"):
        parse_document("a: &a [*a]\n")


def test_multiple_documents_are_rejected() -> None:
    with pytest.raises(ScenarioError, match="expected a single document"):
        parse_document("name: a\n---\nname: b\n")


def test_non_utf8_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ScenarioError) as exc:
        load_document(path)
    assert "not UTF-8" in problem_of(exc)[1]
    assert problem_of(exc)[2] == 1


def test_oversize_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("name: x\n# " + "x" * MAX_BYTES + "\n")
    with pytest.raises(ScenarioError, match="at most 1 MiB"):
        load_document(path)
    with pytest.raises(ScenarioError, match="at most 1 MiB"):
        parse_document(path.read_text())


def test_missing_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read scenario"):
        load_document(tmp_path / "nope.yaml")


# --- TOML form ----------------------------------------------------------------------------


TOML = """\
[rack]
name = "edge-1"

[gears.ingress_gateway]
spec = "io_tcp"
config = { mode = "server", bind = "0.0.0.0:8000" }

[gears.logic_processor]
type = "logic"
deploy = "edge-1"

[bus.routes.ingress_gateway]
targets = ["logic_processor", "audit.in"]

[bus.routes.logic_processor]
port = "ok"
transport = "memory"
targets = ["ingress_gateway.in"]
"""


def test_toml_form_converts_to_the_scenario_shape(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(TOML)
    doc = load_document(path)
    assert doc.lines == {}
    assert doc.raw == {
        "name": "gateway",
        "gears": [
            {
                "name": "ingress_gateway",
                "type": "io_tcp",
                "config": {"mode": "server", "bind": "0.0.0.0:8000"},
            },
            {"name": "logic_processor", "type": "logic", "deploy": "edge-1"},
        ],
        "wires": [
            {"from": "ingress_gateway", "to": "logic_processor"},
            {"from": "ingress_gateway", "to": "audit.in"},
            {"from": "logic_processor.ok", "to": "ingress_gateway.in", "transport": "memory"},
        ],
    }
    assert doc.display_path("gears[0].config.bind") == "gears.ingress_gateway.config.bind"
    assert doc.display_path("gears[1].type") == "gears.logic_processor.type"
    assert doc.display_path("wires[1].to") == "bus.routes.ingress_gateway.targets[1]"
    assert doc.display_path("wires[2].from") == "bus.routes.logic_processor.port"
    assert doc.display_path("meta.name") == "meta.name"


def test_toml_name_and_scenario_keys_pass_through() -> None:
    doc = parse_document(
        'name = "plant"\nspec = "modbus:v1"\n[scenario]\nfile = "x"\n'
        '[[racks]]\nname = "r1"\n[[wires]]\nfrom = "a"\nto = "b"\n',
        syntax="toml",
    )
    assert doc.raw == {
        "name": "plant",
        "spec": "modbus:v1",
        "racks": [{"name": "r1"}],
        "gears": [],
        "wires": [{"from": "a", "to": "b"}],
    }


def test_toml_syntax_error_has_line() -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_document('name = "x"\n[gears.a\nspec = "t"\n', "edge.toml", syntax="toml")
    _, message, line = problem_of(exc)
    assert "TOML syntax error" in message
    assert line == 2


def test_toml_conversion_problems_are_all_reported() -> None:
    text = (
        '[gears.a]\nspec = "x"\ntype = "y"\n'
        "[gears]\nb = 3\n"
        '[bus.routes.a]\ntargets = "b"\n'
        '[bus.routes.c]\ntargets = ["a"]\nqueue = 1\n'
    )
    with pytest.raises(ScenarioError) as exc:
        parse_document(text, syntax="toml")
    assert [p.path for p in exc.value.problems] == [
        "gears.a",
        "gears.b",
        "bus.routes.a.targets",
        "bus.routes.c.queue",
    ]
    assert "not both" in exc.value.problems[0].message
    assert "known: targets, port, transport" in exc.value.problems[3].message


def test_control_characters_are_a_clear_error_not_a_crash() -> None:
    with pytest.raises(ScenarioError, match=r"YAML error: .*special characters are not allowed"):
        parse_document("name: x\x07\n")
