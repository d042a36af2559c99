"""`fluxrig.v1.ScenarioService` and `SpecService`: import, list and fetch CAS content.

Imports go through the REST API's own steps (`mixer.api.http.content`): the same request models
(tag and size limits), the rack's pre-flight for scenarios (INVALID_ARGUMENT listing every
problem with its YAML path and line; nothing is stored), ALREADY_EXISTS when `name:tag` holds
other bytes. ActivateScenario and GetActiveScenario are the orchestrator's
(`mixer.api.grpc.activation`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from pydantic import ValidationError

from mixer.api.grpc import activation, convert
from mixer.api.grpc.proto import store_pb2
from mixer.api.grpc.status import answers, invalid_request
from mixer.api.http.content import _import_scenario, _import_spec
from mixer.api.http.context import ApiContext
from mixer.api.http.models import ImportResult, ScenarioImport, SpecImport
from mixer.store import Kind, Ref


def _entry(ctx: ApiContext, kind: Kind, name: str, tag: str) -> Ref | None:
    return next((r for r in ctx.store.list(kind, name) if r.tag == tag), None)


def _response(ctx: ApiContext, result: ImportResult) -> store_pb2.ImportResponse:
    entry = _entry(ctx, result.kind, result.name, result.tag)
    if entry is not None:
        ref = convert.stored_ref(entry)
    else:  # a dry run of a new name:tag
        ref = store_pb2.StoredRef(
            kind=result.kind,
            name=result.name,
            tag=result.tag,
            digest=result.digest,
            size=result.size,
        )
    return store_pb2.ImportResponse(ref=ref, created=result.created, dry_run=result.dry_run)


def _import(
    ctx: ApiContext, kind: Kind, request: store_pb2.ImportRequest
) -> store_pb2.ImportResponse:
    tag, content, dry_run = request.tag, request.content, request.dry_run
    try:
        if kind == "scenario":
            name = request.name or None
            req = ScenarioImport(name=name, tag=tag, content=content, dry_run=dry_run)
            result = _import_scenario(ctx, req)
        else:
            spec = SpecImport(name=request.name, tag=tag, content=content, dry_run=dry_run)
            result = _import_spec(ctx, spec)
    except ValidationError as exc:
        raise invalid_request(exc, "ImportRequest") from None
    return _response(ctx, result)


def _get(ctx: ApiContext, kind: Kind, ref: str) -> tuple[store_pb2.StoredRef, bytes]:
    blob = ctx.store.get(kind, ref)
    entry = None
    if blob.name is not None and blob.tag is not None:
        entry = _entry(ctx, kind, blob.name, blob.tag)
    return convert.blob_ref(blob, entry), blob.data


class _Content:
    """Import, list and get for one kind of content."""

    kind: Kind

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    async def _import(self, request: store_pb2.ImportRequest) -> store_pb2.ImportResponse:
        return await asyncio.to_thread(_import, self._ctx, self.kind, request)

    async def _list(self, request: store_pb2.ListRequest) -> store_pb2.ListResponse:
        refs = await asyncio.to_thread(self._ctx.store.list, self.kind, request.name or None)
        return store_pb2.ListResponse(refs=[convert.stored_ref(r) for r in refs])

    async def _get(self, request: store_pb2.GetRequest, context: Any) -> store_pb2.GetResponse:
        ref, data = await asyncio.to_thread(_get, self._ctx, self.kind, request.ref)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{self.kind} {request.ref} is not UTF-8 text and cannot travel in "
                "GetResponse.content; fetch it over REST (base64)",
            )
        return store_pb2.GetResponse(ref=ref, content=text)


class ScenarioServicer(_Content):
    kind: Kind = "scenario"

    @answers
    async def ImportScenario(
        self, request: store_pb2.ImportRequest, context: Any
    ) -> store_pb2.ImportResponse:
        return await self._import(request)

    @answers
    async def ListScenarios(
        self, request: store_pb2.ListRequest, context: Any
    ) -> store_pb2.ListResponse:
        return await self._list(request)

    @answers
    async def GetScenario(
        self, request: store_pb2.GetRequest, context: Any
    ) -> store_pb2.GetResponse:
        return await self._get(request, context)

    @answers
    async def ActivateScenario(
        self, request: store_pb2.ActivateRequest, context: Any
    ) -> store_pb2.ActiveResponse:
        return await activation.activate(self._ctx, request)

    @answers
    async def GetActiveScenario(
        self, request: store_pb2.ListRequest, context: Any
    ) -> store_pb2.ActiveResponse:
        return await activation.active(self._ctx, request)


class SpecServicer(_Content):
    kind: Kind = "spec"

    @answers
    async def ImportSpec(
        self, request: store_pb2.ImportRequest, context: Any
    ) -> store_pb2.ImportResponse:
        return await self._import(request)

    @answers
    async def ListSpecs(
        self, request: store_pb2.ListRequest, context: Any
    ) -> store_pb2.ListResponse:
        return await self._list(request)

    @answers
    async def GetSpec(self, request: store_pb2.GetRequest, context: Any) -> store_pb2.GetResponse:
        return await self._get(request, context)
