"""`TapService`: a rack's live taps, served on the rack's NATS (`rack.tap.protocol`).

    taps = TapService("edge-1", max_taps=8, queue_depth=256)
    taps.rewire(routers, blueprint)          # after every apply: taps follow the wiring
    taps.launch(task_group, nats_url)        # once the rack has NATS (idempotent)
    ...
    await taps.aclose()                      # every tap ends ("rack stopping"); idempotent

Which NATS: the one the rack already has — the Snake's nats-server for a managed rack (its
`nats_url`), `--nats-url`, or the embedded server its standard wires started. A standalone rack
with only memory wires has none, and starts none for taps: `fluxrig tail` says so.

One task per tap (in the service's TaskGroup) empties the tap's queue: filter, JSON, publish,
paced to the tap's `rate`. A tap ends when its viewer stops it, when its lease runs out without a
renew (a viewer that died leaves nothing running), when it reached its `limit`, when its wire is
removed by a reload, or when the rack stops; its last message is the end record. A failure of the
service is logged and never reaches the rack's gears.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from rack.link.protocol import inbox_prefix
from rack.model.scenario import Blueprint
from rack.tap.protocol import (
    TapError,
    control_subjects,
    data_subject,
    decode_request,
    encode,
    shown_url,
)
from rack.tap.record import Sample, record
from rack.tap.tap import Tap, TapRegistry

if TYPE_CHECKING:
    from rack.runtime.router import Router

__all__ = ["TapService"]

log = logging.getLogger("fluxrig.tap")

NATS_ERRORS = (nats.errors.Error, OSError, TimeoutError)
BATCH = 32  # messages handled between two yields to the gears
BURST = 0.1  # seconds of `rate` that may go out at once
CLOSE_TIMEOUT = 5.0


class TapService:
    """Serves `flux.ctrl.<rack>.tap…` on the rack's NATS. `aclose()` is idempotent."""

    def __init__(self, rack: str, *, max_taps: int, queue_depth: int) -> None:
        self.rack = rack
        self.registry = TapRegistry(rack, max_taps=max_taps, queue_depth=queue_depth)
        self.url: str | None = None
        self.ready = asyncio.Event()  # subscribed: taps can be opened
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._nc: Client | None = None
        self._tg: asyncio.TaskGroup | None = None

    @property
    def taps(self) -> Mapping[str, Tap]:
        return self.registry.taps

    def rewire(self, routers: Mapping[str, Router], blueprint: Blueprint) -> None:
        self.registry.rewire(routers, blueprint)

    def launch(self, tg: asyncio.TaskGroup, url: str) -> None:
        """Serve taps on the NATS at `url` (from a task in `tg`); does nothing the second time."""
        if self._task is None and not self._closing.is_set():
            self.url = url
            self._task = tg.create_task(self._run(url), name="taps")

    async def aclose(self) -> None:
        self._closing.set()
        task = self._task
        if task is None or task.done():
            return
        await asyncio.wait([task], timeout=CLOSE_TIMEOUT)
        if not task.done():
            task.cancel()
            await asyncio.wait([task])

    # -- connection --------------------------------------------------------------------------

    async def _run(self, url: str) -> None:
        try:
            nc = await self._connect(url)
            if nc is None:
                return
            self._nc = nc
            try:
                await self._serve(nc)
                await nc.flush(timeout=2)  # the end records
            finally:
                self._nc = None
                await nc.close()
        except Exception as exc:  # never the rack's problem: its gears run on
            log.error("live taps of rack '%s' stopped: %s", self.rack, _describe(exc))

    async def _connect(self, url: str) -> Client | None:
        delay, told = 0.5, False
        while not self._closing.is_set():
            nc = Client()
            try:
                async with asyncio.timeout(5):
                    await nc.connect(
                        url,
                        name=f"fluxrig-tap {self.rack}",
                        inbox_prefix=inbox_prefix(self.rack),
                        connect_timeout=2,
                        reconnect_time_wait=1,
                        max_reconnect_attempts=-1,
                        error_cb=_quiet,
                    )
                return nc
            except NATS_ERRORS as exc:
                await nc.close()
                if not told:
                    log.warning("live taps wait for NATS at %s: %s", shown_url(url), _describe(exc))
                    told = True
            try:
                async with asyncio.timeout(delay):
                    await self._closing.wait()
            except TimeoutError:
                delay = min(delay * 2, 10.0)
        return None

    async def _serve(self, nc: Client) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                opening, control = control_subjects(self.rack)
                await nc.subscribe(opening, cb=self._on_open)
                await nc.subscribe(control, cb=self._on_control)
                await _settled(nc)
                self.ready.set()
                log.info(
                    "live taps of rack '%s' on %s (%s)", self.rack, shown_url(nc_url(nc)), opening
                )
                await self._closing.wait()
            finally:
                self._tg = None
                self.ready.clear()
                for tap in list(self.registry.taps.values()):
                    tap.end("rack stopping")

    # -- control -----------------------------------------------------------------------------

    async def _on_open(self, msg: Msg) -> None:
        try:
            await self._open(msg)
        except Exception as exc:  # a bug: say it, answer, keep serving
            log.exception("tap request on %s failed", msg.subject)
            await self._reply(msg, TapError("internal", _describe(exc)).body())

    async def _open(self, msg: Msg) -> None:
        tg = self._tg
        try:
            if tg is None:
                raise TapError("not_found", f"rack '{self.rack}' is stopping")
            request = decode_request(msg.data)
            tap = self.registry.open(request, lambda tap_id: data_subject(self.rack, tap_id))
        except TapError as exc:
            await self._reply(msg, exc.body())
            return
        log.info("tap %s opened on %s (filter %s)", tap.id, tap.label, request.filter or "none")
        await self._reply(msg, tap.state())  # before any record: it may share their subject
        if self._tg is tg:
            tg.create_task(self._pump(tap), name=f"tap:{tap.id}")
        else:  # the rack began stopping meanwhile
            self.registry.remove(tap)

    async def _on_control(self, msg: Msg) -> None:
        _, tap_id, verb = msg.subject.rsplit(".", 2)
        try:
            tap = self.registry.get(tap_id)
            if verb == "renew":
                tap.renew()
            elif verb == "stop":
                tap.end("stopped")
                self.registry.remove(tap)  # no more offers from now on
            else:
                raise TapError("bad_request", f"unknown tap verb '{verb}': renew or stop")
            body = tap.state()
        except TapError as exc:
            body = exc.body()
        await self._reply(msg, body)

    async def _reply(self, msg: Msg, body: dict[str, Any]) -> None:
        if msg.reply and self._nc is not None:
            try:
                await self._nc.publish(msg.reply, encode(body))
            except NATS_ERRORS as exc:
                log.debug("tap reply to %s lost: %s", msg.reply, exc)

    # -- one tap -----------------------------------------------------------------------------

    async def _pump(self, tap: Tap) -> None:
        try:
            reason = await self._forward(tap)
        except Exception as exc:
            log.warning("tap %s on %s failed: %s", tap.id, tap.label, _describe(exc))
            reason = f"failed: {_describe(exc)}"
        tap.end(reason)
        self.registry.remove(tap)
        end = {**tap.state(), "type": "end", "reason": tap.ended}
        log.info("tap %s on %s ended: %s", tap.id, tap.label, tap.ended)
        if self._nc is not None:
            try:
                await self._nc.publish(tap.subject, encode(end))
            except NATS_ERRORS as exc:
                log.debug("end record of tap %s lost: %s", tap.id, exc)

    async def _forward(self, tap: Tap) -> str:
        """Publish what the tap queued until it ends; returns why it ended."""
        assert self._nc is not None
        nc, queue, step = self._nc, tap.queue, 0
        interval = 1.0 / tap.rate
        slot = time.monotonic()  # virtual time of the next publish (rate cap, BURST allowed)
        while True:
            now = time.monotonic()
            if tap.ended is not None:
                return tap.ended
            if now >= tap.deadline:
                return "lease expired"
            if not queue:
                tap.wake.clear()
                try:
                    async with asyncio.timeout(tap.deadline - now):
                        await tap.wake.wait()
                except TimeoutError:
                    pass
                continue
            sample = queue.popleft()
            step += 1
            if step % BATCH == 0:
                await asyncio.sleep(0)  # the gears run between batches
            if tap.filter is not None and not _passes(tap, sample):
                continue
            slot = max(slot, now - BURST) + interval
            if slot > now:
                await asyncio.sleep(slot - now)  # pacing to `rate`; the queue drops meanwhile
            await nc.publish(tap.subject, record(tap, sample))
            tap.published += 1
            if tap.limit is not None and tap.published >= tap.limit:
                return "limit reached"


def _passes(tap: Tap, sample: Sample) -> bool:
    assert tap.filter is not None
    try:
        if tap.filter.matches(tap, sample):
            return True
        tap.filtered += 1
    except ValueError as exc:  # counted apart: a viewer is told why its filter shows nothing
        tap.filter_errors += 1
        tap.filter_error = str(exc)
    return False


async def _settled(nc: Client) -> None:
    """Return once the server holds our subscriptions (what `ready` promises to others).

    nats-py 2.16's `flush()` writes its PING ahead of commands still queued for its flusher
    task, so the PONG of one flush may come back before the server processed a SUB just made
    (measured: 5-10 % of the time on a loaded machine). By the second flush the queue has been
    written, and its PING follows the SUBs on the wire."""
    await nc.flush(timeout=5)
    await nc.flush(timeout=5)


def nc_url(nc: Client) -> str:
    url = nc.connected_url
    return url.geturl() if url is not None else "NATS"


async def _quiet(exc: Exception) -> None:
    log.debug("taps: NATS connection error: %s", exc)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _describe(exc.exceptions[0])
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
