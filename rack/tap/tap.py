"""Live taps and where they listen: `Tap` (one viewer's bounded queue, counters and lease) and
`TapRegistry` (the taps of a rack, resolved against its wires and attached to its routers).

The wire's side is `Tap.offer`, called by `Router` for a port that has taps: a snapshot goes into
the tap's queue if there is room, else it is dropped and counted. It never waits, so a slow
viewer never slows the wire; a port without taps pays one attribute check (`Router.taps is
None`). Everything else happens in the tap's task (`rack.tap.service`).
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from rack.gear.base import DEFAULT_IN, DEFAULT_OUT
from rack.model.fluxmsg import FluxMsg
from rack.model.scenario import Blueprint, Endpoint
from rack.tap.protocol import TapError, TapRequest
from rack.tap.record import Filter, Sample

if TYPE_CHECKING:
    from rack.runtime.router import Router

__all__ = ["Tap", "TapRegistry"]

ARROWS = ("→", "->")


class Tap:
    """One live tap. `offer` runs in the wire's path; the rest in the tap's task."""

    __slots__ = (
        "dropped",
        "ended",
        "filter",
        "filter_error",
        "filter_errors",
        "filtered",
        "id",
        "label",
        "lease",
        "limit",
        "published",
        "queue",
        "rate",
        "renewed",
        "size",
        "source",
        "subject",
        "wake",
    )

    def __init__(
        self,
        id: str,
        label: str,
        source: Endpoint,
        request: TapRequest,
        *,
        subject: str,
        size: int,
        filter: Filter | None,
    ) -> None:
        self.id = id
        self.label = label
        self.source = source
        self.subject = subject
        self.filter = filter
        self.limit = request.limit
        self.lease = request.lease
        self.rate = request.rate
        self.size = size
        self.queue: collections.deque[Sample] = collections.deque()
        self.wake = asyncio.Event()
        self.renewed = time.monotonic()
        self.ended: str | None = None
        self.dropped = 0  # not queued: the queue was full (viewer or rate cap too slow)
        self.published = 0
        self.filtered = 0  # the filter said no
        self.filter_errors = 0  # the filter failed (counted as no)
        self.filter_error = ""

    def offer(self, msg: FluxMsg) -> None:
        """Queue a snapshot of `msg` (just emitted on the tapped port), or drop and count it."""
        queue = self.queue
        if len(queue) >= self.size:
            self.dropped += 1
            return
        queue.append((msg.path[-1].ts, msg.id, msg.ref_id, dict(msg.meta), msg.data, msg.raw))
        self.wake.set()

    @property
    def deadline(self) -> float:
        return self.renewed + self.lease

    def renew(self) -> None:
        self.renewed = time.monotonic()

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
            self.wake.set()

    def state(self) -> dict[str, Any]:
        return {
            "type": "tap",
            "tap": self.id,
            "subject": self.subject,
            "wire": self.label,
            "lease": self.lease,
            "published": self.published,
            "dropped": self.dropped,
            "filtered": self.filtered,
            "filter_errors": self.filter_errors,
            "filter_error": self.filter_error,
        }


class TapRegistry:
    """The taps of one rack, by id; attaches each to the router of the gear it listens to."""

    def __init__(self, rack: str, *, max_taps: int, queue_depth: int) -> None:
        self.rack = rack
        self.max_taps = max_taps
        self.queue_depth = queue_depth
        self.taps: dict[str, Tap] = {}
        self._routers: dict[str, Router] = {}
        self._wires: tuple[tuple[Endpoint, Endpoint], ...] = ()
        self._inbound: dict[str, str] = {}  # label of a wire fed by another rack → that rack

    def rewire(self, routers: Mapping[str, Router], blueprint: Blueprint) -> None:
        """The rack applied `blueprint`: end the taps whose wire is gone, re-attach the rest."""
        self._wires = tuple(
            (w.source, w.target) for w in (*blueprint.wires, *(c.wire for c in blueprint.outbound))
        )
        self._inbound = {_label(c.wire.source, c.wire.target): c.peer for c in blueprint.inbound}
        for router in self._routers.values():
            router.taps = None
        self._routers = dict(routers)
        for tap in list(self.taps.values()):
            if not self._has(tap.source, tap.label):
                tap.end("wire removed")
        self._attach()

    def open(self, request: TapRequest, subject: Callable[[str], str]) -> Tap:
        """A new tap (attached: it receives from now on). `subject(id)` names its data subject.
        Raises `TapError` for an unknown wire, a bad filter, too many taps or an id in use."""
        source, label = self.resolve(request.wire)
        flt = Filter.compile(request.filter) if request.filter else None
        if len(self.taps) >= self.max_taps:
            raise TapError(
                "too_many_taps",
                f"rack '{self.rack}' already runs {len(self.taps)} taps (max_taps = "
                f"{self.max_taps}): stop one, or raise max_taps",
            )
        tap_id = request.id or secrets.token_hex(6)
        if tap_id in self.taps:
            raise TapError("bad_request", f"tap id '{tap_id}' is in use: propose another")
        tap = Tap(
            tap_id, label, source, request,
            subject=subject(tap_id), size=self.queue_depth, filter=flt,
        )  # fmt: skip
        self.taps[tap_id] = tap
        self._attach()
        return tap

    def get(self, tap_id: str) -> Tap:
        tap = self.taps.get(tap_id)
        if tap is None or tap.ended is not None:
            raise TapError("not_found", f"no tap '{tap_id}' on rack '{self.rack}' (it has ended)")
        return tap

    def remove(self, tap: Tap) -> None:
        if self.taps.get(tap.id) is tap:
            del self.taps[tap.id]
            self._attach()

    def resolve(self, spec: str) -> tuple[Endpoint, str]:
        """`a.out → b.in` (one wire), `a.out` or `a` (every wire from that port): its source
        endpoint and label; `TapError("unknown_wire")` naming the wires there are."""
        text = spec
        for arrow in ARROWS[1:]:
            text = text.replace(arrow, ARROWS[0])
        src, arrow, dst = text.partition(ARROWS[0])
        source = Endpoint.parse(src, DEFAULT_OUT)
        target = Endpoint.parse(dst, DEFAULT_IN) if arrow else None
        label = _label(source, target)
        if source.gear and (target is None or target.gear) and self._has(source, label):
            return source, label
        known = ", ".join(dict.fromkeys(_label(s, t) for s, t in self._wires)) or "none"
        hint = ""
        if label in self._inbound:
            hint = f" (it is fed by rack '{self._inbound[label]}': tap it there)"
        raise TapError(
            "unknown_wire", f"no wire '{spec}' on rack '{self.rack}'{hint}; known: {known}"
        )

    def _has(self, source: Endpoint, label: str) -> bool:
        if source.gear not in self._routers:
            return False
        return any(s == source and label in (str(s), _label(s, t)) for s, t in self._wires)

    def _attach(self) -> None:
        by_gear: dict[str, dict[str, list[Tap]]] = {}
        for tap in self.taps.values():
            if tap.ended is None:
                ports = by_gear.setdefault(tap.source.gear, {})
                ports.setdefault(tap.source.port, []).append(tap)
        for gear, router in self._routers.items():
            listening = by_gear.get(gear)
            router.taps = {p: tuple(t) for p, t in listening.items()} if listening else None


def _label(source: Endpoint, target: Endpoint | None) -> str:
    return f"{source} → {target}" if target is not None else str(source)
