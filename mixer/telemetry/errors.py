"""The telemetry hub's exceptions (a branch of the mixer's tree, `mixer.errors`).

MixerError                         (mixer.errors)
└── TelemetryError                 the telemetry hub cannot do what was asked
    ├── MalformedTelemetryError    an OTLP request does not parse         → 400 / INVALID_ARGUMENT
    ├── UnsupportedMediaError      content type or encoding not spoken    → 415 / INVALID_ARGUMENT
    ├── TelemetryTooLargeError     a request exceeds `max_body_bytes`     → 413 / RESOURCE_EXHAUSTED
    ├── TelemetryBusyError         the write queue is full (retry later)  → 503 / UNAVAILABLE
    │                              or the database is being reopened (retry the query)
    │   └── TelemetryClosedError   the hub is closed
    └── TelemetryQueryError        a query was refused or failed (out of memory too) → 400
        ├── TelemetryQueryTimeoutError    it ran past `query_timeout`   → 400 / DEADLINE_EXCEEDED
        └── TooManyTelemetryQueriesError  `max_concurrent_queries` run  → 503 / UNAVAILABLE
"""

from __future__ import annotations

from mixer.errors import MixerError

__all__ = [
    "MalformedTelemetryError",
    "TelemetryBusyError",
    "TelemetryClosedError",
    "TelemetryError",
    "TelemetryQueryError",
    "TelemetryQueryTimeoutError",
    "TelemetryTooLargeError",
    "TooManyTelemetryQueriesError",
    "UnsupportedMediaError",
    "status_of",
]


class TelemetryError(MixerError):
    """Base of the telemetry hub's errors."""


class MalformedTelemetryError(TelemetryError):
    """An OTLP request is not valid protobuf / OTLP-JSON (the message says where it broke)."""


class UnsupportedMediaError(TelemetryError):
    """The request's content type or content encoding is not one the receiver speaks."""


class TelemetryTooLargeError(TelemetryError):
    """A request (or its decompressed body) is larger than `[telemetry] max_body_bytes`."""


class TelemetryBusyError(TelemetryError):
    """The write queue is full: the request was refused, the sender should retry later. Also
    a query that met the database failed (it is being reopened): retry the query shortly."""


class TelemetryClosedError(TelemetryBusyError):
    """The telemetry hub is closed (or closing); nothing more is accepted."""


class TelemetryQueryError(TelemetryError):
    """A telemetry query was refused (not a single read-only statement, bad filter) or failed."""


class TelemetryQueryTimeoutError(TelemetryQueryError):
    """A telemetry query ran longer than `[telemetry] query_timeout` and was interrupted."""


class TooManyTelemetryQueriesError(TelemetryQueryError):
    """`[telemetry] max_concurrent_queries` queries are running: this one was refused at once."""


# HTTP status and gRPC status code (name) of each error, most specific first.
_STATUS: tuple[tuple[type[TelemetryError], int, str], ...] = (
    (MalformedTelemetryError, 400, "INVALID_ARGUMENT"),
    (UnsupportedMediaError, 415, "INVALID_ARGUMENT"),
    (TelemetryTooLargeError, 413, "RESOURCE_EXHAUSTED"),
    (TelemetryBusyError, 503, "UNAVAILABLE"),
    (TelemetryQueryTimeoutError, 400, "DEADLINE_EXCEEDED"),
    (TooManyTelemetryQueriesError, 503, "UNAVAILABLE"),
    (TelemetryQueryError, 400, "INVALID_ARGUMENT"),
)


def status_of(exc: TelemetryError) -> tuple[int, str]:
    """How the receivers answer `exc`: (HTTP status, gRPC status code name)."""
    for kind, http, grpc_code in _STATUS:
        if isinstance(exc, kind):
            return http, grpc_code
    return 500, "INTERNAL"
