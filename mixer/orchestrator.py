"""Scenario activation: validate, persist, push to every rack, wait for their acks, or roll back.

    async with Orchestrator(hub_url, store, registry, gears, log, settings.orchestrator,
                            announce=enrollment.notify) as orchestrator:
        result = await orchestrator.activate("payment-flow:1.0.0")
        orchestrator.desired            # what the fleet runs (None: nothing activated yet)

Activation (one at a time, in this order):

1. Resolve the reference in the CAS store and pre-flight the stored document with the rack's own
   validator, plus the mixer's check that every spec reference (`spec:` of the scenario and of
   gear configs) resolves in the store. A refusal raises `ScenarioError` with every problem, is
   recorded as `rejected`, and changes nothing: the fleet stays on the last known good scenario.
2. Racks the scenario names (`racks:` and `deploy:`) that are pending or offline are adopted
   (seed: adoption by scenario) and told so.
3. The activation is recorded (`activating`) and pushed on `fluxrig.rack.<name>.scenario` to
   every `active` rack: the whole document; each rack keeps the gears whose `deploy` is its name
   or empty, applies them through its partial reload, waits until they run, and answers on
   `fluxrig.event.applied.<name>` with the digest it applied or the reason it could not.
4. Every rack applied it within `[orchestrator] apply_timeout`: the activation becomes `active`
   (the previous one `superseded`) and is what a restarted mixer resumes. Otherwise it is
   `failed`, the racks that took it are pushed the previous scenario again (or "run nothing"
   when there was none), and `ActivationFailedError` tells which rack said what.

Convergence outside activations: hellos and heartbeats carry the digest the rack runs; a rack
that is `active` but not on the active scenario (it restarted, was resumed, was offline during
the activation, or a push was lost) is pushed it again, at most once per `push_retry` seconds.
A rack that failed to apply the active scenario is not pushed it again until it says hello
anew (a restart may have fixed its cause). Racks that are not `active` are never pushed.

Everything a rack was pushed and answered is kept in `mixer.activations.ActivationLog`
(provenance: which scenario hash runs on which rack, since when, and did the last push apply).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from typing import Literal

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from mixer import hub_client
from mixer.activations import ActivationLog, ActivationRecord
from mixer.enrollment import Sighting
from mixer.errors import ActivationFailedError, MixerError, NotFoundError
from mixer.registry import RackRecord, RackStatus, Registry
from mixer.rollout import (
    NOTHING,
    ActivationResult,
    Desired,
    RackOutcome,
    named_racks,
    said,
    spec_refs,
)
from mixer.settings import OrchestratorSection
from mixer.store import Blob, CasStore
from rack.errors import Problem, ScenarioError
from rack.gear.registry import GearRegistry
from rack.lifecycle import Service
from rack.link.protocol import (
    APPLIED_SUBJECTS,
    MAX_PAYLOAD,
    ProtocolError,
    ScenarioAck,
    ScenarioPush,
    decode,
    encode,
    scenario_subject,
)
from rack.model.scenario import Blueprint
from rack.preflight import preflight_document
from rack.scenario_files import parse_document

__all__ = ["Orchestrator"]

log = logging.getLogger("fluxrig.mixer.orchestrator")

Announce = Callable[[RackRecord], Awaitable[None]]


class Orchestrator(Service):
    """The activation service on the hub (its own NATS connection); `aclose()` is idempotent."""

    def __init__(
        self,
        url: str,
        store: CasStore,
        registry: Registry,
        gears: GearRegistry,
        activations: ActivationLog,
        settings: OrchestratorSection,
        *,
        announce: Announce | None = None,
        on_change: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.url = url
        self.store = store
        self.registry = registry
        self.gears = gears
        self.activations = activations
        self.settings = settings
        self.desired: Desired | None = None
        self.incoming: Desired | None = None  # the scenario an activation is rolling out
        self._announce = announce
        self._on_change = on_change  # the scenarios in play changed (the hub's permissions)
        self._nc: Client | None = None
        self._lock = asyncio.Lock()  # one activation at a time
        self._activating = False
        self._rollout: ScenarioPush | None = None  # the push an activation is waiting on
        self._reported: dict[str, str | None] = {}  # rack → digest it says it runs
        self._sent: dict[str, tuple[int, float]] = {}  # rack → (activation, monotonic time)
        self._failed: dict[str, int] = {}  # rack → activation it could not apply
        self._waiting: dict[tuple[str, int], asyncio.Future[ScenarioAck]] = {}
        self._stack: AsyncExitStack | None = None
        self._tasks: asyncio.TaskGroup | None = None  # owns the activations in progress
        self._running: set[asyncio.Task[ActivationResult | Exception]] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the hub, listen for acks, and load the active scenario to resume."""
        if self._nc is not None:
            raise MixerError("the orchestrator is already started")
        abandoned = await asyncio.to_thread(self.activations.abandon_unfinished)
        if abandoned:
            log.warning("%d activation(s) were interrupted by a mixer stop: failed", abandoned)
        await self._resume()
        self._nc = nc = await hub_client.connect(self.url, "orchestrator")
        try:
            await nc.subscribe(APPLIED_SUBJECTS, cb=self._on_applied)
            await nc.flush()
            self._stack = stack = AsyncExitStack()
            self._tasks = await stack.enter_async_context(asyncio.TaskGroup())
            stack.callback(self._cancel_activations)  # runs before the TaskGroup exits
        except BaseException:
            await self.aclose()
            raise

    def _cancel_activations(self) -> None:
        """The mixer stops: activations in progress end here (recorded `failed` at next start)."""
        for task in self._running:
            task.cancel()

    async def aclose(self) -> None:
        stack, self._stack, self._tasks = self._stack, None, None
        if stack is not None:
            await stack.aclose()
        nc, self._nc = self._nc, None
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        if await hub_client.drain(nc, "orchestrator"):
            log.info("orchestrator closed")

    async def _resume(self) -> None:
        record = await asyncio.to_thread(self.activations.active)
        if record is None:
            return
        try:
            blob = await asyncio.to_thread(self.store.get, "scenario", record.digest)
            document = blob.data.decode("utf-8")
        except (MixerError, UnicodeDecodeError) as exc:
            log.error(
                "cannot resume active scenario %s (activation %d): %s; activate one again",
                record.ref or record.digest, record.id, exc,
            )  # fmt: skip
            return
        try:
            named = named_racks(self._preflight(document, record.ref or record.digest))
        except ScenarioError as exc:  # e.g. a gear type this mixer no longer knows
            log.warning("the active scenario no longer passes pre-flight: %s", exc)
            named = frozenset()
        self.desired = Desired(record.id, record.digest, record.ref, document, named)
        log.info(
            "resumed active scenario '%s' %s (activation %d)",
            record.scenario, record.ref or record.digest, record.id,
        )  # fmt: skip

    # -- activation -----------------------------------------------------------------------------

    async def activate(self, ref: str) -> ActivationResult:
        """Activate the stored scenario `ref` (see the module doc). Raises `NotFoundError`,
        `ScenarioError` (pre-flight) or `ActivationFailedError` (fleet rolled back).

        The activation runs in the orchestrator's own task group: a caller that goes away (a
        gRPC deadline, a client disconnect) does not stop it halfway; stopping the mixer does."""
        if self._tasks is None:
            raise MixerError("the orchestrator is not started")
        task = self._tasks.create_task(self._serialised(ref), name=f"activation of {ref}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        outcome = await asyncio.shield(task)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _serialised(self, ref: str) -> ActivationResult | Exception:
        """One activation at a time; the outcome is returned, never raised (it would take the
        task group down)."""
        async with self._lock:
            self._activating = True
            try:
                return await self._activate(ref)
            except Exception as exc:
                return exc
            finally:
                self._activating = False
                self.incoming = None
                await self._changed()

    async def activate_at_start(self, ref: str) -> ActivationRecord:
        """The startup scenario (`-s`): pre-flight, adopt the racks it names, and make it active
        at once. No rack is connected yet: each one is pushed it when it says hello."""
        async with self._lock:
            blob, stored, document, blueprint = await self._checked(ref)
            await self._adopt_named(blueprint)
            record = await self._begin(stored, blob.digest, blueprint)
            record = await asyncio.to_thread(self.activations.finish, record.id, "active")
            self.desired = Desired(record.id, blob.digest, stored, document, named_racks(blueprint))
            self._sent.clear()
            log.info(
                "startup scenario '%s' %s is active (activation %d); racks get it at hello",
                blueprint.name, stored or blob.digest, record.id,
            )  # fmt: skip
            return record

    async def _changed(self) -> None:
        if self._on_change is not None:
            try:
                await self._on_change()
            except Exception:
                log.exception("the orchestrator's change hook failed")

    async def _begin(self, ref: str | None, digest: str, blueprint: Blueprint) -> ActivationRecord:
        """Record an activation that follows the current one (`activating`)."""
        previous = self.desired.activation if self.desired else None
        return await asyncio.to_thread(
            self.activations.begin, ref, digest, blueprint.name, previous=previous
        )

    async def _checked(self, ref: str) -> tuple[Blob, str | None, str, Blueprint]:
        """The stored scenario `ref` and its pre-flighted blueprint; a refusal is recorded."""
        blob = await asyncio.to_thread(self.store.get, "scenario", ref)
        stored = f"{blob.name}:{blob.tag}" if blob.name is not None else None
        try:
            document = blob.data.decode("utf-8")
            blueprint = await asyncio.to_thread(self._preflight, document, stored or blob.digest)
        except (UnicodeDecodeError, ScenarioError) as exc:
            error = exc if isinstance(exc, ScenarioError) else ScenarioError(f"not UTF-8: {exc}")
            await asyncio.to_thread(
                self.activations.reject, stored, blob.digest, blob.name or "?", str(error)
            )
            log.error("activation of %s rejected; the fleet stays as it is: %s", ref, error)
            raise error from None
        return blob, stored, document, blueprint

    async def _activate(self, ref: str) -> ActivationResult:
        blob, stored, document, blueprint = await self._checked(ref)
        adopted, unknown = await self._adopt_named(blueprint)
        previous = self.desired
        record = await self._begin(stored, blob.digest, blueprint)
        new = Desired(record.id, blob.digest, stored, document, named_racks(blueprint))
        self.incoming = new
        await self._changed()  # the new scenario's cross-rack subjects open before the push
        targets = [r.name for r in await asyncio.to_thread(self.registry.list, RackStatus.ACTIVE)]
        log.info(
            "activating '%s' %s (activation %d) on %d rack(s): %s",
            blueprint.name, stored or blob.digest, record.id, len(targets),
            ", ".join(targets) or "none active yet",
        )  # fmt: skip
        outcomes = await self._roll_out(new, targets)
        failed = [o for o in outcomes if o.state != "applied"]
        if not failed:
            self.desired = new
            record = await asyncio.to_thread(self.activations.finish, record.id, "active")
            log.info("scenario '%s' is active (activation %d)", blueprint.name, record.id)
            return ActivationResult(record, outcomes, adopted, unknown)
        return await self._roll_back(record, previous, outcomes, failed, adopted, unknown)

    async def _roll_back(
        self,
        record: ActivationRecord,
        previous: Desired | None,
        outcomes: tuple[RackOutcome, ...],
        failed: list[RackOutcome],
        adopted: tuple[str, ...],
        unknown: tuple[str, ...],
    ) -> ActivationResult:
        why = "; ".join(f"rack '{o.rack}' {said(o)}" for o in failed)
        record = await asyncio.to_thread(self.activations.finish, record.id, "failed", why)
        # Racks that applied it (or may still) go back; a rack that failed restored its own.
        back = [o.rack for o in outcomes if o.state != "failed"]
        rollback = await self._roll_out(previous, back, rollback=True) if back else ()
        was = f"'{previous.ref or previous.digest}'" if previous else "no scenario"
        log.error("activation %d failed (%s); the fleet is back on %s", record.id, why, was)
        result = ActivationResult(record, outcomes, adopted, unknown, rollback)
        raise ActivationFailedError(
            f"activation of {record.ref or record.digest} failed: {why}; the fleet is back on "
            f"{was}",
            result,
        )

    def _preflight(self, document: str, source: str) -> Blueprint:
        """The rack's pre-flight, plus: every spec reference resolves in the store."""
        blueprint = preflight_document(parse_document(document, source), self.gears)
        problems = list(self._missing_specs(blueprint))
        if problems:
            raise ScenarioError(f"scenario '{blueprint.name}' references missing specs", problems)
        return blueprint

    def _missing_specs(self, blueprint: Blueprint) -> Iterable[Problem]:
        refs = spec_refs(blueprint)
        for path, ref in refs:
            try:
                self.store.resolve("spec", ref)
            except NotFoundError:
                yield Problem(path, f"spec {ref!r} is not in the store; import it first")
            except MixerError as exc:
                yield Problem(path, f"spec reference {ref!r}: {exc}")

    async def _adopt_named(self, blueprint: Blueprint) -> tuple[tuple[str, ...], tuple[str, ...]]:
        names = sorted(named_racks(blueprint))
        if not names:
            return (), ()
        adoption = await asyncio.to_thread(self.registry.adopt_named, names)
        for rec in adoption.adopted:
            log.info("rack %r adopted: the scenario names it", rec.name)
            if self._announce is not None:
                await self._announce(rec)
        if adoption.unknown:
            log.warning(
                "the scenario names rack(s) that never enrolled: %s (they are adopted when "
                "they say hello)",
                ", ".join(adoption.unknown),
            )
        return tuple(r.name for r in adoption.adopted), adoption.unknown

    async def _roll_out(
        self, desired: Desired | None, racks: list[str], *, rollback: bool = False
    ) -> tuple[RackOutcome, ...]:
        """Push `desired` to `racks` and wait (bounded) for every ack."""
        if not racks:
            return ()
        if desired is not None:
            push = desired.push(rollback=rollback)
        else:
            push = ScenarioPush(activation=NOTHING, rollback=rollback)
        self._rollout = push
        try:
            futures = {rack: await self._push(rack, push) for rack in racks}
            await asyncio.wait(futures.values(), timeout=self.settings.apply_timeout)
        finally:
            self._rollout = None
        outcomes = []
        for rack, future in futures.items():
            self._waiting.pop((rack, push.activation), None)
            if not future.done():
                future.cancel()
                outcomes.append(
                    RackOutcome(rack, "timeout", f"no answer in {self.settings.apply_timeout:g}s")
                )
                continue
            ack = future.result()
            state: Literal["applied", "failed"] = "applied" if ack.ok else "failed"
            outcomes.append(RackOutcome(rack, state, ack.error, ack.report))
        return tuple(outcomes)

    # -- pushes and acks ------------------------------------------------------------------------

    async def _push(self, rack: str, push: ScenarioPush) -> asyncio.Future[ScenarioAck]:
        """Publish `push` to `rack`; the future gets the rack's ack."""
        future: asyncio.Future[ScenarioAck] = asyncio.get_running_loop().create_future()
        self._waiting[(rack, push.activation)] = future
        self._sent[rack] = (push.activation, time.monotonic())
        await asyncio.to_thread(self.activations.pushed, rack, push.activation, push.digest)
        await self._publish(rack, push)
        return future

    async def _publish(self, rack: str, push: ScenarioPush) -> None:
        nc = self._nc
        if nc is None or nc.is_closed:
            log.warning("the orchestrator is closed: rack %r was not pushed", rack)
            return
        try:
            await nc.publish(scenario_subject(rack), encode(push))
        except NatsError as exc:
            log.warning("cannot push the scenario to rack %r: %s", rack, exc)
            return
        log.debug("pushed activation %d (%s) to rack %r", push.activation, push.digest, rack)

    async def _on_applied(self, msg: Msg) -> None:
        rack = msg.subject.rsplit(".", 1)[-1]
        try:
            ack = decode(ScenarioAck, msg.data, f"scenario ack of rack {rack!r}", limit=MAX_PAYLOAD)
        except ProtocolError as exc:
            log.warning("ignored: %s", exc)
            return
        if ack.name != rack:
            log.warning("ignored a scenario ack on %s naming rack %r", msg.subject, ack.name)
            return
        self._reported[rack] = ack.running
        if ack.ok:
            self._failed.pop(rack, None)
            log.info("rack %r applied activation %d (%s)", rack, ack.activation, ack.report)
        else:
            self._failed[rack] = ack.activation
            log.error("rack %r could not apply activation %d: %s", rack, ack.activation, ack.error)
        try:
            await asyncio.to_thread(
                self.activations.acked, rack, ack.activation, ack.digest,
                ok=ack.ok, error=ack.error, report=ack.report,
            )  # fmt: skip
        except MixerError as exc:
            log.warning("the ack of rack %r was not recorded: %s", rack, exc)
        future = self._waiting.get((rack, ack.activation))
        if future is not None and not future.done():
            future.set_result(ack)

    # -- convergence ----------------------------------------------------------------------------

    async def rack_seen(self, record: RackRecord, sighting: Sighting) -> None:
        """A hello or heartbeat of `record` saying what it runs: push it what it misses."""
        hello = sighting.hello
        self._reported[record.name] = sighting.scenario
        desired = self.desired
        if record.status is RackStatus.PENDING and desired and record.name in desired.racks:
            record = await asyncio.to_thread(self.registry.adopt, record.name)
            log.info("rack %r adopted at hello: the active scenario names it", record.name)
            if self._announce is not None:
                await self._announce(record)
        if hello:
            self._failed.pop(record.name, None)  # a restarted rack gets another chance
            self._sent.pop(record.name, None)
            rollout = self._rollout
            if rollout is not None and (record.name, rollout.activation) in self._waiting:
                # It (re)connected during an activation: it may have missed the push.
                await self._publish(record.name, rollout)
                return
        await self.reconcile(record)

    async def reconcile(self, record: RackRecord) -> None:
        """Push the active scenario to `record` if it is active and runs something else."""
        desired, name = self.desired, record.name
        if desired is None or record.status is not RackStatus.ACTIVE or self._activating:
            return
        if name in self._reported and self._reported[name] == desired.digest:
            return
        if self._failed.get(name) == desired.activation:
            return
        sent = self._sent.get(name)
        recent = sent is not None and time.monotonic() - sent[1] < self.settings.push_retry
        if recent and sent is not None and sent[0] == desired.activation:
            return
        log.info(
            "rack %r is not on the active scenario (it runs %s): pushing activation %d",
            name, self._reported.get(name) or "nothing", desired.activation,
        )  # fmt: skip
        await self._push(name, desired.push())

    async def history(self, limit: int = 50) -> list[ActivationRecord]:
        return await asyncio.to_thread(self.activations.history, limit)
