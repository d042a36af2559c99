"""Rack operations: list, show, and the operator's lifecycle actions (adopt, suspend, resume,
retire, rename). Status rules live in `mixer.registry.model`; refusals are 409 rack_conflict."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from mixer.api.http.context import ApiContext
from mixer.api.http.models import Rack, RackList, RackQuery, RenameRequest
from mixer.api.http.operation import Call, Handler, Operation, Reply
from mixer.registry import RackRecord, Registry

TAG = "racks"


async def list_racks(ctx: ApiContext, call: Call) -> Reply:
    status = call.query_as(RackQuery).status
    records = await asyncio.to_thread(ctx.registry.list, status)
    return Reply(200, RackList(racks=[Rack.of(r) for r in records]))


async def get_rack(ctx: ApiContext, call: Call) -> Reply:
    return Reply(200, Rack.of(await asyncio.to_thread(ctx.registry.get, call.path["name"])))


async def rename_rack(ctx: ApiContext, call: Call) -> Reply:
    new = call.body_as(RenameRequest).name
    record = await asyncio.to_thread(ctx.registry.rename, call.path["name"], new)
    return Reply(200, Rack.of(record))


def _transition(action: Callable[[Registry, str], RackRecord]) -> Handler:
    async def handler(ctx: ApiContext, call: Call) -> Reply:
        record = await asyncio.to_thread(action, ctx.registry, call.path["name"])
        if ctx.on_rack_change is not None:
            await ctx.on_rack_change(record)
        return Reply(200, Rack.of(record))

    return handler


_ACTIONS: tuple[tuple[str, Callable[[Registry, str], RackRecord], str], ...] = (
    ("adopt", Registry.adopt, "Adopt a pending or offline rack (it becomes active)."),
    ("suspend", Registry.suspend, "Suspend an active or offline rack."),
    ("resume", Registry.resume, "Resume a suspended rack (active, or pending if never adopted)."),
    (
        "retire",
        Registry.retire,
        "Retire a rack for good: kill switch, its certificates revoked, its Snake closed; its "
        "MachineID is never reused.",
    ),
)


def _op(method: str, path: str, op_id: str, summary: str, handler: Handler, **kw: Any) -> Operation:
    return Operation(method, path, op_id, summary, TAG, handler, {200: Rack}, **kw)


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="GET",
        path="/racks",
        operation_id="listRacks",
        summary="List racks, optionally by status.",
        tag=TAG,
        handler=list_racks,
        responses={200: RackList},
        query=RackQuery,
    ),
    _op("GET", "/racks/{name}", "getRack", "Show one rack.", get_rack, errors=(404,)),
    *(
        _op(
            "POST",
            f"/racks/{{name}}/{verb}",
            f"{verb}Rack",
            summary,
            _transition(action),
            errors=(404, 409),
        )
        for verb, action, summary in _ACTIONS
    ),
    _op(
        "POST",
        "/racks/{name}/rename",
        "renameRack",
        "Rename a rack, keeping its MachineID and status.",
        rename_rack,
        errors=(404, 409),
        body=RenameRequest,
    ),
)
