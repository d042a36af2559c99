"""Scenario files: read YAML (or the seed's fluxrig.toml form) into a raw document plus a line map.

    doc = load_document(Path("payment.yaml"))
    doc.raw                      # {"name": ..., "gears": [...], "wires": [...]}
    doc.lines["gears[1].config.bind"]   # 1-based line of that key

Only reading happens here; `rack.preflight` validates. Rejected at once, with a `ScenarioError`:
non-UTF-8 bytes, files over 1 MiB, YAML syntax errors (with line and column), duplicate mapping
keys (PyYAML would silently keep the last), documents whose top level is not a mapping, and
alias bombs (a document that expands to more than `MAX_NODES` nodes).

The TOML form (seeds: developing gears) is converted to the same raw scenario::

    name = "edge"                       # optional; default: the file's stem
    [gears.ingress_gateway]
    spec = "io_tcp"                     # or `type`
    config = { mode = "server", bind = "0.0.0.0:8000" }
    [bus.routes.ingress_gateway]
    targets = ["logic_processor"]       # each becomes a wire ingress_gateway.out → target
    port = "out"                        # optional source port
    transport = "memory"                # optional; default standard

`[rack]` (rack settings, see `rack.settings`) and `[scenario]` are not part of the scenario.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from rack.errors import Problem, ScenarioError

MAX_BYTES = 1024 * 1024
MAX_NODES = 100_000
DOCUMENT = "<document>"
MERGE_TAG = "tag:yaml.org,2002:merge"
TOML_IGNORED = ("rack", "scenario")
TOML_SCENARIO_KEYS = ("name", "gears", "bus")

Syntax = Literal["yaml", "toml"]


@dataclass(frozen=True, slots=True)
class Document:
    """A scenario as read from a file or an API body, not yet validated.

    `lines` maps YAML paths (`gears[1].config.bind`) to 1-based line numbers (empty for TOML).
    `renames` maps paths of the converted document to the source's own terms (TOML only):
    `gears[0]` → `gears.ingress_gateway`; see `display_path`.
    """

    raw: Any
    lines: dict[str, int]
    source: str
    renames: dict[str, str] = field(default_factory=dict)

    def display_path(self, path: str) -> str:
        """`path` in the source's own terms (the longest renamed prefix is replaced)."""
        for prefix in sorted(self.renames, key=len, reverse=True):
            if path == prefix or path.startswith((f"{prefix}.", f"{prefix}[")):
                return self.renames[prefix] + path[len(prefix) :]
        return path


def load_document(path: Path | str) -> Document:
    """Read a scenario file (`.toml` → the TOML form, anything else → YAML)."""
    path = Path(path)
    text = _read_text(path)
    syntax: Syntax = "toml" if path.suffix.lower() == ".toml" else "yaml"
    return parse_document(text, str(path), syntax=syntax)


