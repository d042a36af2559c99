"""`fluxrig.v1.RackService`: list, show, the operator's lifecycle actions, and the watch.

Status rules live in `mixer.registry.model`; refusals are FAILED_PRECONDITION (rack_conflict).
After an action the rack is told at once (`ApiContext.on_rack_change`, as over REST) and the
watchers are told through `RackWatch.publish`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from mixer.api.errors import Detail, RequestValidationError
from mixer.api.grpc import convert
from mixer.api.grpc.proto import racks_pb2
from mixer.api.grpc.status import abort_with, answers
from mixer.api.grpc.watch import RackWatch
from mixer.api.http.context import ApiContext
from mixer.registry import RackRecord, RackStatus, Registry

Action = Callable[[Registry, str], RackRecord]


def _status(text: str) -> RackStatus | None:
    if not text:
        return None
    try:
        return RackStatus(text)
    except ValueError:
        known = ", ".join(s.value for s in RackStatus)
        problem = Detail("status", f"unknown status {text!r}; known: {known}")
        raise RequestValidationError("invalid ListRacksRequest", [problem]) from None


class RackServicer:
    """Registered with `racks_pb2_grpc.add_RackServiceServicer_to_server`."""

    def __init__(self, ctx: ApiContext, watch: RackWatch) -> None:
        self._ctx = ctx
        self._watch = watch

    @answers
    async def ListRacks(
        self, request: racks_pb2.ListRacksRequest, context: Any
    ) -> racks_pb2.ListRacksResponse:
        records = await asyncio.to_thread(self._ctx.registry.list, _status(request.status))
        return racks_pb2.ListRacksResponse(racks=[convert.rack(r) for r in records])

    @answers
    async def GetRack(self, request: racks_pb2.RackRef, context: Any) -> racks_pb2.Rack:
        return convert.rack(await asyncio.to_thread(self._ctx.registry.get, request.name))

    @answers
    async def AdoptRack(self, request: racks_pb2.RackRef, context: Any) -> racks_pb2.Rack:
        return await self._act(Registry.adopt, request.name)

    @answers
    async def SuspendRack(self, request: racks_pb2.RackRef, context: Any) -> racks_pb2.Rack:
        return await self._act(Registry.suspend, request.name)

    @answers
    async def ResumeRack(self, request: racks_pb2.RackRef, context: Any) -> racks_pb2.Rack:
        return await self._act(Registry.resume, request.name)

    @answers
    async def RetireRack(self, request: racks_pb2.RackRef, context: Any) -> racks_pb2.Rack:
        return await self._act(Registry.retire, request.name)

    @answers
    async def RenameRack(
        self, request: racks_pb2.RenameRackRequest, context: Any
    ) -> racks_pb2.Rack:
        rec = await asyncio.to_thread(self._ctx.registry.rename, request.name, request.new_name)
        return convert.rack(rec)

    async def WatchRacks(
        self, request: racks_pb2.WatchRacksRequest, context: Any
    ) -> AsyncIterator[racks_pb2.RackEvent]:
        async def subscribed() -> None:  # clients may await initial metadata as readiness
            await context.send_initial_metadata((("fluxrig-watch", "subscribed"),))

        try:
            changes = self._watch.changes(
                include_current=request.include_current, subscribed=subscribed
            )
            async for change in changes:
                previous = change.previous.value if change.previous is not None else ""
                yield racks_pb2.RackEvent(
                    rack=convert.rack(change.record), previous_status=previous
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # mapped; unexpected ones are logged as INTERNAL
            await abort_with(context, exc)

    async def _act(self, action: Action, name: str) -> racks_pb2.Rack:
        def run() -> tuple[RackStatus, RackRecord]:
            before = self._ctx.registry.get(name).status
            return before, action(self._ctx.registry, name)

        before, record = await asyncio.to_thread(run)
        if record.status is not before:
            self._watch.publish(record, before)
        if self._ctx.on_rack_change is not None:
            await self._ctx.on_rack_change(record)
        return convert.rack(record)
