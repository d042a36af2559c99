"""The live-tap protocol between `fluxrig tail` and a rack: subjects and message shapes (JSON).

    viewer → rack  request  flux.ctrl.<rack>.tap               TapRequest
    rack → viewer  reply                                       TapState | {"error": ErrorBody}
    rack → viewer  publish  flux.telemetry.<rack>.tap.<id>     {"type": "msg", ...} per message,
                                                               {"type": "end", ...} once at the end
    viewer → rack  request  flux.ctrl.<rack>.tap.<id>.renew    {} → TapState (the lease restarts)
    viewer → rack  request  flux.ctrl.<rack>.tap.<id>.stop     {} → TapState (then the end record)

Every subject is one the mixer's hub lets a rack use (`flux.ctrl.<rack>.>` in,
`flux.telemetry.<rack>.>` out: docs/security.md), so a tap works on the rack's own NATS and
through the hub alike. The hub does not let a rack answer on another client's `_INBOX`, so a
viewer that goes through the hub sets its requests' reply subject to its tap subject
(`data_subject(rack, id)`, with the `id` it proposes in the request): replies, records and the
end record then arrive on its one subscription, each tagged by `type` ("tap", "msg", "end",
"error").
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rack.errors import FluxError

__all__ = [
    "ID_PATTERN",
    "MAX_REQUEST",
    "TapError",
    "TapRequest",
    "control_subjects",
    "data_subject",
    "decode_request",
    "encode",
    "open_subject",
    "renew_subject",
    "shown_url",
    "stop_subject",
]

MAX_REQUEST = 64 * 1024
ID_PATTERN = r"^[A-Za-z0-9_-]{6,64}$"
_ID = re.compile(ID_PATTERN)

ErrorCode = Literal[
    "bad_request",  # not JSON, a field missing or wrong, a proposed id in use
    "unknown_wire",  # no such wire on this rack (the message names the known ones)
    "bad_filter",  # the CEL filter does not compile (the message is the compiler's)
    "too_many_taps",  # `max_taps` taps already run on this rack
    "not_found",  # renew/stop of a tap that has ended (or never existed)
    "internal",  # the rack failed (logged there)
]


class TapError(FluxError):
    """A tap request refused; `code` is one of `ErrorCode`, the message says why and what to do."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"code": self.code, "message": str(self)}}


class TapRequest(BaseModel):
    """Open a tap on `wire`: `src.port → dst.port` (that wire) or `src.port` (every wire from
    that port); `src` alone means its `out` port."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wire: str = Field(min_length=1, max_length=300)
    filter: str | None = Field(default=None, max_length=4096)
    limit: int | None = Field(default=None, ge=1, description="end after this many messages")
    lease: float = Field(default=10.0, ge=0.1, le=600, description="seconds without a renew")
    rate: float = Field(default=500.0, ge=1, le=10_000, description="messages/s published")
    id: str | None = Field(default=None, pattern=ID_PATTERN, description="proposed tap id")


def open_subject(rack: str) -> str:
    return f"flux.ctrl.{rack}.tap"


def renew_subject(rack: str, tap: str) -> str:
    return f"flux.ctrl.{rack}.tap.{tap}.renew"


def stop_subject(rack: str, tap: str) -> str:
    return f"flux.ctrl.{rack}.tap.{tap}.stop"


def control_subjects(rack: str) -> tuple[str, str]:
    """What the rack subscribes: opening requests, and renew/stop of any tap."""
    return open_subject(rack), f"flux.ctrl.{rack}.tap.*.*"


def data_subject(rack: str, tap: str) -> str:
    return f"flux.telemetry.{rack}.tap.{tap}"


def valid_id(text: str) -> bool:
    return bool(_ID.match(text))


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def decode_request(payload: bytes) -> TapRequest:
    """Parse a TapRequest; raises `TapError("bad_request")` saying what is wrong."""
    if len(payload) > MAX_REQUEST:
        raise TapError("bad_request", f"request is {len(payload)} bytes; max {MAX_REQUEST}")
    try:
        return TapRequest.model_validate_json(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}" for e in exc.errors()
        )
        raise TapError("bad_request", f"bad tap request: {problems}") from None


def shown_url(url: str) -> str:
    """`url` without its credentials, for logs and messages (`nats://user:pw@hub` may be given)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"***@{netloc}"))
