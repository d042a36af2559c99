"""`fluxrig.v1.GearService`: the gear catalogue this mixer's pre-flight knows."""

from __future__ import annotations

from typing import Any

from mixer.api.grpc import convert
from mixer.api.grpc.proto import gears_pb2
from mixer.api.grpc.status import answers
from rack.gear.registry import GearRegistry


class GearServicer:
    def __init__(self, gears: GearRegistry) -> None:
        self._gears = gears

    @answers
    async def ListGears(
        self, request: gears_pb2.ListGearsRequest, context: Any
    ) -> gears_pb2.ListGearsResponse:
        return gears_pb2.ListGearsResponse(
            gears=[convert.gear(name, g) for name, g in self._gears.items()]
        )

    @answers
    async def GetGear(self, request: gears_pb2.GetGearRequest, context: Any) -> gears_pb2.Gear:
        return convert.gear(request.type, self._gears.get(request.type))  # unknown: NOT_FOUND
