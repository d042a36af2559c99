"""The gear catalogue: every gear type this mixer's pre-flight knows, with its config schema."""

from __future__ import annotations

import inspect

from mixer.api.http.context import ApiContext
from mixer.api.http.models import GearDetail, GearList, GearSummary
from mixer.api.http.operation import Call, Operation, Reply
from rack.gear.docs import config_schema
from rack.gear.registry import AnyGear

TAG = "gears"


def _summary(type_name: str, gear: AnyGear) -> GearSummary:
    return GearSummary(
        type=type_name,
        summary=gear.summary,
        inputs=list(gear.inputs),
        outputs=list(gear.outputs),
    )


async def list_gears(ctx: ApiContext, call: Call) -> Reply:
    gears = [_summary(name, gear) for name, gear in ctx.gears.items()]
    return Reply(200, GearList(gears=gears, load_errors=dict(ctx.gears.load_errors)))


async def get_gear(ctx: ApiContext, call: Call) -> Reply:
    type_name = call.path["type"]
    gear = ctx.gears.get(type_name)  # UnknownGearError → 404
    detail = GearDetail(
        **_summary(type_name, gear).model_dump(),
        description=inspect.cleandoc(gear.__doc__ or ""),
        config_schema=config_schema(gear),
    )
    return Reply(200, detail)


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="GET",
        path="/gears",
        operation_id="listGears",
        summary="The gear catalogue: types, summaries, ports.",
        tag=TAG,
        handler=list_gears,
        responses={200: GearList},
    ),
    Operation(
        method="GET",
        path="/gears/{type}",
        operation_id="getGear",
        summary="One gear type with its config JSON schema.",
        tag=TAG,
        handler=get_gear,
        responses={200: GearDetail},
        errors=(404,),
    ),
)
