"""A viewer's side of a live tap over NATS (`rack.tap.protocol`): open, renew, stop, records.

    tap = TapClient(nc, "edge-1", TapRequest(wire="gen.out→sink.in", limit=10), pending=1024)
    state = await tap.open()              # TapError: the rack refused; TapUnanswered: nobody did
    async with asyncio.TaskGroup() as tg:
        tg.create_task(tap.keep_alive())  # renews the lease until the session is over
        while (event := await tap.next()) is not None:
            ...                           # event.kind "msg" (a record) or "tap" (the rack's state)
    await tap.aclose()                    # stops the tap on the rack if it still runs; idempotent
    tap.counts                            # why it ended, what was dropped and where

Used by `fluxrig tail` (on a rack's own NATS) and by the mixer's tap route (through its hub). The
client proposes the tap's id and takes replies, records and the end record on its one
subscription (`data_subject(rack, id)`). Records wait in a bounded queue of `pending`; past that
they are dropped here and counted (`counts.local_dropped`), so a slow consumer slows neither the
NATS connection, nor the rack, nor the wire. Records are not decoded here: a consumer that
forwards them sends `event.data` as the rack wrote it.

A session is over (`finished`) when the rack sent the end record (`counts.ended` is its reason),
when the rack said the tap is gone, when the rack was silent for a whole lease ("rack stopped
answering"), or when the consumer called `interrupt(reason)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from rack.errors import FluxError
from rack.tap.protocol import (
    TapError,
    TapRequest,
    data_subject,
    encode,
    open_subject,
    renew_subject,
    stop_subject,
)

__all__ = ["SILENT", "TapClient", "TapCounts", "TapEvent", "TapUnanswered"]

ANSWER_TIMEOUT = 5.0  # seconds for the rack to answer the opening request
END_WAIT = 1.0  # seconds `stop` waits for the end record (the final counts)
RETRY = 0.2  # seconds between opening requests nobody received (`open(patient=True)`)
SILENT = "rack stopped answering"  # `counts.ended` when nothing came for a whole lease
NATS_ERRORS = (nats.errors.Error, OSError, TimeoutError)
_RECORD = b'{"type":"msg"'  # how `rack.tap.record.record` starts every record


class TapUnanswered(FluxError):
    """Nobody answered the opening request: no rack of that name listens on this NATS (`how`
    says whether the server said so at once or the answer timed out)."""

    def __init__(self, rack: str, how: str) -> None:
        super().__init__(f"no answer from rack '{rack}' {how}")
        self.rack = rack
        self.how = how


@dataclass(frozen=True, slots=True)
class TapEvent:
    """A record (`kind` "msg") or the rack's state of the tap ("tap"), as the rack sent it."""

    kind: str
    data: bytes

    def body(self) -> dict[str, Any]:
        return _decode(self.data)


@dataclass(slots=True)
class TapCounts:
    """What the session saw: the rack's counters (from its state and end records) and ours."""

    wire: str = ""  # the rack's name of what is tapped: `gen.out → sink.in`
    received: int = 0  # records that arrived here
    published: int = 0  # records the rack published
    dropped: int = 0  # by the rack: its tap queue was full (the viewer or `rate` too slow)
    local_dropped: int = 0  # here: the consumer did not keep up (`pending` records waited)
    filtered: int = 0  # the filter said no
    filter_errors: int = 0  # the filter failed (counted as no)
    filter_error: str = ""
    ended: str | None = None  # why the session is over


