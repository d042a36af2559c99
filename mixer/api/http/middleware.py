"""The REST API's middlewares, outermost first: errors → body size → bearer auth.

- errors: every exception becomes `{"error": {code, message, details}}` through the one table
  (`mixer.api.errors`); aiohttp's own 404/405/413 are turned into the same JSON shape.
- body size: a declared Content-Length over the limit is refused before anything is read; a
  body that turns out larger (chunked) is refused by aiohttp's `client_max_size` while reading.
- auth: `Authorization: Bearer <token>`, compared in constant time (mixer.api.credentials):
  the admin token may do everything, the read-only token only GET and the operations declared
  `reads_only`, and not the GETs declared `admin_only` (else 403); health and the OpenAPI document
  are public. A 401 carries `WWW-Authenticate: Bearer` (RFC 6750).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping

from aiohttp import web
from aiohttp.typedefs import Handler as RequestHandler
from aiohttp.typedefs import Middleware

from mixer.api.credentials import Credentials, require
from mixer.api.errors import (
    ForbiddenError,
    MalformedRequestError,
    MethodNotAllowedError,
    PayloadTooLargeError,
    RouteNotFoundError,
    UnauthenticatedError,
    to_problem,
)
from mixer.api.http.operation import JSON

REALM = "fluxrig-mixer"


def problem_response(exc: BaseException) -> web.Response:
    """The JSON error answer for `exc`, with the headers its status calls for."""
    status, body = to_problem(exc)
    response = web.json_response(body, status=status, content_type=JSON)
    if isinstance(exc, UnauthenticatedError):
        challenge = f'Bearer realm="{REALM}"'
        if exc.presented:
            challenge += ', error="invalid_token"'
        response.headers["WWW-Authenticate"] = challenge
    elif isinstance(exc, MethodNotAllowedError):
        response.headers["Allow"] = ", ".join(exc.allowed)
    return response


def _from_http(exc: web.HTTPException, request: web.Request, limit: int) -> BaseException:
    """aiohttp's own refusals as the API's errors."""
    if isinstance(exc, web.HTTPNotFound):
        return RouteNotFoundError(f"no API operation at {request.path}; see /api/v1/openapi.json")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = sorted(exc.allowed_methods)
        return MethodNotAllowedError(
            f"{request.method} is not allowed on {request.path}; allowed: {', '.join(allowed)}",
            allowed,
        )
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return _too_large(limit)
    if exc.status == 400:
        return MalformedRequestError(exc.text or exc.reason)
    return exc  # anything else aiohttp raises is unexpected here: 500


def _too_large(limit: int, size: int | None = None) -> PayloadTooLargeError:
    got = f" is {size} bytes" if size is not None else ""
    return PayloadTooLargeError(
        f"request body{got} exceeds the limit of {limit} bytes; documents are at most 1 MiB"
    )


def error_middleware(limit: int) -> Middleware:
    @web.middleware
    async def errors(request: web.Request, handler: RequestHandler) -> web.StreamResponse:
        try:
            return await handler(request)
        except asyncio.CancelledError:
            raise
        except web.HTTPException as exc:
            return problem_response(_from_http(exc, request, limit))
        except Exception as exc:
            return problem_response(exc)

    return errors


def body_limit_middleware(limit: int) -> Middleware:
    @web.middleware
    async def body_limit(request: web.Request, handler: RequestHandler) -> web.StreamResponse:
        size = request.content_length
        if size is not None and size > limit:
            raise _too_large(limit, size)
        return await handler(request)

    return body_limit


def auth_middleware(
    credentials: Credentials,
    public_paths: Collection[str],
    reads: Collection[tuple[str, str]] = (),
    admin_only: Mapping[tuple[str, str], str] | None = None,
) -> Middleware:
    """Bearer tokens on every route but `public_paths`; the read-only token may only GET, and
    call the routes in `reads` (method, URL template: POSTs that change nothing), but not the
    GETs in `admin_only` (route → why, which the 403 says)."""
    public = frozenset(public_paths)
    read_only = frozenset(reads)
    admin = dict(admin_only or {})

    @web.middleware
    async def auth(request: web.Request, handler: RequestHandler) -> web.StreamResponse:
        if request.path not in public:
            header = request.headers.get("Authorization")
            role = credentials.role_of(header, where="`Authorization: Bearer <token>`")
            route = (request.method, _template(request))
            if route in admin:
                if role != "admin":
                    raise ForbiddenError(
                        f"{request.method} {request.path} is for the admin token only ([api] "
                        f"auth_token): {admin[route]}"
                    )
            elif request.method not in ("GET", "HEAD") and route not in read_only:
                require(role, "admin", f"{request.method} {request.path}")
        return await handler(request)

    return auth


def _template(request: web.Request) -> str:
    """The URL template of the route `request` matched (its path when it matched none)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path
