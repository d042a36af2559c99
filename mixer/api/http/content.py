"""Scenarios and specs in the CAS store: import, list, fetch.

A scenario import runs the rack's own pre-flight on the YAML first: an invalid scenario is
answered 422 with every problem (YAML path and line) and is never stored. Specs are opaque UTF-8
text for now (no pre-flight). Imports answer 201 when `name:tag` was created, 200 when it already
held the same bytes (or on a dry run), 409 when it holds other bytes (tags are immutable).

Activation, the active scenario and provenance are rows of their own: mixer.api.http.activation.
"""

from __future__ import annotations

import asyncio

from mixer.api.errors import Detail, RequestValidationError
from mixer.api.http.context import ApiContext
from mixer.api.http.models import (
    Content,
    ContentQuery,
    Entry,
    EntryList,
    ImportResult,
    ScenarioImport,
    SpecImport,
)
from mixer.api.http.operation import Call, Handler, Operation, Reply
from mixer.store import Kind
from mixer.store.refs import check_name
from rack.preflight import preflight_document
from rack.scenario_files import Document, parse_document


def _read(content: str) -> Document:
    return parse_document(content, "content")  # raises ScenarioError naming every problem


def _import_scenario(ctx: ApiContext, req: ScenarioImport) -> ImportResult:
    doc = _read(req.content)
    blueprint = preflight_document(doc, ctx.gears)  # ScenarioError → 422 with every problem
    name = check_name(req.name if req.name is not None else blueprint.name)
    if name != blueprint.name.lower():
        raise RequestValidationError(
            "name does not match the scenario",
            [
                Detail(
                    "body.name",
                    f"the scenario is named {blueprint.name!r}, not {req.name!r}; "
                    "omit `name` or make them agree",
                )
            ],
        )
    put = ctx.store.put("scenario", name, req.tag, req.content.encode(), dry_run=req.dry_run)
    return ImportResult.of("scenario", name, req.tag, put)


def _import_spec(ctx: ApiContext, req: SpecImport) -> ImportResult:
    name = check_name(req.name)
    put = ctx.store.put("spec", name, req.tag, req.content.encode(), dry_run=req.dry_run)
    return ImportResult.of("spec", name, req.tag, put)


def _created(result: ImportResult) -> Reply:
    return Reply(201 if result.created and not result.dry_run else 200, result)


async def import_scenario(ctx: ApiContext, call: Call) -> Reply:
    req = call.body_as(ScenarioImport)
    return _created(await asyncio.to_thread(_import_scenario, ctx, req))


async def import_spec(ctx: ApiContext, call: Call) -> Reply:
    req = call.body_as(SpecImport)
    return _created(await asyncio.to_thread(_import_spec, ctx, req))


def _lister(kind: Kind) -> Handler:
    async def handler(ctx: ApiContext, call: Call) -> Reply:
        name = call.query_as(ContentQuery).name
        refs = await asyncio.to_thread(ctx.store.list, kind, name)
        return Reply(200, EntryList(entries=[Entry.of(r) for r in refs]))

    return handler


def _getter(kind: Kind) -> Handler:
    async def handler(ctx: ApiContext, call: Call) -> Reply:
        blob = await asyncio.to_thread(ctx.store.get, kind, call.path["ref"])
        return Reply(200, Content.of(blob))

    return handler


def _operations(
    kind: Kind, plural: str, importer: Handler, body: type[ScenarioImport | SpecImport]
) -> tuple[Operation, ...]:
    title = kind.capitalize()
    return (
        Operation(
            method="POST",
            path=f"/{plural}",
            operation_id=f"import{title}",
            summary=f"Import a {kind} as name:tag (dry_run: validate only).",
            tag=plural,
            handler=importer,
            responses={200: ImportResult, 201: ImportResult},
            errors=(409,),
            body=body,
        ),
        Operation(
            method="GET",
            path=f"/{plural}",
            operation_id=f"list{title}s",
            summary=f"List stored {plural} (name, tag, digest), optionally of one name.",
            tag=plural,
            handler=_lister(kind),
            responses={200: EntryList},
            errors=(400,),
            query=ContentQuery,
        ),
        Operation(
            method="GET",
            path=f"/{plural}/{{ref}}",
            operation_id=f"get{title}",
            summary=f"Fetch a {kind} by name:tag, name (latest SemVer) or sha256:<hex>.",
            tag=plural,
            handler=_getter(kind),
            responses={200: Content},
            errors=(400, 404),
        ),
    )


OPERATIONS: tuple[Operation, ...] = (
    *_operations("scenario", "scenarios", import_scenario, ScenarioImport),
    *_operations("spec", "specs", import_spec, SpecImport),
)
