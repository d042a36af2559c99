"""A gear's place in a running rack: its inbox, its router, and the supervisor that runs it.

The slot outlives gear instances: when a gear crashes it is restarted with exponential back-off,
and when a reload changes its definition a new instance takes over the same inbox, so nothing
queued for it is lost. One supervisor task per slot runs in the rack's TaskGroup; everything the
gear spawns runs in a TaskGroup of its own (one per gear instance).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from rack.errors import MessageLimitError
from rack.gear.base import ERROR_PORT, Gear, normalize_output
from rack.gear.context import GearContext, GearStats
from rack.model.fluxmsg import FluxMsg
from rack.model.ids import FluxIdGenerator
from rack.model.scenario import GearPlan
from rack.runtime.router import Router
from rack.wires.memory import Ack, Inbox

if TYPE_CHECKING:
    from rack.telemetry.tracing import GearProbe

MAX_REASON = 500
DEFER_MAX = 256  # durable acks held back until the outputs they depend on are stored
TIME_EVERY = 8  # under load, one message in TIME_EVERY is timed (see `_consume`)


class Backoff:
    """Exponential back-off: initial, ×2 per failure, capped; `reset()` after a healthy run."""

    __slots__ = ("current", "initial", "maximum")

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.current = initial

    def next(self) -> float:
        delay = self.current
        self.current = min(self.current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.current = self.initial


class GearSlot:
    """Runs one gear (and its successors after restarts or reloads) for a rack."""

    def __init__(
        self,
        plan: GearPlan,
        inbox: Inbox,
        *,
        rack: str,
        ids: FluxIdGenerator,
        backoff: Backoff,
        probe: GearProbe | None = None,
    ) -> None:
        self.plan = plan
        self.inbox = inbox
        self.rack = rack
        self.ids = ids
        self.backoff = backoff
        self.stats = GearStats()
        self.router = Router(plan.name, {}, self.stats)
        self.log = logging.getLogger(f"fluxrig.gear.{plan.name}")
        self.probe = probe  # telemetry (rack.telemetry.tracing), None when it is off
        self.ready = asyncio.Event()
        self.gear: Gear[Any] | None = None
        self.last_error: str = ""
        self._stop = asyncio.Event()
        self._quit = asyncio.Event()  # per gear instance: tells the consumer to exit
        self._draining = False
        self._busy = False
        self._consumer: asyncio.Task[None] | None = None
        self._deferred: list[Ack] = []
        self.task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.plan.name

    def launch(self, tg: asyncio.TaskGroup) -> None:
        """Start the supervisor in the rack's TaskGroup."""
        self._stop = asyncio.Event()
        self._draining = False
        self.task = tg.create_task(self._supervise(), name=f"gear:{self.name}")

    # -- supervision ---------------------------------------------------------------------------

    async def _supervise(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                await self._run_once()
                return
            except Exception as exc:
                if self._stop.is_set():
                    return
                self.last_error = _describe(exc)
                self.stats.add("restarts")
                if time.monotonic() - started > self.backoff.maximum:
                    self.backoff.reset()
                delay = self.backoff.next()
                self.log.error(
                    "gear '%s' (%s) failed: %s; restarting in %.2fs",
                    self.name, self.plan.type_name, self.last_error, delay,
                    exc_info=self.log.isEnabledFor(logging.DEBUG),
                )  # fmt: skip
                try:
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
                except TimeoutError:
                    pass

    async def _run_once(self) -> None:
        gear = self.plan.gear_cls()
        self.gear = gear
        self._quit = asyncio.Event()
        probe = self.probe
        async with asyncio.TaskGroup() as tg:
            ctx: GearContext[Any] = GearContext(
                name=self.name,
                config=self.plan.config,
                ids=self.ids,
                task_group=tg,
                rack=self.rack,
                log=self.log,
                stats=self.stats,
                tracer=probe.tracer if probe is not None else None,
                meter=probe.meter if probe is not None else None,
            )
            try:
                await gear.init(ctx)
                await gear.start(self.router if probe is None else probe.emitter(self.router))
                if self._draining:
                    await gear.drain()
                self._consumer = tg.create_task(self._consume(gear), name=f"{self.name}:consume")
                if probe is not None:
                    probe.consumer = self._consumer
                self.ready.set()
                self.log.debug("gear '%s' started", self.name)
                await self._stop.wait()
            finally:
                self.ready.clear()
                await self._shutdown(gear, ctx)

    async def _shutdown(self, gear: Gear[Any], ctx: GearContext[Any]) -> None:
        consumer, self._consumer = self._consumer, None
        self._quit.set()
        if consumer is not None and not consumer.done():
            if self._busy:  # let the message in hand finish (bounded by the caller's grace)
                await asyncio.wait([consumer])
            consumer.cancel()
        try:
            await gear.stop()
        except Exception as exc:
            self.log.error("gear '%s' failed to stop cleanly: %s", self.name, _describe(exc))
        ctx.cancel_spawned()

    # -- the per-message loop ------------------------------------------------------------------

    async def _consume(self, gear: Gear[Any]) -> None:
        inbox, router, stats, quit_ = self.inbox, self.router, self.stats, self._quit
        process, probe, clock = gear.process, self.probe, time.perf_counter
        record = probe.durations.record if probe is not None else _no_record
        # With telemetry, the process-duration histogram: while messages keep waiting in the
        # inbox, only one in TIME_EVERY is timed, and stands for itself and the untimed ones
        # after it (`weight`); once the inbox runs dry the next one is timed again. So a gear
        # with idle time has every message timed, a saturated one pays the clock 1/TIME_EVERY
        # of the time (two clock reads and a bucket are ~0.3–0.5 µs: on a gear doing ~1 µs of
        # work, that alone was 10% of a busy rack's CPU), and the count stays exact.
        skip = 0  # messages still to take untimed
        pending, weight = 0.0, 0  # the last timed duration and the messages it stands for
        started = 0.0
        try:
            while not quit_.is_set():
                # Under load the inbox is rarely empty: take without a coroutine per message.
                item = inbox.get_nowait()
                if item is None:
                    if weight:
                        record(pending, weight)
                        weight = 0
                    skip = 0
                    item = await inbox.get()
                port, msg, ack = item
                self._busy = True
                stats.msgs_in += 1
                processed = False
                child = ""  # with telemetry: the trace context this hop's outputs carry
                try:
                    if probe is None:
                        result = await process(msg, port)
                    else:  # a span only for traced messages, a duration for timed ones
                        parent = msg.trace
                        child = probe.begin(msg, port) if parent else ""
                        if skip:
                            skip -= 1
                            started = 0.0
                            result = await process(msg, port)
                            weight += 1
                        else:
                            if weight:
                                record(pending, weight)
                                weight = 0
                            started = clock()
                            result = await process(msg, port)
                            pending, weight, skip = clock() - started, 1, TIME_EVERY - 1
                        if child:
                            probe.end()
                    processed = True
                    if result is not None:
                        for out_port, out in normalize_output(result):
                            if child and (not out.trace or out.trace == parent):
                                out.trace = child
                            if not router(out, out_port):
                                await router.ready()
                    if ack is not None:
                        if router.durable:  # ack once the outputs are stored (deferred, batched)
                            self._deferred.append(ack)
                            if len(self._deferred) >= DEFER_MAX or not len(inbox):
                                await self._settle_deferred()
                        else:
                            await ack.ok()
                except asyncio.CancelledError:
                    if probe is not None and child and not processed:
                        probe.end()
                    # Cancelled mid-message (gear crash or forced stop): give it back to the inbox
                    # so the next instance processes it (at-least-once rather than lost).
                    if processed:
                        inbox.done()
                    else:
                        inbox.requeue(port, msg, ack)
                    self._busy = False
                    raise
                except Exception as exc:
                    if probe is not None and not processed:
                        if started:
                            record(clock() - started, 1)
                        else:  # untimed: the last timed duration stands for it
                            weight += 1
                        if child:
                            probe.end(exc)
                            msg.trace = child  # on the error port: a child of the failed hop
                    if ack is not None and not processed:
                        await self._failed_durable(msg, port, exc, ack)
                    else:
                        self._failed(msg, port, exc)
                self._busy = False
                inbox.done()
        finally:  # the last timed duration, also when cancelled
            if weight:
                record(pending, weight)
        if self._deferred:
            await self._settle_deferred()

    async def _settle_deferred(self) -> None:
        """Ack the durable deliveries whose outputs are now stored on their standard wires."""
        acks, self._deferred = self._deferred, []
        try:
            await self.router.flush()
        except Exception as exc:  # not stored: let JetStream redeliver the inputs
            self.log.warning("outputs of %d messages not stored (%s)", len(acks), _describe(exc))
            for ack in acks:
                await ack.release()
            return
        for ack in acks:
            await ack.ok()

    async def _failed_durable(self, msg: FluxMsg, port: str, exc: Exception, ack: Ack) -> None:
        """A message from a standard wire failed: nak it (redelivered later, then dead-lettered)."""
        self.stats.errors += 1
        reason = _describe(exc)[:MAX_REASON]
        n = self.stats.errors
        if n <= 10 or n & (n - 1) == 0:
            self.log.warning(
                "gear '%s' failed on message %d from port '%s': %s (will be redelivered or "
                "dead-lettered)", self.name, msg.id, port, reason,
            )  # fmt: skip
        try:
            await ack.fail(reason)
        except Exception as nak_error:  # the wire redelivers after ack_wait anyway
            self.log.warning("could not nak message %d: %s", msg.id, _describe(nak_error))

    def _failed(self, msg: FluxMsg, port: str, exc: Exception) -> None:
        stats = self.stats
        stats.errors += 1
        reason = _describe(exc)
        if isinstance(exc, MessageLimitError) or not self.router.is_wired(ERROR_PORT):
            n = stats.errors
            if n <= 10 or n & (n - 1) == 0:  # log the first ten, then at powers of two
                self.log.warning(
                    "gear '%s' failed on message %d from port '%s': %s (%d errors so far)",
                    self.name, msg.id, port, reason, n,
                )  # fmt: skip
            return
        msg.meta["error.reason"] = reason[:MAX_REASON]
        msg.meta["error.gear"] = self.name
        msg.meta["error.port"] = port
        try:
            self.router(msg, ERROR_PORT)
        except MessageLimitError as limit:
            self.log.warning("gear '%s' dropped message %d: %s", self.name, msg.id, limit)

    # -- control -------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Ask the gear to stop accepting new input (its inbox is still processed)."""
        self._draining = True
        gear = self.gear
        if gear is not None and self.ready.is_set():
            try:
                await gear.drain()
            except Exception as exc:
                self.log.error("gear '%s' failed to drain: %s", self.name, _describe(exc))

    async def stop(self) -> None:
        """Stop the gear and its supervisor; queued messages stay in the inbox. Idempotent."""
        self._stop.set()
        if self.task is not None:
            await asyncio.wait([self.task])


def _no_record(seconds: float, count: int) -> None:
    """The duration histogram of a gear when telemetry is off."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _describe(exc.exceptions[0])
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
