"""`ScenarioService.ActivateScenario` and `GetActiveScenario`: the REST activation rows over gRPC.

The orchestrator does the work (`mixer.orchestrator`); errors go through the one table: an unknown
reference is NOT_FOUND, a pre-flight refusal INVALID_ARGUMENT (every problem), a rack that could
not apply the scenario or did not answer ABORTED (the fleet is back on the previous scenario; the
trailers carry one detail per rack), a mixer without an orchestrator UNAVAILABLE.
"""

from __future__ import annotations

import asyncio

from mixer.activations import ActivationRecord
from mixer.api.errors import Detail, RequestValidationError
from mixer.api.grpc import convert
from mixer.api.grpc.proto import store_pb2
from mixer.api.http.activation import fleet, orchestrator_of
from mixer.api.http.context import ApiContext
from mixer.orchestrator import Orchestrator
from mixer.rollout import ActivationResult
from mixer.store import CasStore


async def activate(ctx: ApiContext, request: store_pb2.ActivateRequest) -> store_pb2.ActiveResponse:
    orchestrator = orchestrator_of(ctx)
    result = await orchestrator.activate(request.ref)
    return await asyncio.to_thread(_answer, ctx.store, orchestrator, result)


async def active(ctx: ApiContext, request: store_pb2.ListRequest) -> store_pb2.ActiveResponse:
    if request.name:
        problem = Detail("name", "GetActiveScenario takes no name; leave it empty")
        raise RequestValidationError("invalid ListRequest", [problem])
    orchestrator = orchestrator_of(ctx)
    return await asyncio.to_thread(_answer, ctx.store, orchestrator, None)


def _answer(
    store: CasStore, orchestrator: Orchestrator, result: ActivationResult | None
) -> store_pb2.ActiveResponse:
    """The active scenario (or the one `result` just activated) and every rack's provenance."""
    found = fleet(orchestrator)
    answer = store_pb2.ActiveResponse(
        racks=[convert.provenance(row, found.active) for row in found.racks]
    )
    record = result.activation if result is not None else found.active
    if record is not None:
        answer.activation.CopyFrom(convert.activation(record))
        answer.ref.CopyFrom(_stored(store, record))
    if result is not None:
        answer.outcomes.extend(convert.outcome(o) for o in result.racks)
        answer.adopted.extend(result.adopted)
        answer.unknown.extend(result.unknown)
    return answer


def _stored(store: CasStore, record: ActivationRecord) -> store_pb2.StoredRef:
    """The activated scenario as stored: its index entry when activated by name:tag."""
    blob = store.get("scenario", record.digest)
    entry = None
    if record.ref is not None:
        name, _, tag = record.ref.rpartition(":")
        entry = next((r for r in store.list("scenario", name) if r.tag == tag), None)
    return convert.blob_ref(blob, entry)