class TapClient:
    """One tap on rack `rack`, over the NATS connection `nc` (shared or not)."""

    def __init__(
        self,
        nc: Client,
        rack: str,
        request: TapRequest,
        *,
        pending: int = 1024,
        answer_timeout: float = ANSWER_TIMEOUT,
    ) -> None:
        if request.id is None:
            request = request.model_copy(update={"id": secrets.token_hex(8)})
        assert request.id is not None
        self.nc = nc
        self.rack = rack
        self.request = request
        self.id = request.id
        self.subject = data_subject(rack, self.id)  # replies, records and the end record
        self.pending = pending
        self.answer_timeout = answer_timeout
        self.counts = TapCounts()
        self.finished = asyncio.Event()  # the session is over (see the module doc)
        self._queue: asyncio.Queue[TapEvent | None] = asyncio.Queue()
        self._records = 0  # records in `_queue`
        self._gone = asyncio.Event()  # the tap no longer runs on the rack
        self._interrupted = False
        self._opened = False
        self._closed = False
        self._heard = time.monotonic()
        self._sub: Subscription | None = None

    # -- the session ----------------------------------------------------------------------------

    async def open(self, *, patient: bool = False) -> dict[str, Any]:
        """Subscribe and ask the rack for the tap; its state (`{"type": "tap", "wire", ...}`).
        Raises `TapError` with the rack's code and reason when it refuses, `TapUnanswered` when
        nobody answers within `answer_timeout`. `patient`: a request nobody received (the rack
        is not, or not yet, known where `nc` is: a Snake that just connected) is sent again
        until the timeout, instead of failing at once."""
        if self._sub is None:
            self._sub = await self.nc.subscribe(self.subject, cb=self._on_msg)
            await self.nc.flush(timeout=max(1, round(self.answer_timeout)))
        deadline = time.monotonic() + self.answer_timeout
        payload = encode(self.request.model_dump(exclude_none=True))
        while True:
            await self.nc.publish(open_subject(self.rack), payload, reply=self.subject)
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    event = await self._queue.get()
            except TimeoutError:
                raise TapUnanswered(self.rack, f"within {self.answer_timeout:g}s") from None
            if event is None:
                raise TapUnanswered(self.rack, f"({self.counts.ended or 'interrupted'})")
            if event.kind != "none":
                break
            left = deadline - time.monotonic()
            if not patient or left <= RETRY:
                raise TapUnanswered(self.rack, "(nobody listens)")
            await asyncio.sleep(RETRY)  # back-off before asking again, not synchronisation
        body = event.body()
        if event.kind == "error":
            error = body.get("error") or {}
            raise TapError(error.get("code", "internal"), str(error.get("message", body)))
        self._opened = True
        self._heard = time.monotonic()
        return body

    async def next(self) -> TapEvent | None:
        """The next record or state of the tap; None once the session is over (`counts.ended`
        says why). Records that arrived before the end record all come first; after
        `interrupt` nothing more does."""
        if self._interrupted:
            return None
        event = await self._queue.get()
        if event is None or self._interrupted:
            return None
        if event.kind == "msg":
            self._records -= 1
        return event

    async def keep_alive(self) -> None:
        """Renew the lease every third of it until the session is over; end the session
        (`SILENT`) when nothing came from the rack for a whole lease."""
        lease = self.request.lease
        while not self.finished.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(lease / 3):
                    await self.finished.wait()
            if self.finished.is_set():
                return
            if time.monotonic() - self._heard > lease:
                self._finish(SILENT)
                self._gone.set()  # its lease ran out on the rack too
                return
            await self._send(renew_subject(self.rack, self.id))

    def interrupt(self, reason: str) -> None:
        """The consumer is done (Ctrl-C, its client left, the mixer stops): `next` returns None
        from now on. `aclose` then stops the tap on the rack."""
        self._interrupted = True
        self._finish(reason)

    async def stop(self, wait: float = END_WAIT) -> None:
        """Stop the tap on the rack unless it ended there, and wait up to `wait` seconds for
        its end record (the final counts). Never raises for NATS."""
        if not self._opened or self._gone.is_set():
            return
        self._finish("stopped")
        await self._send(stop_subject(self.rack, self.id), flush=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._gone.wait()

    async def aclose(self) -> None:
        """Stop the tap (see `stop`) and unsubscribe; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.stop()
        finally:
            self._finish(self.counts.ended or "closed")
            sub, self._sub = self._sub, None
            if sub is not None:
                with contextlib.suppress(*NATS_ERRORS):
                    await sub.unsubscribe()

    # -- what arrives -----------------------------------------------------------------------------

    async def _on_msg(self, msg: Msg) -> None:
        data = msg.data
        self._heard = time.monotonic()
        if not data:  # no responders (status 503): nobody listens; after opening, the silence
            if not self._opened and (msg.headers or {}).get("Status") == "503":  # decides
                self._queue.put_nowait(TapEvent("none", b""))
            return
        if data.startswith(_RECORD):
            self._record(data)
            return
        body = _decode(data)
        kind = str(body.get("type", ""))
        if kind == "msg":
            self._record(data)
        elif kind == "tap":
            self._track(body)
            self._queue.put_nowait(TapEvent(kind, data))
        elif kind == "end":
            self._track(body)
            self._gone.set()
            self._finish(str(body.get("reason", "ended")))
        elif kind == "error":
            if not self._opened:  # the answer to the opening request
                self._queue.put_nowait(TapEvent(kind, data))
                return
            error = body.get("error") or {}  # a renew or stop of a tap that has ended
            self._gone.set()
            self._finish(f"gone: {error.get('message', 'the rack no longer has this tap')}")

    def _record(self, data: bytes) -> None:
        self.counts.received += 1
        if self._records >= self.pending:
            self.counts.local_dropped += 1
            return
        self._records += 1
        self._queue.put_nowait(TapEvent("msg", data))

    def _track(self, body: dict[str, Any]) -> None:
        c = self.counts
        c.wire = str(body.get("wire", c.wire))
        for name in ("published", "dropped", "filtered", "filter_errors"):
            value = body.get(name)
            if isinstance(value, int):
                setattr(c, name, max(getattr(c, name), value))
        c.filter_error = str(body.get("filter_error") or c.filter_error)

    def _finish(self, reason: str) -> None:
        if self.counts.ended is None:
            self.counts.ended = reason
        if not self.finished.is_set():
            self.finished.set()
            self._queue.put_nowait(None)  # wakes `next` (after the records queued before)

    async def _send(self, subject: str, *, flush: bool = False) -> None:
        with contextlib.suppress(*NATS_ERRORS):
            await self.nc.publish(subject, b"{}", reply=self.subject)
            if flush:
                await self.nc.flush(timeout=2)


def _decode(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
