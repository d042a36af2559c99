"""Scenario documents (pydantic, unknown keys rejected) and the validated `Blueprint` a rack runs.

Two accepted shapes, one model:

* the seed's:   `name`, `spec`, `wires: [{from, to, transport}]` (+ `gears`)
* the fuller:   `meta: {name, version}`, `racks`, `gears: [{name, type, deploy, config, ports}]`,
                `wires: [{from, to, transport}]`

A wire end is `gear.port`, or just `gear` for its default port (`out` as a source, `in` as a
target). `transport` is `standard` (NATS JetStream, the default) or `memory`.

`rack.preflight.preflight()` turns a document into a `Blueprint`: every gear's config parsed by
its own model, every wire resolved, every problem reported at once with its YAML path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from rack.gear.base import Gear, GearConfig, Ports

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
Transport = Literal["memory", "standard"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ScenarioMeta(_Strict):
    name: str = Field(min_length=1, max_length=200, description="Human-readable scenario name.")
    version: str | None = Field(default=None, description="Free-form version, e.g. SemVer.")


class RackRef(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Rack name as enrolled in the registry.")
    labels: dict[str, str] = Field(default_factory=dict)


class GearSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Unique gear name within the scenario.")
    type: str = Field(min_length=1, description="Registered gear type, e.g. io_tcp.")
    deploy: str | None = Field(
        default=None, description="Rack that runs this gear; unset = every rack."
    )
    config: dict[str, Any] = Field(default_factory=dict, description="Validated by the gear.")
    ports: list[str] | None = Field(
        default=None,
        description="Optional: the port names this gear instance is expected to have; each must "
        "exist on the gear (documents intent and is checked at pre-flight).",
    )


STANDARD_OPTIONS = (
    "max_deliver",
    "ack_wait",
    "max_ack_pending",
    "backoff",
    "max_msgs",
    "max_bytes",
    "max_age",
    "duplicate_window",
)


class WireSpec(_Strict):
    source: str = Field(alias="from", min_length=1, description="`gear.port` or `gear` (port out)")
    target: str = Field(alias="to", min_length=1, description="`gear.port` or `gear` (port in)")
    transport: Transport = "standard"
    # Options of `standard` (JetStream) wires; pre-flight rejects them on memory wires.
    max_deliver: int | None = Field(
        default=None, ge=1, le=1000, description="Deliveries before the message goes to the DLQ."
    )
    ack_wait: float | None = Field(
        default=None, gt=0, le=3600, description="Seconds before an unacked message is redelivered."
    )
    max_ack_pending: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Unacked messages in flight (flow control)."
    )
    backoff: list[float] | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description="Redelivery delays in seconds after each failure (the last one repeats).",
    )
    max_msgs: int | None = Field(default=None, ge=1, description="Stream retention: messages.")
    max_bytes: int | None = Field(default=None, ge=1, description="Stream retention: bytes.")
    max_age: float | None = Field(default=None, gt=0, description="Stream retention: seconds.")
    duplicate_window: float | None = Field(
        default=None,
        gt=0,
        le=86400,
        description="Seconds within which a repeated fluxID is dropped.",
    )

    def options(self) -> WireOptions:
        given = {k: getattr(self, k) for k in STANDARD_OPTIONS if getattr(self, k) is not None}
        if "backoff" in given:
            given["backoff"] = tuple(given["backoff"])
        return WireOptions(**given)

    def options_given(self) -> list[str]:
        return [k for k in STANDARD_OPTIONS if getattr(self, k) is not None]


class Scenario(_Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    meta: ScenarioMeta | None = None
    spec: str | None = Field(default=None, description="Default spec reference (name:tag).")
    racks: list[RackRef] = Field(default_factory=list)
    gears: list[GearSpec] = Field(default_factory=list)
    wires: list[WireSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _named(self) -> Scenario:
        if self.name is None and self.meta is None:
            raise ValueError("a scenario needs `name` (or `meta.name`)")
        if self.name and self.meta and self.name != self.meta.name:
            raise ValueError(f"`name` ({self.name!r}) and `meta.name` ({self.meta.name!r}) differ")
        return self

    @property
    def title(self) -> str:
        return self.name or (self.meta.name if self.meta else "")

    @property
    def version(self) -> str | None:
        return self.meta.version if self.meta else None


@dataclass(frozen=True, slots=True)
class Endpoint:
    gear: str
    port: str

    @classmethod
    def parse(cls, text: str, default_port: str) -> Endpoint:
        gear, dot, port = text.strip().partition(".")
        return cls(gear, port if dot else default_port)

    def __str__(self) -> str:
        return f"{self.gear}.{self.port}"


@dataclass(frozen=True, slots=True)
class GearPlan:
    """One validated gear: its class, parsed config, ports, and a fingerprint of its definition."""

    name: str
    type_name: str
    gear_cls: type[Gear[Any]]
    config: GearConfig
    ports: Ports
    deploy: str | None
    fingerprint: str


@dataclass(frozen=True, slots=True)
class WireOptions:
    """Delivery and retention options of a `standard` wire (defaults when not given)."""

    max_deliver: int = 5
    ack_wait: float = 30.0
    max_ack_pending: int = 1024
    backoff: tuple[float, ...] = (0.1, 0.5, 2.0, 5.0)
    max_msgs: int = -1
    max_bytes: int = -1
    max_age: float = 0.0
    duplicate_window: float = 120.0


@dataclass(frozen=True, slots=True)
class WirePlan:
    source: Endpoint
    target: Endpoint
    transport: Transport
    options: WireOptions = field(default_factory=WireOptions)


@dataclass(frozen=True, slots=True)
class CrossWire:
    """A standard wire between two racks, seen from one of them: `peer` is the other rack (the
    target's rack for an outbound wire, the source's rack for an inbound one)."""

    wire: WirePlan
    peer: str


@dataclass(frozen=True, slots=True)
class Blueprint:
    """A scenario that passed pre-flight: what a rack can run as is.

    Cut for one rack (`for_rack`), `wires` are the wires whose two ends run there, `outbound`
    the cross-rack wires fed by a gear here and `inbound` those feeding a gear here; `rack` is
    the rack it was cut for (None: the whole scenario, where `outbound`/`inbound` are empty).
    """

    scenario: Scenario
    gears: dict[str, GearPlan]
    wires: tuple[WirePlan, ...]
    digest: str = field(default="")
    outbound: tuple[CrossWire, ...] = ()
    inbound: tuple[CrossWire, ...] = ()
    rack: str | None = None

    @property
    def name(self) -> str:
        return self.scenario.title

    def crossing(self, wire: WirePlan) -> tuple[str, str] | None:
        """(source rack, target rack) when `wire` joins gears with explicit, different `deploy`.

        A gear without `deploy` runs on every rack, so a wire touching one is local wherever
        both ends run."""
        source, target = self.gears.get(wire.source.gear), self.gears.get(wire.target.gear)
        if source is None or target is None or not source.deploy or not target.deploy:
            return None
        return None if source.deploy == target.deploy else (source.deploy, target.deploy)

    def cross_wires(self) -> list[tuple[WirePlan, str, str]]:
        """Every wire between two racks, with its (source rack, target rack)."""
        return [(w, *ends) for w in self.wires if (ends := self.crossing(w)) is not None]

    def rack_names(self) -> list[str]:
        """The racks the scenario names: its `racks`, then every `deploy` (first seen order)."""
        names = [r.name for r in self.scenario.racks]
        names += [g.deploy for g in self.gears.values() if g.deploy]
        return list(dict.fromkeys(names))

    def for_rack(self, rack: str) -> Blueprint:
        """The part of the scenario that runs on `rack`: its gears, the wires between them, and
        the wires that cross to (`outbound`) or from (`inbound`) another rack.

        Gears without `deploy` run on every rack. Only standard wires cross racks (pre-flight
        rejects a memory wire that would; `ValueError` here if one slipped through).
        """
        if self.rack is not None:
            if rack != self.rack:
                raise ValueError(f"blueprint already cut for rack '{self.rack}', not '{rack}'")
            return self
        gears = {n: g for n, g in self.gears.items() if g.deploy in (None, rack)}
        local: list[WirePlan] = []
        outbound: list[CrossWire] = []
        inbound: list[CrossWire] = []
        for wire in self.wires:
            ends = self.crossing(wire)
            if ends is None:
                if wire.source.gear in gears and wire.target.gear in gears:
                    local.append(wire)
                continue
            if wire.transport != "standard":
                raise ValueError(cross_memory_problem(wire, *ends))
            if ends[0] == rack:
                outbound.append(CrossWire(wire, ends[1]))
            elif ends[1] == rack:
                inbound.append(CrossWire(wire, ends[0]))
        return Blueprint(
            self.scenario, gears, tuple(local), self.digest, tuple(outbound), tuple(inbound), rack
        )


def cross_memory_problem(wire: WirePlan, source_rack: str, target_rack: str) -> str:
    return (
        f"memory wire {wire.source} → {wire.target} crosses racks ('{source_rack}' → "
        f"'{target_rack}'): only standard wires travel between racks, a memory wire stays "
        "inside one process — use transport: standard"
    )


def fingerprint(type_name: str, config: GearConfig) -> str:
    """Stable hash of a gear definition: same type and config ⇒ same fingerprint."""
    canonical = json.dumps(
        {"type": type_name, "config": config.model_dump(mode="json")}, sort_keys=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
