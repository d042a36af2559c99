"""Bearer authentication for the gRPC API: metadata `authorization: Bearer <token>`.

Every service needs the token except the standard health and reflection services (like the
REST API's health and OpenAPI document). The token is compared in constant time; a refused call
is UNAUTHENTICATED through the error table, before the servicer runs.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import grpc

from mixer.api.errors import UnauthenticatedError
from mixer.api.grpc.status import abort_with


def credential_error(metadata: Any, expected: bytes) -> UnauthenticatedError | None:
    """Why `metadata` does not authenticate (None when it does)."""
    header = next((str(v) for k, v in metadata or () if k == "authorization"), "")
    scheme, _, credential = header.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return UnauthenticatedError(
            "this call needs a token: send metadata `authorization: Bearer <token>` with the "
            "mixer's [api] auth_token (or FLUXRIG_API_TOKEN)"
        )
    if not hmac.compare_digest(credential.encode("utf-8", "surrogatepass"), expected):
        return UnauthenticatedError(
            "the bearer token is not valid for this mixer; check [api] auth_token or "
            "FLUXRIG_API_TOKEN",
            presented=True,
        )
    return None


def _refusal(handler: Any, error: UnauthenticatedError) -> Any:
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
    """Refuse calls without the bearer token, except to `public_services` (full names)."""

    def __init__(self, token: str, public_services: Collection[str]) -> None:
        self._expected = token.encode("utf-8")
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
        error = credential_error(handler_call_details.invocation_metadata, self._expected)
        return handler if error is None else _refusal(handler, error)
