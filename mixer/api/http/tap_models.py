"""The live tap route's query string and the lines of its NDJSON stream.

    {"type": "tap", ...}    first (the tap is open) and then every few seconds: the session's state
    {"type": "msg", ...}    one per tapped message, exactly as the rack wrote it (`fluxrig tail
                            --json` prints the same records)
    {"type": "end", ...}    last: why the session ended and the final counts

The record model only shapes the OpenAPI document: the mixer forwards the rack's bytes without
decoding them. The state and end lines are built from `TapState`/`TapEnd`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, RootModel

from mixer.api.http.models import _Query, _Response
from rack.tap.client import TapCounts
from rack.tap.record import VARIABLES

__all__ = ["TapEnd", "TapLine", "TapQuery", "TapRecord", "TapState"]


class TapQuery(_Query):
    wire: str = Field(
        min_length=1,
        max_length=300,
        description="`src.port→dst.port` (also `src.port -> dst.port`): that wire; `src.port` or "
        "`src`: every wire from that port (`out` by default).",
    )
    filter: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description=f"CEL condition over a tapped message ({', '.join(VARIABLES)}); only the "
        "messages it holds for are sent.",
    )
    limit: int | None = Field(
        default=None, ge=1, description="End the tap once the rack published this many messages."
    )
    rate: float = Field(
        default=500.0,
        ge=1,
        le=10_000,
        description="At most this many messages per second from the rack; it drops the rest "
        "(counted) instead of slowing the wire.",
    )


class _Counts(_Response):
    rack: str
    tap: str = Field(description="The tap's id on the rack.")
    wire: str = Field(description="What is tapped, as the rack names it: `gen.out → sink.in`.")
    sent: int = Field(description="Records written to this stream.")
    published: int = Field(description="Records the rack published.")
    dropped: int = Field(
        description="Dropped by the rack: its tap queue was full (`rate`, or the mixer, could "
        "not keep up). The wire itself is never slowed."
    )
    dropped_by_mixer: int = Field(
        description="Dropped by the mixer: this client read slower than the records came "
        "(`[api] tap_buffer` records waited)."
    )
    filtered: int = Field(description="Messages the filter said no to.")
    filter_errors: int = Field(description="Messages the filter failed on (counted as no).")
    filter_error: str = Field(description="Why the filter last failed.")

    @classmethod
    def of(cls, rack: str, tap: str, counts: TapCounts, sent: int, **extra: Any) -> Any:
        return cls(
            rack=rack, tap=tap, wire=counts.wire, sent=sent, published=counts.published,
            dropped=counts.dropped, dropped_by_mixer=counts.local_dropped,
            filtered=counts.filtered, filter_errors=counts.filter_errors,
            filter_error=counts.filter_error, **extra,
        )  # fmt: skip


class TapState(_Counts):
    """The session's state: first (the tap is open), then after every lease renewal."""

    type: Literal["tap"] = "tap"


class TapEnd(_Counts):
    """The last line."""

    type: Literal["end"] = "end"
    reason: str = Field(
        description="Why the tap ended: `limit reached`, `wire removed` (a reload), `rack "
        "stopping`, `lease expired` (by the rack), `rack stopped answering` (nothing from it "
        "for a lease), `mixer stopping`."
    )


class TapRecord(_Response):
    """One tapped message, as the rack wrote it (docs/telemetry.md, "Live tap")."""

    type: Literal["msg"] = "msg"
    ts: str = Field(description="When it crossed the wire (ISO-8601, UTC).")
    wire: str
    flux_id: str = Field(description="64-bit fluxID, decimal.")
    ref_id: str = Field(description="64-bit correlation id, decimal.")
    meta: dict[str, Any]
    data: Any = Field(description="Structured fields (bytes inside as base64).")
    raw: str = Field(description="The payload: UTF-8 text, or base64 (`raw_encoding`); 16 KiB.")
    raw_encoding: Literal["utf-8", "base64"]
    raw_size: int
    dropped_so_far: int = Field(description="Dropped by the rack on this tap so far.")
    truncated: bool = Field(
        default=False, description="`data` and `meta` are previews: the record was over 128 KiB."
    )


class TapLine(RootModel[Annotated[TapState | TapRecord | TapEnd, Field(discriminator="type")]]):
    """One line of the stream (`application/x-ndjson`)."""