def parse_document(text: str, source: str = "<string>", *, syntax: Syntax = "yaml") -> Document:
    """Parse scenario text (e.g. an API body); `source` names it in errors."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        _fail(source, f"larger than {MAX_BYTES} bytes; a scenario file is at most 1 MiB")
    if syntax == "toml":
        return _parse_toml(text, source)
    return _parse_yaml(text, source)


def _fail(source: str, message: str, line: int | None = None) -> NoReturn:
    raise ScenarioError(f"cannot read scenario {source}", [Problem(DOCUMENT, message, line)])


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        _fail(str(path), f"larger than {MAX_BYTES} bytes; a scenario file is at most 1 MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        _fail(str(path), f"not UTF-8 (invalid byte at offset {exc.start}); save as UTF-8", line)


# --- YAML -------------------------------------------------------------------------------------


def _parse_yaml(text: str, source: str) -> Document:
    try:  # the loader's constructor already reads the stream (control characters raise)
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        _fail(source, f"YAML error: {exc}")
    try:
        node = loader.get_single_node()
        lines = _line_map(node, source) if node is not None else {}
        raw = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        _fail(source, f"YAML syntax error{where}: {what}", mark.line + 1 if mark else None)
    except yaml.YAMLError as exc:
        _fail(source, f"YAML error: {exc}")
    except RecursionError:
        _fail(source, "nested too deeply")
    finally:
        loader.dispose()
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else f"a {type(raw).__name__}"
        _fail(source, f"the top level must be a mapping (name, gears, wires, ...), not {kind}", 1)
    return Document(raw, lines, source)


def _line_map(root: Node, source: str) -> dict[str, int]:
    """Walk the node tree: path → 1-based line; duplicate keys and alias bombs are errors."""
    lines: dict[str, int] = {}
    problems: list[Problem] = []
    checked: set[int] = set()
    for count, (path, node, key_line, stack) in enumerate(_walk(root)):
        if count >= MAX_NODES:
            _fail(source, f"expands to more than {MAX_NODES} nodes (aliases?); simplify it")
        if node in stack:
            _fail(source, "recursive alias (a node that contains itself)", key_line)
        lines.setdefault(path, key_line)
        if isinstance(node, MappingNode) and id(node) not in checked:
            checked.add(id(node))
            problems.extend(_duplicates(node, path))
    if problems:
        raise ScenarioError(f"cannot read scenario {source}: duplicate keys", problems)
    return lines


Visit = tuple[str, Node, int, tuple[Node, ...]]


def _walk(root: Node) -> Iterator[Visit]:
    pending: list[Visit] = [("", root, root.start_mark.line + 1, ())]
    while pending:
        path, node, line, stack = pending.pop()
        yield path, node, line, stack
        if node in stack:
            continue
        inner = (*stack, node)
        children: list[Visit] = []
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if key.tag == MERGE_TAG:
                    continue
                children.append((_join(path, _key(key)), value, key.start_mark.line + 1, inner))
        elif isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                children.append((f"{path}[{i}]", item, item.start_mark.line + 1, inner))
        pending.extend(reversed(children))


def _key(node: Node) -> str:
    return str(node.value) if isinstance(node, ScalarNode) else "?"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _duplicates(node: MappingNode, path: str) -> list[Problem]:
    first: dict[str, int] = {}
    problems = []
    for key, _ in node.value:
        if key.tag == MERGE_TAG or not isinstance(key, ScalarNode):
            continue
        line = key.start_mark.line + 1
        if key.value in first:
            problems.append(
                Problem(
                    _join(path, key.value),
                    f"duplicate key '{key.value}' (first on line {first[key.value]}); "
                    "keep one — otherwise only the last would count",
                    line,
                )
            )
        else:
            first[key.value] = line
    return problems


# --- TOML -------------------------------------------------------------------------------------


def _parse_toml(text: str, source: str) -> Document:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"at line (\d+)", str(exc))
        _fail(source, f"TOML syntax error: {exc}", int(found.group(1)) if found else None)
    stem = Path(source).stem if not source.startswith("<") else "scenario"
    raw, renames, problems = toml_to_scenario(data, default_name=stem)
    if problems:
        raise ScenarioError(f"cannot read scenario {source} ({len(problems)} problems)", problems)
    return Document(raw, {}, source, renames)


def toml_to_scenario(
    data: dict[str, Any], *, default_name: str
) -> tuple[dict[str, Any], dict[str, str], list[Problem]]:
    """Convert the fluxrig.toml form to the raw scenario dict.

    Returns (raw, renames: converted path → TOML path, problems found while converting).
    Keys other than `gears`, `bus`, `name`, `rack` and `scenario` are passed through unchanged so
    that pre-flight reports them (or accepts the scenario's own keys: meta, spec, racks, wires).
    """
    raw: dict[str, Any] = {"name": data.get("name", default_name)}
    for key, value in data.items():
        if key not in (*TOML_SCENARIO_KEYS, *TOML_IGNORED):
            raw[key] = value
    renames: dict[str, str] = {}
    problems: list[Problem] = []
    gears = _toml_gears(data.get("gears", {}), renames, problems)
    wires = _toml_wires(data.get("bus", {}), len(raw.get("wires", [])), renames, problems)
    raw["gears"] = gears
    if "wires" in raw and not isinstance(raw["wires"], list):
        problems.append(Problem("wires", "must be an array of tables ([[wires]])"))
    raw["wires"] = [*_as_list(raw.get("wires")), *wires]
    return raw, renames, problems


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _toml_gears(
    table: Any, renames: dict[str, str], problems: list[Problem]
) -> list[dict[str, Any]]:
    if not isinstance(table, dict):
        problems.append(Problem("gears", "must be a table of gears: [gears.NAME]"))
        return []
    gears: list[dict[str, Any]] = []
    for name, entry in table.items():
        where = f"gears.{name}"
        if not isinstance(entry, dict):
            problems.append(Problem(where, "must be a table: [gears.NAME] with spec and config"))
            continue
        gear = dict(entry)
        if "spec" in gear and "type" in gear:
            problems.append(Problem(where, "give the gear type once: `spec` or `type`, not both"))
            continue
        gear = {"name": name, "type": gear.pop("spec", gear.pop("type", None)), **gear}
        if gear["type"] is None:
            del gear["type"]
        at = f"gears[{len(gears)}]"
        renames[at] = renames[f"{at}.name"] = where
        renames[f"{at}.type"] = next(
            (f"{where}.{k}" for k in ("spec", "type") if k in entry), where
        )
        gears.append(gear)
    return gears


def _toml_wires(
    bus: Any, offset: int, renames: dict[str, str], problems: list[Problem]
) -> list[dict[str, Any]]:
    routes = bus.get("routes", {}) if isinstance(bus, dict) else None
    if not isinstance(routes, dict):
        problems.append(Problem("bus.routes", "must be a table of routes: [bus.routes.NAME]"))
        return []
    wires: list[dict[str, Any]] = []
    for name, route in routes.items():
        where = f"bus.routes.{name}"
        if not isinstance(route, dict):
            problems.append(Problem(where, "must be a table with `targets`"))
            continue
        unknown = sorted(set(route) - {"targets", "port", "transport"})
        if unknown:
            problems.append(
                Problem(
                    f"{where}.{unknown[0]}",
                    f"unknown route key '{unknown[0]}'; known: targets, port, transport",
                )
            )
            continue
        targets = route.get("targets")
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            problems.append(Problem(f"{where}.targets", "must be a list of gear names or ports"))
            continue
        source = f"{name}.{route['port']}" if "port" in route else name
        for i, target in enumerate(targets):
            wire = {"from": source, "to": target}
            if "transport" in route:
                wire["transport"] = route["transport"]
            at = f"wires[{offset + len(wires)}]"
            renames[at] = where
            renames[f"{at}.from"] = f"{where}.port" if "port" in route else where
            renames[f"{at}.to"] = f"{where}.targets[{i}]"
            renames[f"{at}.transport"] = f"{where}.transport"
            wires.append(wire)
    return wires
