"""Public operations: health and the OpenAPI document itself."""

from __future__ import annotations

from aiohttp import web

from mixer import __version__
from mixer.api.http.context import ApiContext
from mixer.api.http.models import Health
from mixer.api.http.operation import Call, Operation, Reply

TAG = "system"
DOCUMENT_KEY = web.AppKey("fluxrig.openapi", dict)


async def health(ctx: ApiContext, call: Call) -> Reply:
    return Reply(200, Health(version=__version__))


async def openapi_document(ctx: ApiContext, call: Call) -> Reply:
    return Reply(200, call.request.app[DOCUMENT_KEY])


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="GET",
        path="/health",
        operation_id="health",
        summary="Liveness: the mixer answers, with its version.",
        tag=TAG,
        handler=health,
        responses={200: Health},
        public=True,
    ),
    Operation(
        method="GET",
        path="/openapi.json",
        operation_id="openapi",
        summary="This OpenAPI 3.1 document.",
        tag=TAG,
        handler=openapi_document,
        responses={200: None},
        public=True,
    ),
)
