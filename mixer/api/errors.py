"""The one table that maps errors to API answers, shared by the REST and (later) gRPC layers.

    status, body = to_problem(exc)       # HTTP status + {"error": {code, message, details}}
    kind = classify(exc)                 # ErrorKind(http, grpc, code) for any exception

The table is looked up along the exception's MRO, so the most specific entry wins
(`RackNotFoundError` before `RegistryError`). Anything not in the table — including the
`StoreError`/`RegistryError` bases (I/O failures, corrupted blobs) and every unexpected
exception — is `500 / INTERNAL` with a generic message and an incident id; the traceback goes to
the log under that id and never to the client.

| exception                          | HTTP | gRPC                | code                |
|------------------------------------|------|---------------------|---------------------|
| UnauthenticatedError               | 401  | UNAUTHENTICATED     | unauthenticated     |
| RackNotFoundError                  | 404  | NOT_FOUND           | rack_not_found      |
| NotFoundError                      | 404  | NOT_FOUND           | not_found           |
| UnknownGearError                   | 404  | NOT_FOUND           | unknown_gear        |
| RouteNotFoundError                 | 404  | NOT_FOUND           | route_not_found     |
| TraceNotFoundError                 | 404  | NOT_FOUND           | trace_not_found     |
| MethodNotAllowedError              | 405  | UNIMPLEMENTED       | method_not_allowed  |
| ConflictError (tag reuse)          | 409  | ALREADY_EXISTS      | tag_conflict        |
| RackConflictError                  | 409  | FAILED_PRECONDITION | rack_conflict       |
| ActivationFailedError              | 409  | ABORTED             | activation_failed   |
| InvalidRefError                    | 400  | INVALID_ARGUMENT    | invalid_ref         |
| RackNameError                      | 400  | INVALID_ARGUMENT    | invalid_rack_name   |
| MalformedRequestError              | 400  | INVALID_ARGUMENT    | malformed_request   |
| InvalidParameterError              | 400  | INVALID_ARGUMENT    | invalid_parameter   |
| TelemetryQueryError                | 400  | INVALID_ARGUMENT    | invalid_query       |
| TelemetryQueryTimeoutError         | 400  | DEADLINE_EXCEEDED   | query_timeout       |
| PayloadTooLargeError               | 413  | RESOURCE_EXHAUSTED  | payload_too_large   |
| RequestValidationError             | 422  | INVALID_ARGUMENT    | invalid_request     |
| ScenarioError                      | 422  | INVALID_ARGUMENT    | invalid_scenario    |
| ServiceUnavailableError            | 503  | UNAVAILABLE         | unavailable         |
| TelemetryBusyError (hub closed)    | 503  | UNAVAILABLE         | telemetry_unavailable |
| TooManyTelemetryQueriesError       | 503  | UNAVAILABLE         | too_many_queries    |
| MachineIdsExhaustedError           | 507  | RESOURCE_EXHAUSTED  | machine_ids_exhausted |
| anything else                      | 500  | INTERNAL            | internal            |

Decisions: tag reuse is ALREADY_EXISTS (the `name:tag` the client tries to create exists with
other bytes), while a rack conflict is FAILED_PRECONDITION (the rack's current status or a taken
name forbids the operation; the client must change state first). Malformed syntax (bad JSON,
bad ref spelling) is 400; well-formed input that fails validation is 422. Exhausted MachineIDs
are 507 (Insufficient Storage) rather than 503: retrying later does not help. A failed
activation is ABORTED: the mixer tried it and put the fleet back (one `details` entry per rack,
`racks.<name>`, and per rollback push, `rollback.<name>`); fix the cause and activate again.
A telemetry time or trace id spelled wrong is 400 `invalid_parameter` (like a bad ref; `details`
name the parameter), and a telemetry SQL query that is refused (not one read-only statement) or
that DuckDB rejects is 400 `invalid_query` with DuckDB's message (out of memory too: the query
needs more than `[telemetry] query_memory_limit`). A query stopped after `[telemetry]
query_timeout` is 400 `query_timeout` / DEADLINE_EXCEEDED: like a refused query, the same query
will fail again — narrow it, or raise the setting. `max_concurrent_queries` queries already
running is 503 `too_many_queries` / UNAVAILABLE: the mixer is busy, retrying shortly helps.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mixer.errors import (
    ActivationFailedError,
    ConflictError,
    InvalidRefError,
    MachineIdsExhaustedError,
    MixerError,
    NotFoundError,
    RackConflictError,
    RackNameError,
    RackNotFoundError,
)
from mixer.telemetry.errors import (
    TelemetryBusyError,
    TelemetryQueryError,
    TelemetryQueryTimeoutError,
    TooManyTelemetryQueriesError,
)
from rack.errors import ScenarioError, UnknownGearError

log = logging.getLogger("fluxrig.mixer.api")

INTERNAL_MESSAGE = "internal error in the mixer; the mixer log has the details under incident"


@dataclass(frozen=True, slots=True)
class Detail:
    """One located problem: `path` (e.g. `gears[0].config.bind` or `body.tag`), optional line."""

    path: str
    message: str
    line: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "message": self.message, "line": self.line}


# --- errors raised by the API layers themselves ---------------------------------------------------


class ApiError(MixerError):
    """Base of the errors the API layers raise about a request (not about the mixer's state)."""


class UnauthenticatedError(ApiError):
    """No credential, or a wrong one: send `Authorization: Bearer <token>`."""

    def __init__(self, message: str, *, presented: bool = False) -> None:
        super().__init__(message)
        self.presented = presented  # a token was sent but did not match


class ForbiddenError(ApiError):
    """The credential is valid but its role may not do this (the read-only token asked to
    change something)."""


class RouteNotFoundError(ApiError):
    """No API operation lives at that path."""


class MethodNotAllowedError(ApiError):
    """The path exists but not with that method; `allowed` lists the methods it has."""

    def __init__(self, message: str, allowed: Sequence[str]) -> None:
        super().__init__(message)
        self.allowed = tuple(sorted(allowed))


class MalformedRequestError(ApiError):
    """The request cannot be read at all (body is not JSON / not UTF-8)."""


class PayloadTooLargeError(ApiError):
    """The request body is larger than the mixer accepts."""


class ServiceUnavailableError(ApiError):
    """The part of the mixer the operation needs is not running (e.g. no orchestrator)."""


class TraceNotFoundError(ApiError):
    """No span of the asked trace is stored (not arrived yet, or past the archive's retention)."""


class InvalidParameterError(ApiError):
    """A request parameter is spelled wrong (a time, a trace id); `details` name it."""

    def __init__(self, message: str, details: Sequence[Detail]) -> None:
        super().__init__(message)
        self.details = tuple(details)


class RequestValidationError(ApiError):
    """Well-formed request that breaks the operation's schema; `details` locate every problem."""

    def __init__(self, message: str, details: Sequence[Detail]) -> None:
        super().__init__(message)
        self.details = tuple(details)


# --- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """How one class of errors is answered: HTTP status, gRPC status code name, stable code."""

    http: int
    grpc: str
    code: str
    expose: bool = True  # False: the message is replaced by a generic one


INTERNAL = ErrorKind(500, "INTERNAL", "internal", expose=False)

ERROR_TABLE: dict[type[BaseException], ErrorKind] = {
    UnauthenticatedError: ErrorKind(401, "UNAUTHENTICATED", "unauthenticated"),
    ForbiddenError: ErrorKind(403, "PERMISSION_DENIED", "forbidden"),
    RackNotFoundError: ErrorKind(404, "NOT_FOUND", "rack_not_found"),
    NotFoundError: ErrorKind(404, "NOT_FOUND", "not_found"),
    UnknownGearError: ErrorKind(404, "NOT_FOUND", "unknown_gear"),
    RouteNotFoundError: ErrorKind(404, "NOT_FOUND", "route_not_found"),
    TraceNotFoundError: ErrorKind(404, "NOT_FOUND", "trace_not_found"),
    MethodNotAllowedError: ErrorKind(405, "UNIMPLEMENTED", "method_not_allowed"),
    ConflictError: ErrorKind(409, "ALREADY_EXISTS", "tag_conflict"),
    RackConflictError: ErrorKind(409, "FAILED_PRECONDITION", "rack_conflict"),
    ActivationFailedError: ErrorKind(409, "ABORTED", "activation_failed"),
    InvalidRefError: ErrorKind(400, "INVALID_ARGUMENT", "invalid_ref"),
    RackNameError: ErrorKind(400, "INVALID_ARGUMENT", "invalid_rack_name"),
    MalformedRequestError: ErrorKind(400, "INVALID_ARGUMENT", "malformed_request"),
    InvalidParameterError: ErrorKind(400, "INVALID_ARGUMENT", "invalid_parameter"),
    TelemetryQueryError: ErrorKind(400, "INVALID_ARGUMENT", "invalid_query"),
    TelemetryQueryTimeoutError: ErrorKind(400, "DEADLINE_EXCEEDED", "query_timeout"),
    PayloadTooLargeError: ErrorKind(413, "RESOURCE_EXHAUSTED", "payload_too_large"),
    RequestValidationError: ErrorKind(422, "INVALID_ARGUMENT", "invalid_request"),
    ScenarioError: ErrorKind(422, "INVALID_ARGUMENT", "invalid_scenario"),
    ServiceUnavailableError: ErrorKind(503, "UNAVAILABLE", "unavailable"),
    TelemetryBusyError: ErrorKind(503, "UNAVAILABLE", "telemetry_unavailable"),
    TooManyTelemetryQueriesError: ErrorKind(503, "UNAVAILABLE", "too_many_queries"),
    MachineIdsExhaustedError: ErrorKind(507, "RESOURCE_EXHAUSTED", "machine_ids_exhausted"),
}


def classify(exc: BaseException) -> ErrorKind:
    """The table entry of the most specific class of `exc`; INTERNAL when none matches."""
    for cls in type(exc).__mro__:
        kind = ERROR_TABLE.get(cls)
        if kind is not None:
            return kind
    return INTERNAL


def details_of(exc: BaseException) -> list[Detail]:
    """The located problems carried by `exc` (scenario problems, request validation errors)."""
    if isinstance(exc, ScenarioError):
        return [Detail(p.path, p.message, p.line) for p in exc.problems]
    if isinstance(exc, RequestValidationError | InvalidParameterError):
        return list(exc.details)
    if isinstance(exc, ActivationFailedError):
        return activation_details(exc)
    return []


_OUTCOMES = {
    "applied": "applied it",
    "failed": "failed: {error}",
    "timeout": "timeout: {error}",
}
_ROLLBACKS = {
    "applied": "rolled back",
    "failed": "rollback failed: {error}",
    "timeout": "rollback timeout: {error}",
}


def activation_details(exc: ActivationFailedError) -> list[Detail]:
    """What every rack said (`racks.<name>`), then how each rollback push went
    (`rollback.<name>`; racks that failed kept what they ran and are not pushed again)."""
    details = []
    for path, texts, outcomes in (
        ("racks", _OUTCOMES, exc.result.racks),
        ("rollback", _ROLLBACKS, exc.result.rollback),
    ):
        for o in outcomes:
            error = o.error or "no reason given"
            details.append(Detail(f"{path}.{o.rack}", texts[o.state].format(error=error)))
    return details


def message_of(exc: BaseException) -> str:
    if isinstance(exc, ScenarioError):
        return exc.summary  # the problems go to `details`, not into one long string
    return str(exc) or type(exc).__name__


def to_problem(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for `exc`. Unmapped errors are logged with their traceback under
    a fresh incident id, and the client only gets that id."""
    kind = classify(exc)
    if kind.expose:
        message, details = message_of(exc), details_of(exc)
    else:
        incident = uuid.uuid4().hex[:12]
        log.error("API request failed (incident %s)", incident, exc_info=exc)
        message, details = f"{INTERNAL_MESSAGE} {incident}", []
    body = {
        "error": {
            "code": kind.code,
            "message": message,
            "details": [d.as_json() for d in details],
        }
    }
    return kind.http, body
