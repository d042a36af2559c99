"""A rollout's values: the scenario the fleet must run (`Desired`), what each rack answered
(`RackOutcome`), how an activation ended (`ActivationResult`), and what a blueprint asks of the
fleet and the store (`spec_refs`, `named_racks`). Pure data; `mixer.orchestrator` does the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mixer.activations import ActivationRecord
from rack.link.protocol import ScenarioPush
from rack.model.scenario import Blueprint

__all__ = [
    "NOTHING",
    "ActivationResult",
    "Desired",
    "RackOutcome",
    "named_racks",
    "said",
    "spec_refs",
]

NOTHING = 0  # the activation number of a "run no gears" push (no scenario was ever active)


@dataclass(frozen=True, slots=True)
class Desired:
    """The scenario the fleet must run: an activation and its stored document."""

    activation: int
    digest: str
    ref: str | None
    document: str
    racks: frozenset[str] = frozenset()  # the racks it names (`racks:` and `deploy:`)

    def push(self, *, rollback: bool = False) -> ScenarioPush:
        return ScenarioPush(
            activation=self.activation,
            digest=self.digest,
            ref=self.ref,
            document=self.document,
            rollback=rollback,
        )


@dataclass(frozen=True, slots=True)
class RackOutcome:
    """What one rack answered to an activation's push (`timeout`: nothing in time)."""

    rack: str
    state: Literal["applied", "failed", "timeout"]
    error: str | None = None
    report: str | None = None


@dataclass(frozen=True, slots=True)
class ActivationResult:
    """An activation and what every targeted rack answered; `rollback` lists the answers to the
    pushes that put racks back on the previous scenario after a failure."""

    activation: ActivationRecord
    racks: tuple[RackOutcome, ...]
    adopted: tuple[str, ...] = ()  # racks adopted because the scenario names them
    unknown: tuple[str, ...] = ()  # racks the scenario names that never enrolled
    rollback: tuple[RackOutcome, ...] = ()


def spec_refs(blueprint: Blueprint) -> list[tuple[str, str]]:
    """(YAML path, spec reference) of the scenario's `spec:` and every gear's `config.spec`."""
    refs: list[tuple[str, str]] = []
    if blueprint.scenario.spec:
        refs.append(("spec", blueprint.scenario.spec))
    for i, gear in enumerate(blueprint.scenario.gears):
        value = gear.config.get("spec") if isinstance(gear.config, dict) else None
        if isinstance(value, str):
            refs.append((f"gears[{i}].config.spec", value))
    return refs


def named_racks(blueprint: Blueprint) -> frozenset[str]:
    """The racks a scenario names: its `racks:` list and the gears' `deploy:`."""
    scenario = blueprint.scenario
    return frozenset(r.name for r in scenario.racks) | {
        g.deploy for g in scenario.gears if g.deploy
    }


def said(outcome: RackOutcome) -> str:
    if outcome.state == "timeout":
        return f"did not answer ({outcome.error})"
    return f"could not apply it: {outcome.error or 'no reason given'}"
