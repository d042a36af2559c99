"""One API operation = one `Operation` row: method, path, models, statuses, handler.

The same rows register the aiohttp routes (`mixer.api.http.app`) and generate the OpenAPI
document (`mixer.api.http.openapi`); `dispatch` parses path, query and body with the row's
models before the handler runs, so the handler only sees validated input::

    async def get_rack(ctx: ApiContext, call: Call) -> Reply:
        rec = await asyncio.to_thread(ctx.registry.get, call.path["name"])
        return Reply(200, Rack.of(rec))

A streaming operation (`media_type` other than JSON, e.g. NDJSON) raises its errors before it
answers, like any other, then prepares, writes and returns its own `web.StreamResponse`; its
`responses[200]` model describes one item of the stream.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from mixer.api.errors import Detail, MalformedRequestError, RequestValidationError
from mixer.api.http.context import ApiContext

API_PREFIX = "/api/v1"
JSON = "application/json"

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Call:
    """A validated request: path parameters, query model, body model (None when not taken)."""

    request: web.Request
    path: Mapping[str, str]
    query: BaseModel | None = None
    body: BaseModel | None = None

    def query_as(self, model: type[M]) -> M:
        if not isinstance(self.query, model):
            raise TypeError(f"operation declares no {model.__name__} query")
        return self.query

    def body_as(self, model: type[M]) -> M:
        if not isinstance(self.body, model):
            raise TypeError(f"operation declares no {model.__name__} body")
        return self.body


@dataclass(frozen=True, slots=True)
class Reply:
    """A handler's answer: a status the operation declares, and its model (or a raw document)."""

    status: int
    body: BaseModel | Mapping[str, Any]


Handler = Callable[[ApiContext, Call], Awaitable[Reply | web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Operation:
    """One row of the route table. `responses` maps success statuses to their model (None: a
    free-form JSON object); `errors` lists the error statuses the handler itself can cause —
    401, and 400/413/422 for bodies and queries, are added from `public`, `body` and `query`.
    `admin_only` (why) keeps a GET from the read-only token."""

    method: str
    path: str  # below API_PREFIX, aiohttp syntax: /racks/{name}
    operation_id: str
    summary: str
    tag: str
    handler: Handler
    responses: Mapping[int, type[BaseModel] | None]
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    public: bool = False
    description: str = field(default="")
    reads_only: bool = False  # a POST that changes nothing (a query): the read token may call it
    admin_only: str = ""  # why a GET is the admin token's only (say it: the 403 says it)
    media_type: str = JSON  # of the success answer; another one is a stream (see the module doc)

    @property
    def url(self) -> str:
        return API_PREFIX + self.path

    @property
    def needs_admin(self) -> bool:
        """Only the admin token may call it: declared `admin_only`, or not a GET and not declared
        `reads_only`."""
        if self.admin_only:
            return True
        return self.method not in ("GET", "HEAD") and not self.reads_only

    def error_statuses(self, *, secure: bool) -> list[int]:
        statuses = set(self.errors)
        if secure and not self.public:
            statuses.add(401)
            if self.needs_admin:
                statuses.add(403)  # the read-only token may not change anything (or see this)
        if self.body is not None:
            statuses.update((400, 413, 422))
        if self.query is not None:
            statuses.add(422)
        return sorted(statuses)


async def dispatch(op: Operation, ctx: ApiContext, request: web.Request) -> web.StreamResponse:
    """Validate the request against `op`, run its handler, serialise the reply (a streaming
    operation's handler answers itself)."""
    query = _parse_query(op.query, request)
    body = await _parse_body(op.body, request) if op.body is not None else None
    reply = await op.handler(ctx, Call(request, dict(request.match_info), query, body))
    if isinstance(reply, web.StreamResponse):
        if op.media_type == JSON:
            raise AssertionError(f"{op.operation_id} streamed, but declares a JSON answer")
        return reply
    if reply.status not in op.responses:
        raise AssertionError(f"{op.operation_id} answered {reply.status}, not in its responses")
    if isinstance(reply.body, BaseModel):
        text = reply.body.model_dump_json()
    else:
        text = json.dumps(reply.body)
    return web.Response(status=reply.status, text=text, content_type=JSON)


def _parse_query(model: type[BaseModel] | None, request: web.Request) -> BaseModel | None:
    params: dict[str, str] = {}
    for key, value in request.query.items():
        if key in params:
            raise RequestValidationError(
                "invalid query string", [Detail(f"query.{key}", "given more than once")]
            )
        params[key] = value
    if model is None:
        if params:
            where = [
                Detail(f"query.{k}", "this operation takes no query parameters") for k in params
            ]
            raise RequestValidationError("invalid query string", where)
        return None
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise RequestValidationError("invalid query string", _details(exc, "query")) from None


async def _parse_body(model: type[BaseModel], request: web.Request) -> BaseModel:
    raw = await request.read()  # over client_max_size: HTTPRequestEntityTooLarge (→ 413)
    if not raw.strip():
        raise MalformedRequestError(f"this operation needs a JSON body ({model.__name__})")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MalformedRequestError(
            f"the body is not UTF-8 (invalid byte at offset {exc.start})"
        ) from None
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        raise MalformedRequestError(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedRequestError("the body is not valid JSON: nested too deeply") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            f"invalid {model.__name__} body", _details(exc, "body")
        ) from None


def _details(exc: ValidationError, root: str) -> list[Detail]:
    return [Detail(_loc(root, err["loc"]), err["msg"]) for err in exc.errors(include_url=False)]


def _loc(root: str, loc: tuple[int | str, ...]) -> str:
    path = root
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path
