"""Bearer authentication for the gRPC API: metadata `authorization: Bearer <token>`.

Every service needs the token except the standard health and reflection services (like the
REST API's health and OpenAPI document). Tokens are compared in constant time
(mixer.api.credentials); a refused call is UNAUTHENTICATED (no or an unknown token) or
PERMISSION_DENIED (the read-only token calling anything but List*/Get*/Watch*) through the error
table, before the servicer runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

import grpc

from mixer.api.credentials import Credentials, is_read_only_rpc, require
from mixer.api.errors import ForbiddenError, UnauthenticatedError
from mixer.api.grpc.status import abort_with


def credential_error(
    metadata: Any, credentials: Credentials, method: str
) -> UnauthenticatedError | ForbiddenError | None:
    """Why `metadata` may not call `method` (None when it may)."""
    header = next((str(v) for k, v in metadata or () if k == "authorization"), "")
    try:
        role = credentials.role_of(header, where="metadata `authorization: Bearer <token>`")
        if not is_read_only_rpc(method):
            require(role, "admin", method.lstrip("/"))
    except (UnauthenticatedError, ForbiddenError) as exc:
        return exc
    return None


def _refusal(handler: Any, error: UnauthenticatedError | ForbiddenError) -> Any:
    """A handler of the same shape as `handler` that only refuses the call."""

    async def refuse(request: Any, context: Any) -> None:
        await abort_with(context, error)

    des, ser = handler.request_deserializer, handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, des, ser)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, des, ser)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, des, ser)
    return grpc.unary_unary_rpc_method_handler(refuse, des, ser)


class BearerAuth(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Refuse calls without a bearer token, and the read-only token's calls that change
    something, except to `public_services` (full names)."""

    def __init__(self, credentials: Credentials, public_services: Collection[str]) -> None:
        self._credentials = credentials
        self._public = frozenset(public_services)

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        service = str(handler_call_details.method).lstrip("/").partition("/")[0]
        if handler is None or service in self._public:
            return handler  # unknown methods stay UNIMPLEMENTED
        method = str(handler_call_details.method)
        error = credential_error(
            handler_call_details.invocation_metadata, self._credentials, method
        )
        return handler if error is None else _refusal(handler, error)
