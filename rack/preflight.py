"""Pre-flight: turn a raw scenario document into a `Blueprint`, or report every problem at once.

    blueprint = preflight(doc.raw, GearRegistry.discover(), lines=doc.lines)

Each piece is validated on its own (top-level keys, each rack, each gear, each wire), so one bad
gear does not hide the others; then the semantics: duplicate names, unknown gear types, each
gear's config against the gear's own model, declared ports, wire ends (gear and port), memory
wires across racks, `deploy` targets, duplicate wires. A failure raises `ScenarioError` whose
`problems` carry the YAML path (`gears[1].config.bind`) and, when known, the line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from rack.errors import Problem, ScenarioError
from rack.gear.base import DEFAULT_IN, DEFAULT_OUT, ERROR_PORT, Gear, GearConfig, Ports
from rack.gear.registry import AnyGear, GearRegistry
from rack.model.scenario import (
    NAME_PATTERN,
    Blueprint,
    Endpoint,
    GearPlan,
    GearSpec,
    RackRef,
    Scenario,
    WirePlan,
    WireSpec,
    cross_memory_problem,
    fingerprint,
)
from rack.scenario_files import Document, load_document

HEAD_KEYS = ("name", "meta", "spec", "racks")
MAX_ORDERED = 100_000


def preflight_file(path: Path | str, registry: GearRegistry) -> Blueprint:
    """Read a scenario file (YAML or the TOML form) and run pre-flight on it."""
    return preflight_document(load_document(path), registry)


def preflight_document(doc: Document, registry: GearRegistry) -> Blueprint:
    """Pre-flight a parsed `Document`; problem paths are given in the source's own terms."""
    try:
        return preflight(doc.raw, registry, lines=doc.lines)
    except ScenarioError as exc:
        if not doc.renames:
            raise
        problems = [Problem(doc.display_path(p.path), p.message, p.line) for p in exc.problems]
        raise ScenarioError(exc.summary, problems) from None


def preflight(
    raw: Any, registry: GearRegistry, *, lines: dict[str, int] | None = None
) -> Blueprint:
    """Validate `raw` (a parsed scenario document) against `registry`; see the module doc."""
    check = _Check(raw if isinstance(raw, dict) else {}, registry)
    if not isinstance(raw, dict):
        check.problem("<document>", f"a scenario is a mapping, not {type(raw).__name__}")
    else:
        check.run()
    scenario = None if check.problems else check.validate(Scenario, raw, "")
    if scenario is None:
        raise ScenarioError(
            f"scenario '{_title(raw)}' is invalid ({_count(len(check.problems))})",
            _ordered(check.problems, raw, lines or {}),
        )
    return Blueprint(scenario, check.plans, tuple(check.wires), digest(raw))


