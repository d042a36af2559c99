"""`build_app`: the REST API as an aiohttp application, from one route table.

    app = build_app(ApiContext(store, registry, GearRegistry.discover(), auth_token=token))

`OPERATIONS` is the route table: the same rows register the routes and generate the OpenAPI
document served at `/api/v1/openapi.json`.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from mixer import __version__
from mixer.api.http import activation, content, gears, racks, system, taps, telemetry
from mixer.api.http.context import ApiContext
from mixer.api.http.middleware import (
    auth_middleware,
    body_limit_middleware,
    error_middleware,
)
from mixer.api.http.openapi import build_document
from mixer.api.http.operation import Operation, dispatch

OPERATIONS: tuple[Operation, ...] = (
    *system.OPERATIONS,
    *racks.OPERATIONS,
    *taps.OPERATIONS,
    *gears.OPERATIONS,
    *content.OPERATIONS,
    *activation.OPERATIONS,
    *telemetry.OPERATIONS,
)


def build_app(ctx: ApiContext, operations: Sequence[Operation] = OPERATIONS) -> web.Application:
    """The API application; serve it with `web.AppRunner` (the mixer binds :8090)."""
    secure = ctx.auth_token is not None
    middlewares: list[Middleware] = [
        error_middleware(ctx.max_body_bytes),
        body_limit_middleware(ctx.max_body_bytes),
    ]
    credentials = ctx.credentials
    if credentials is not None:
        public = [op.url for op in operations if op.public]
        reads = [(op.method, op.url) for op in operations if op.reads_only]
        admin = {(op.method, op.url): op.admin_only for op in operations if op.admin_only}
        middlewares.append(auth_middleware(credentials, public, reads, admin))
    app = web.Application(middlewares=middlewares, client_max_size=ctx.max_body_bytes)
    app[system.DOCUMENT_KEY] = build_document(operations, version=__version__, secure=secure)
    for op in operations:
        app.router.add_route(op.method, op.url, _endpoint(op, ctx))
    taps.install(app, ctx.taps)  # the live taps' hub connection and sessions
    return app


def _endpoint(op: Operation, ctx: ApiContext) -> Handler:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        return await dispatch(op, ctx, request)

    endpoint.__name__ = op.operation_id
    return endpoint
