"""Exceptions → gRPC status, through the one table in `mixer.api.errors`.

    @answers                      # on every unary servicer method
    async def GetRack(self, request, context): ...

`abort_with(context, exc)` aborts the call with the table's code for `exc`. The status message is
the REST error message, followed by every located problem (`path (line N): message`) on its own
line; the full REST-shaped error body (`{"error": {code, message, details}}`) also goes into the
trailing metadata `fluxrig-error-bin` (JSON), and the stable code into `fluxrig-error-code`.
Unexpected exceptions are INTERNAL with an incident id; the traceback goes to the log only
(`to_problem` does both).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from pydantic import ValidationError

from mixer.api.errors import Detail, RequestValidationError, classify, to_problem

ERROR_CODE_KEY = "fluxrig-error-code"
ERROR_BODY_KEY = "fluxrig-error-bin"

S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Method = Callable[[S, Req, Any], Awaitable[Resp]]


def status_code(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code the table gives `exc`."""
    return grpc.StatusCode[classify(exc).grpc]


def status_message(error: dict[str, Any]) -> str:
    """`message`, then one line per detail: `path (line N): message`."""
    lines = [str(error["message"])]
    for d in error["details"]:
        where = f"{d['path']} (line {d['line']})" if d.get("line") else str(d["path"])
        lines.append(f"  - {where}: {d['message']}")
    return "\n".join(lines)


async def abort_with(context: Any, exc: BaseException) -> NoReturn:
    """Abort the call with the status the table gives `exc` (logs unexpected ones)."""
    _, body = to_problem(exc)
    error = body["error"]
    trailers = (
        (ERROR_CODE_KEY, str(error["code"])),
        (ERROR_BODY_KEY, json.dumps(body).encode("utf-8")),
    )
    await context.abort(status_code(exc), status_message(error), trailers)
    raise AssertionError("context.abort returned")  # it always raises


def answers(method: Method[S, Req, Resp]) -> Method[S, Req, Resp]:
    """Wrap a unary servicer method: any exception is answered through the table."""

    @functools.wraps(method)
    async def wrapper(self: S, request: Req, context: Any) -> Resp:
        try:
            return await method(self, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise  # the client went away, or the method aborted on purpose
        except Exception as exc:  # mapped; unexpected ones are logged as INTERNAL
            await abort_with(context, exc)

    return wrapper


def invalid_request(exc: ValidationError, what: str) -> RequestValidationError:
    """A pydantic error about a request message as the table's INVALID_ARGUMENT error."""
    details = [
        Detail(".".join(str(p) for p in err["loc"]) or "request", err["msg"])
        for err in exc.errors(include_url=False)
    ]
    return RequestValidationError(f"invalid {what}", details)
