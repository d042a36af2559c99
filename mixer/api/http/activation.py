"""Scenario activation over REST: activate a stored scenario, the active one, history, provenance.

    POST /scenarios/{ref}/activate   push the scenario to every active rack; 200 when all applied
    GET  /activation                 the active activation and what every rack runs
    GET  /activations?limit=N        the newest activations first (any state)
    GET  /provenance?rack=NAME       per rack: scenario hash, since when, did the last push apply

The work is `mixer.orchestrator.Orchestrator`'s; these rows only answer. An activation answers
when every active rack said it applied the scenario; a pre-flight refusal is 422 (every problem,
nothing pushed), a rack that could not apply it or did not answer in time is 409
`activation_failed` (one detail per rack, then per rollback push; the fleet is back on the
previous scenario). A mixer API without an orchestrator answers 503.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mixer.activations import ActivationRecord, RackProvenance
from mixer.api.errors import ServiceUnavailableError
from mixer.api.http.context import ApiContext
from mixer.api.http.models import (
    Activation,
    ActivationList,
    ActivationResult,
    ActiveScenario,
    HistoryQuery,
    Provenance,
    ProvenanceList,
    ProvenanceQuery,
)
from mixer.api.http.operation import Call, Operation, Reply
from mixer.orchestrator import Orchestrator

TAG = "activation"
NO_ORCHESTRATOR = (
    "scenario activation is not available: this API runs without the mixer's orchestrator "
    "(a full `fluxrig-mixer` serves it)"
)


def orchestrator_of(ctx: ApiContext) -> Orchestrator:
    """The context's orchestrator; ServiceUnavailableError (503 / UNAVAILABLE) when it has none."""
    if ctx.orchestrator is None:
        raise ServiceUnavailableError(NO_ORCHESTRATOR)
    return ctx.orchestrator


@dataclass(frozen=True, slots=True)
class Fleet:
    """The active activation (None: none yet) and what every rack pushed so far runs."""

    active: ActivationRecord | None
    racks: list[RackProvenance]

    def provenance(self) -> list[Provenance]:
        return Provenance.rows(self.racks, self.active)


def fleet(orchestrator: Orchestrator, rack: str | None = None) -> Fleet:
    """Read the active activation and the provenance of `rack` (or every rack); blocking."""
    log = orchestrator.activations
    return Fleet(log.active(), log.provenance(rack))


async def activate(ctx: ApiContext, call: Call) -> Reply:
    result = await orchestrator_of(ctx).activate(call.path["ref"])
    return Reply(200, ActivationResult.of(result))


async def active(ctx: ApiContext, call: Call) -> Reply:
    found = await asyncio.to_thread(fleet, orchestrator_of(ctx))
    active = Activation.of(found.active) if found.active is not None else None
    return Reply(200, ActiveScenario(active=active, racks=found.provenance()))


async def history(ctx: ApiContext, call: Call) -> Reply:
    limit = call.query_as(HistoryQuery).limit
    records = await orchestrator_of(ctx).history(limit)
    return Reply(200, ActivationList(activations=[Activation.of(r) for r in records]))


async def provenance(ctx: ApiContext, call: Call) -> Reply:
    orchestrator, rack = orchestrator_of(ctx), call.query_as(ProvenanceQuery).rack

    def read() -> Fleet:
        if rack is not None:
            ctx.registry.get(rack)  # RackNotFoundError → 404 naming it
        return fleet(orchestrator, rack)

    found = await asyncio.to_thread(read)
    return Reply(200, ProvenanceList(racks=found.provenance()))


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="POST",
        path="/scenarios/{ref}/activate",
        operation_id="activateScenario",
        summary="Activate a stored scenario on the fleet; answers once every active rack did.",
        tag=TAG,
        handler=activate,
        responses={200: ActivationResult},
        errors=(400, 404, 409, 422, 503),
        description=(
            "Pre-flight (422 with every problem; nothing is pushed), adopt the racks the scenario "
            "names, push it to every active rack and wait for each to apply it within "
            "[orchestrator] apply_timeout. If one fails or is silent: 409 `activation_failed`, "
            "one detail per rack (`racks.<name>`) and per rollback push (`rollback.<name>`); "
            "the fleet is back on the previous scenario."
        ),
    ),
    Operation(
        method="GET",
        path="/activation",
        operation_id="getActivation",
        summary="The active scenario (null when none) and what every rack runs.",
        tag=TAG,
        handler=active,
        responses={200: ActiveScenario},
        errors=(503,),
    ),
    Operation(
        method="GET",
        path="/activations",
        operation_id="listActivations",
        summary="Activation history, newest first (every state).",
        tag=TAG,
        handler=history,
        responses={200: ActivationList},
        errors=(503,),
        query=HistoryQuery,
    ),
    Operation(
        method="GET",
        path="/provenance",
        operation_id="getProvenance",
        summary="Per rack: the scenario hash it runs, since when, and the newest push's outcome.",
        tag=TAG,
        handler=provenance,
        responses={200: ProvenanceList},
        errors=(404, 503),
        query=ProvenanceQuery,
    ),
)