def digest(raw: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of a raw document: same content ⇒ same digest."""
    canonical = json.dumps(_canonical(raw), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


@dataclass(slots=True)
class _Gear:
    index: int
    spec: GearSpec
    cls: AnyGear | None = None
    config: GearConfig | None = None
    ports: Ports | None = None


@dataclass(slots=True)
class _Check:
    raw: dict[str, Any]
    registry: GearRegistry
    problems: list[Problem] = field(default_factory=list)
    declared: dict[str, int] = field(default_factory=dict)
    gears: dict[str, _Gear] = field(default_factory=dict)
    racks: list[str] = field(default_factory=list)
    plans: dict[str, GearPlan] = field(default_factory=dict)
    wires: list[WirePlan] = field(default_factory=list)

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def run(self) -> None:
        self.check_head()
        for i, item in enumerate(self.items("gears")):
            self.check_gear(i, item)
        seen: dict[tuple[Endpoint, Endpoint], int] = {}
        for j, item in enumerate(self.items("wires")):
            self.check_wire(j, item, seen)

    def items(self, key: str) -> list[Any]:
        value = self.raw.get(key, [])
        if isinstance(value, list):
            return value
        self.problem(key, f"must be a list, not {type(value).__name__}")
        return []

    def validate(self, model: type[BaseModel], data: Any, path: str) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for p, message in _explain(exc, data, path, _known_keys(model)):
                self.problem(p or "name", message)
            return None

    # --- top level ---------------------------------------------------------------------------

    def check_head(self) -> None:
        known = list(Scenario.model_fields)
        for key in self.raw:
            if key not in known:
                self.problem(str(key), f"unknown top-level key '{key}'; known: {', '.join(known)}")
        head = {k: self.raw[k] for k in HEAD_KEYS if k in self.raw}
        if self.validate(Scenario, head, "") is None:
            return
        for j, rack in enumerate(head.get("racks", [])):
            name = RackRef.model_validate(rack).name
            if name in self.racks:
                self.problem(f"racks[{j}].name", f"duplicate rack name '{name}'")
            else:
                self.racks.append(name)

    # --- gears -------------------------------------------------------------------------------

    def check_gear(self, i: int, item: Any) -> None:
        at = f"gears[{i}]"
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str):
            if name in self.declared:
                first = self.declared[name]
                self.problem(f"{at}.name", f"duplicate gear name '{name}' (first: gears[{first}])")
                return
            self.declared[name] = i
        spec = self.validate(GearSpec, item, at)
        if spec is None:
            return
        gear = self.gears[spec.name] = _Gear(i, spec)
        self.check_deploy(gear)
        if spec.type not in self.registry:
            self.problem(f"{at}.type", self.unknown_type(spec.type))
            return
        gear.cls = self.registry.get(spec.type)
        if not self.load_config(gear):
            gear.ports = _static_ports(gear.cls)  # still check wires when ports need no config
        if gear.ports is not None:
            self.check_ports(gear)

    def unknown_type(self, type_name: str) -> str:
        if type_name in self.registry.load_errors:
            return f"gear type '{type_name}' failed to load: {self.registry.load_errors[type_name]}"
        known = ", ".join(self.registry.names()) or "(none registered)"
        return f"unknown gear type '{type_name}'; known: {known}"

    def check_deploy(self, gear: _Gear) -> None:
        deploy = gear.spec.deploy
        if deploy is not None and self.racks and deploy not in self.racks:
            self.problem(
                f"gears[{gear.index}].deploy",
                f"gear '{gear.spec.name}' is deployed to rack '{deploy}', which is not listed "
                f"in racks; racks: {', '.join(self.racks)}",
            )

    def load_config(self, gear: _Gear) -> bool:
        at, spec, cls = f"gears[{gear.index}].config", gear.spec, gear.cls
        assert cls is not None
        try:
            gear.config = cls.parse_config(spec.config)
            gear.ports = cls.ports(gear.config)
        except ValidationError as exc:
            known = _known_keys(cls.config_model)
            for path, message in _explain(exc, spec.config, at, known, noun="config key"):
                self.problem(path, f"gear '{spec.name}': {message}")
            return False
        except Exception as exc:  # a third-party gear's own check: report, don't crash
            self.problem(at, f"gear '{spec.name}': config rejected: {type(exc).__name__}: {exc}")
            return False
        self.plans[spec.name] = GearPlan(
            spec.name,
            spec.type,
            cls,
            gear.config,
            gear.ports,
            spec.deploy,
            fingerprint(spec.type, gear.config),
        )
        return True

    def check_ports(self, gear: _Gear) -> None:
        assert gear.ports is not None
        have = (*gear.ports.inputs, *gear.ports.outputs)
        for k, port in enumerate(gear.spec.ports or []):
            if port not in have:
                self.problem(
                    f"gears[{gear.index}].ports[{k}]",
                    f"gear '{gear.spec.name}' ({gear.spec.type}) has no port '{port}'; "
                    f"its ports: {_describe_ports(gear.ports)}",
                )

    # --- wires -------------------------------------------------------------------------------

    def check_wire(self, j: int, item: Any, seen: dict[tuple[Endpoint, Endpoint], int]) -> None:
        at = f"wires[{j}]"
        spec = self.validate(WireSpec, item, at)
        if spec is None:
            return
        source = Endpoint.parse(spec.source, DEFAULT_OUT)
        target = Endpoint.parse(spec.target, DEFAULT_IN)
        ok = self.check_end(f"{at}.from", source, output=True)
        ok = self.check_end(f"{at}.to", target, output=False) and ok
        if (source, target) in seen:
            self.problem(
                at, f"duplicate wire {source} → {target} (same as wires[{seen[source, target]}])"
            )
            return
        seen[source, target] = j
        if not ok:
            return
        a, b = self.gears[source.gear].spec, self.gears[target.gear].spec
        if spec.transport == "memory" and a.deploy and b.deploy and a.deploy != b.deploy:
            plan = WirePlan(source, target, spec.transport)
            self.problem(f"{at}.transport", cross_memory_problem(plan, a.deploy, b.deploy))
            return
        if spec.transport == "memory" and spec.options_given():
            for key in spec.options_given():
                self.problem(
                    f"{at}.{key}",
                    f"'{key}' applies to standard (JetStream) wires only; "
                    f"wire {source} → {target} is a memory wire",
                )
            return
        self.wires.append(WirePlan(source, target, spec.transport, spec.options()))

    def check_end(self, path: str, end: Endpoint, *, output: bool) -> bool:
        """True when `end` names an existing port; False (reported or not) otherwise."""
        gear = self.gears.get(end.gear)
        if gear is None:
            if end.gear not in self.declared:  # a gear that failed validation is reported already
                names = ", ".join(self.declared) or "(none)"
                self.problem(path, f"unknown gear '{end.gear}' in '{end}'; gears: {names}")
            return False
        if gear.ports is None:
            return False
        ports = gear.ports.outputs if output else gear.ports.inputs
        if end.port not in ports:
            kind = "output" if output else "input"
            self.problem(
                path,
                f"gear '{end.gear}' ({gear.spec.type}) has no {kind} port '{end.port}'; "
                f"{kind} ports: {', '.join(ports) or '(none)'}",
            )
            return False
        return True


# --- pydantic errors → problems ----------------------------------------------------------------


def _explain(
    exc: ValidationError, data: Any, base: str, known: list[str], *, noun: str = "key"
) -> list[tuple[str, str]]:
    """One (path, message) per pydantic error, in words an operator understands (deduplicated)."""
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        path, rest = _locate(err["loc"], data, base, err["type"] == "missing")
        kind = err["type"]
        key = str(err["loc"][-1]) if err["loc"] else ""
        if kind == "extra_forbidden" and not rest:
            where = f"; known: {', '.join(known)}" if len(err["loc"]) == 1 else ""
            message = f"unknown {noun} '{key}'{where}"
        elif kind == "missing" and not rest:
            message = f"missing required {noun} '{key}'"
        elif (
            kind == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == NAME_PATTERN
        ):
            message = (
                f"{err['input']!r} is not a valid name: use 1-63 letters, digits, '_' or '-', "
                "starting with a letter or digit"
            )
        elif kind == "value_error" or not err["loc"] or "input" not in err:
            message = err["msg"].removeprefix("Value error, ")
        else:
            message = f"{err['msg']} (got {_short(err['input'])})"
        if rest:
            message = f"{'.'.join(rest)}: {message}"
        if (path, message) not in out:
            out.append((path, message))
    return out


def _locate(
    loc: tuple[int | str, ...], data: Any, base: str, missing: bool
) -> tuple[str, list[str]]:
    """Path of an error location within `data`, plus loc parts that are not data keys.

    pydantic adds type tags to union locations (`('x', 'int')`); following only what exists in the
    data keeps the path a real YAML path. A missing key is the one part that does not exist.
    """
    path, node = base, data
    for n, part in enumerate(loc):
        if _has(node, part):
            node = node[part]
        elif missing and n == len(loc) - 1 and isinstance(node, dict):
            pass
        else:
            return path, [str(p) for p in loc[n:]] if not missing else []
        path = f"{path}[{part}]" if isinstance(part, int) else _join(path, str(part))
    return path, []


def _static_ports(cls: AnyGear) -> Ports | None:
    """The ports of a gear whose ports do not depend on its config (None if they might)."""
    if getattr(cls.ports, "__func__", None) is not getattr(Gear.ports, "__func__", None):
        return None
    outputs = cls.outputs if ERROR_PORT in cls.outputs else (*cls.outputs, ERROR_PORT)
    return Ports(cls.inputs, outputs)


def _has(node: Any, part: int | str) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _known_keys(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _describe_ports(ports: Ports) -> str:
    return f"inputs {', '.join(ports.inputs) or '(none)'}; outputs {', '.join(ports.outputs)}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _title(raw: Any) -> str:
    if isinstance(raw, dict):
        meta = raw.get("meta")
        name = raw.get("name") or (meta.get("name") if isinstance(meta, dict) else None)
        if isinstance(name, str) and name:
            return name
    return "(unnamed)"


def _count(n: int) -> str:
    return f"{n} problem" if n == 1 else f"{n} problems"


# --- ordering ----------------------------------------------------------------------------------


def _ordered(problems: list[Problem], raw: Any, lines: dict[str, int]) -> list[Problem]:
    """Problems with their line, in order of appearance in the document (then of discovery)."""
    order = _document_order(raw)
    located = []
    for seq, p in enumerate(problems):
        anchor = _nearest(p.path, order)
        line = lines.get(_nearest(p.path, lines)) if lines else None
        located.append(((line or 0, order.get(anchor, 0), seq), Problem(p.path, p.message, line)))
    return [p for _, p in sorted(located, key=lambda item: item[0])]


def _nearest(path: str, known: dict[str, int]) -> str:
    """The longest prefix of `path` (at a `.` or `[` boundary) that is a key of `known`."""
    while path and path not in known:
        cut = max(path.rfind("."), path.rfind("["))
        path = path[: max(cut, 0)]
    return path


def _document_order(raw: Any) -> dict[str, int]:
    order: dict[str, int] = {}
    pending: list[tuple[str, Any]] = [("", raw)]
    while pending and len(order) < MAX_ORDERED:
        path, node = pending.pop()
        order.setdefault(path, len(order))
        if isinstance(node, dict):
            children = [(_join(path, str(k)), v) for k, v in node.items()]
        elif isinstance(node, list):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(node)]
        else:
            continue
        pending.extend(reversed(children))
    return order
