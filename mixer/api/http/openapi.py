"""The OpenAPI 3.1 document, generated from the route table and its pydantic models.

Nothing here is written by hand per operation: paths, parameters, bodies and responses come
from the `Operation` rows that also register the routes, and every schema comes from the model
that validates (requests) or produces (responses) the JSON. pydantic emits JSON Schema 2020-12,
which is what OpenAPI 3.1 uses.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from mixer.api.http.models import ErrorBody
from mixer.api.http.operation import JSON, Operation

OPENAPI_VERSION = "3.1.0"
REF_TEMPLATE = "#/components/schemas/{model}"
SECURITY_SCHEME = "bearerAuth"

ERROR_DESCRIPTIONS = {
    400: "Malformed request (not JSON, bad reference syntax, a time or trace id spelled wrong; "
    "`details` name the parameter), a telemetry query refused or rejected by DuckDB (code "
    "`query_timeout`: it ran past `[telemetry] query_timeout` and was stopped), or a tap "
    "the rack refused (an unknown wire, a filter that does not compile; `details` name it).",
    401: "Missing or wrong bearer token.",
    403: "The read-only token may not change anything (nor tap a wire: message payloads); use "
    "the admin token.",
    404: "No such rack, gear, reference, trace or route.",
    409: "Conflicts with the current state (tag reuse, illegal status transition, name taken), "
    "or an activation a rack could not apply (`details`: what each rack said; the fleet is back "
    "on the previous scenario).",
    413: "Request body too large.",
    422: "Request or document fails validation; `details` locate every problem.",
    503: "The part of the mixer this operation needs is not running, a rack to tap is not "
    "active or did not answer, `[api] max_taps` taps already run, or `[telemetry] "
    "max_concurrent_queries` telemetry queries (code `too_many_queries`); retry later.",
}
_PATH_PARAM = re.compile(r"{(\w+)}")

ModelKey = tuple[type[BaseModel], JsonSchemaMode]
Refs = dict[Any, dict[str, Any]]  # ModelKey → {"$ref": ...}


def build_document(ops: Sequence[Operation], *, version: str, secure: bool) -> dict[str, Any]:
    """The OpenAPI document of `ops`. `secure=False` (an insecure mixer) declares no auth."""
    refs, defs = _schemas(ops)
    queries = {op.query: defs[_name(refs[(op.query, "validation")])] for op in ops if op.query}
    for schema in queries.values():  # query models become parameters, not components
        defs.pop(schema["title"], None)
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.url, {})[op.method.lower()] = _operation(op, refs, queries, secure)
    components: dict[str, Any] = {"schemas": defs}
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "fluxrig mixer API",
            "version": version,
            "description": "Racks, adoption, scenarios, specs, the gear catalogue and telemetry.",
        },
        "paths": paths,
        "components": components,
    }
    if secure:
        components["securitySchemes"] = {
            SECURITY_SCHEME: {"type": "http", "scheme": "bearer", "description": "[api] token"}
        }
        doc["security"] = [{SECURITY_SCHEME: []}]
    return doc


def _schemas(ops: Sequence[Operation]) -> tuple[Refs, dict[str, Any]]:
    keys: dict[ModelKey, None] = {(ErrorBody, "serialization"): None}
    for op in ops:
        for model in (op.body, op.query):
            if model is not None:
                keys[(model, "validation")] = None
        for out in op.responses.values():
            if out is not None:
                keys[(out, "serialization")] = None
    refs, top = models_json_schema(list(keys), ref_template=REF_TEMPLATE)
    defs: dict[str, Any] = dict(top.get("$defs", {}))
    return {key: refs[key] for key in keys}, defs


def _name(ref: dict[str, Any]) -> str:
    return str(ref["$ref"]).rsplit("/", 1)[-1]


def _json_content(schema: dict[str, Any], media_type: str = JSON) -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def _operation(
    op: Operation, refs: Refs, queries: dict[type[BaseModel], Any], secure: bool
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
    }
    if op.description:
        item["description"] = op.description
    params = _path_params(op.path)
    if op.query is not None:
        params += _query_params(queries[op.query])
    if params:
        item["parameters"] = params
    if op.body is not None:
        item["requestBody"] = {
            "required": True,
            "content": _json_content(refs[(op.body, "validation")]),
        }
    item["responses"] = _responses(op, refs, secure)
    if op.public or not secure:
        item["security"] = []
    return item


def _path_params(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in _PATH_PARAM.findall(path)
    ]


def _query_params(schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema.get("properties", {}).items():
        param: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": _without_null(prop),
        }
        if "description" in prop:
            param["description"] = prop["description"]
        params.append(param)
    return params


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    """`X | None = None` is an optional parameter, not one that may be sent as null."""
    options = [o for o in prop.get("anyOf", ()) if o != {"type": "null"}]
    if len(options) == 1:
        return dict(options[0])
    clean = {k: v for k, v in prop.items() if k not in ("default", "title", "description")}
    if options:
        clean["anyOf"] = options
    return clean


def _responses(op: Operation, refs: Refs, secure: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, model in sorted(op.responses.items()):
        schema = refs[(model, "serialization")] if model is not None else {"type": "object"}
        desc = "Created." if status == 201 else "OK."
        if op.media_type != JSON:
            desc = f"A stream ({op.media_type}): each item is one of these."
        out[str(status)] = {"description": desc, "content": _json_content(schema, op.media_type)}
    error = refs[(ErrorBody, "serialization")]
    for status in op.error_statuses(secure=secure):
        response: dict[str, Any] = {
            "description": ERROR_DESCRIPTIONS[status],
            "content": _json_content(error),
        }
        if status == 401:
            response["headers"] = {
                "WWW-Authenticate": {"required": True, "schema": {"type": "string"}}
            }
        out[str(status)] = response
    return out
