"""The rack: runs a blueprint's gears in one TaskGroup, applies new blueprints, drains on stop.

    async with Rack(settings, name="edge-1") as rack:
        report = await rack.apply(blueprint)      # start, or partially reload
        await rack.wait_ready(timeout=10)
        ...
        await rack.drain()                        # stop accepting, finish in-flight (grace)
    # leaving the block stops every gear and closes everything

Partial reload: a gear whose definition (type + config) is unchanged keeps running with its
sockets open; a changed gear is restarted on the same inbox (queued messages are kept); a
removed gear is drained then stopped; wiring changes are applied by swapping routing tables,
without restarting anybody.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rack.errors import RackError, SettingsError
from rack.model.ids import FluxIdGenerator
from rack.model.scenario import Blueprint
from rack.runtime.slot import Backoff, GearSlot
from rack.runtime.standard import StandardWires
from rack.settings import RackSettings
from rack.tap.service import TapService
from rack.telemetry.config import TelemetryConfig
from rack.wires.base import Outlet
from rack.wires.memory import Inbox, InflightCounter, MemoryOutlet

if TYPE_CHECKING:
    from rack.telemetry.providers import Telemetry

log = logging.getLogger("fluxrig.rack")
_heap = {"settled": False}


def _settle_heap() -> None:
    """Once per process, at the first scenario with gears: move what is alive then (modules,
    settings, gear registry, the telemetry SDK when on) out of the cyclic collector's way.

    Under load, messages waiting in inboxes outlive the young generations, so full collections
    come every ~20k messages, and each walks every long-lived object: ~40 ms with the rack's
    ~75k (~1.9 µs per message at 150k messages/s on the 2-CPU test VM), ~50 ms with the
    telemetry SDK's ~14k more. Frozen objects are still freed by reference counting; only a
    cycle among them would never be collected, and there are few of those, created once."""
    if not _heap["settled"]:
        _heap["settled"] = True
        gc.collect()
        gc.freeze()


@dataclass(slots=True)
class ApplyReport:
    """What `Rack.apply` changed."""

    started: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [
            f"{label}: {', '.join(names)}"
            for label, names in (
                ("started", self.started),
                ("restarted", self.restarted),
                ("stopped", self.stopped),
                ("unchanged", self.unchanged),
            )
            if names
        ]
        return "; ".join(parts) or "nothing to run"


class Rack:
    """One rack runtime. Use as an async context manager; `aclose()` is idempotent."""

    def __init__(self, settings: RackSettings | None = None, *, name: str | None = None) -> None:
        self.settings = settings or RackSettings()
        self.name = name or self.settings.name
        self.ids = FluxIdGenerator(self.settings.machine_id)
        self.inflight = InflightCounter()
        self.slots: dict[str, GearSlot] = {}
        self.blueprint: Blueprint | None = None
        self.standard = StandardWires(self.settings, self.name)
        # Resolved now, so a bad OTEL_* value stops the rack before it runs anything; started
        # with the first scenario that has gears (a pending rack exports nothing).
        self.telemetry_config = TelemetryConfig.resolve(self.settings)
        self.telemetry: Telemetry | None = None
        self.taps = TapService(  # live taps (`fluxrig tail`), on whatever NATS the rack has
            self.name, max_taps=self.settings.max_taps, queue_depth=self.settings.tap_queue_depth
        )
        self._tg: asyncio.TaskGroup | None = None
        self._stack = contextlib.AsyncExitStack()
        self._apply_lock = asyncio.Lock()
        self._closed = False

    async def __aenter__(self) -> Rack:
        self._tg = await self._stack.enter_async_context(asyncio.TaskGroup())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop_all()
        self._closed = True
        # The body's own exception propagates as is (handing it to the TaskGroup would wrap it
        # in an ExceptionGroup); the supervisors are all finished by now.
        await self._stack.aclose()

    async def aclose(self) -> None:
        if not self._closed:
            await self.__aexit__(None, None, None)

    def use_machine_id(self, machine_id: int) -> None:
        """Mint fluxIDs with `machine_id` (the one the mixer's registry allocated) from now on.

        Only while no gear runs: running gears hold the generator they started with."""
        if machine_id == self.ids.machine_id:
            return
        if self.slots:
            raise RackError("the machine id cannot change while gears run")
        self.ids = FluxIdGenerator(machine_id)
        log.info("rack '%s' uses machine id %d for its fluxIDs", self.name, machine_id)

    # -- apply -------------------------------------------------------------------------------

    async def apply(self, blueprint: Blueprint) -> ApplyReport:
        """Run `blueprint`, changing only what differs from the running one."""
        if self._tg is None or self._closed:
            raise RackError("the rack is not running (use it as `async with Rack(...)`)")
        async with self._apply_lock:
            if self._uses_jetstream(blueprint):
                # Connect and provision first: a failure here leaves the running scenario as is.
                await self.standard.ensure(blueprint)
            self._observe(blueprint)
            if blueprint.gears:
                _settle_heap()
            report = await self._apply(blueprint)
            self._launch_taps()
        self.blueprint = blueprint
        log.info("scenario '%s' applied (%s)", blueprint.name, report)
        return report

    def _observe(self, bp: Blueprint) -> None:
        """Start telemetry with the first scenario that has gears; tell it the scenario."""
        if self.telemetry is None:
            if not (self.telemetry_config.enabled and bp.gears):
                return
            from rack.telemetry.providers import Telemetry  # loads the SDK: only when used

            try:
                self.telemetry = Telemetry(self.telemetry_config, self)
            except Exception as exc:  # e.g. OTEL_EXPORTER_OTLP_HEADERS or a certificate
                raise SettingsError(
                    f"telemetry cannot start: {exc} (check the OTEL_* variables, or set "
                    "telemetry = false)"
                ) from exc
            log.info(
                "rack '%s' exports telemetry (%s): %s",
                self.name, self.telemetry_config.reason, self.telemetry_config.describe(),
            )  # fmt: skip
        self.telemetry.use_scenario(bp.name, bp.digest)

    def _uses_jetstream(self, bp: Blueprint) -> bool:
        """Standard or cross-rack wires to provision; or the scenario's last ones to take down
        (the streams are updated before their consumers go: see `JetStreamLink.ensure_streams`)."""
        if bp.outbound or bp.inbound or any(w.transport == "standard" for w in bp.wires):
            return True
        return self.standard.link is not None and self.standard.scenario == bp.name

    def _launch_taps(self) -> None:
        """Serve live taps once the rack has NATS: `nats_url` (the Snake's server for a managed
        rack) or the embedded server of its standard wires. Memory wires only: no NATS, no taps."""
        server = self.standard.server
        url = self.settings.nats_url or (server.url if server is not None else None)
        if url is not None and self._tg is not None:
            self.taps.launch(self._tg, url)

    async def _apply(self, bp: Blueprint) -> ApplyReport:
        assert self._tg is not None
        report = ApplyReport()
        old = self.slots
        new: dict[str, GearSlot] = {}
        to_start: list[GearSlot] = []
        to_restart: list[tuple[GearSlot, Any]] = []
        for name, plan in bp.gears.items():
            slot = old.get(name)
            if slot is None:
                slot = self._new_slot(plan)
                to_start.append(slot)
                report.started.append(name)
            elif (
                slot.plan.fingerprint != plan.fingerprint or slot.plan.gear_cls is not plan.gear_cls
            ):
                to_restart.append((slot, plan))
                report.restarted.append(name)
            else:
                slot.plan = plan
                report.unchanged.append(name)
            new[name] = slot
        removed = [slot for name, slot in old.items() if name not in new]
        report.stopped.extend(s.name for s in removed)

        self._rewire(new, bp)  # nobody routes to removed gears from here on
        if self.standard.link is not None:
            consumed = [w for w in bp.wires if w.transport == "standard"]
            await self.standard.sync_inlets(
                consumed,
                {n: s.inbox for n, s in new.items()},
                outbound=bp.outbound,
                inbound=bp.inbound,
            )
        self.slots = new
        for slot in removed:
            await self._retire(slot)
        for slot, plan in to_restart:
            await self._stop_slot(slot)
            slot.plan = plan
            slot.launch(self._tg)
        for slot in to_start:
            slot.launch(self._tg)
        return report

    def _new_slot(self, plan: Any) -> GearSlot:
        inbox = Inbox(plan.name, self.settings.queue_depth, self.inflight)
        backoff = Backoff(self.settings.restart_backoff_initial, self.settings.restart_backoff_max)
        telemetry = self.telemetry
        probe = telemetry.probe(plan.name, plan.type_name) if telemetry is not None else None
        return GearSlot(plan, inbox, rack=self.name, ids=self.ids, backoff=backoff, probe=probe)

    def _rewire(self, slots: dict[str, GearSlot], bp: Blueprint) -> None:
        routes: dict[str, dict[str, list[Outlet]]] = {name: {} for name in slots}
        for wire in (*bp.wires, *(cross.wire for cross in bp.outbound)):
            port_outlets = routes[wire.source.gear].setdefault(wire.source.port, [])
            if wire.transport == "memory":
                port_outlets.append(MemoryOutlet(slots[wire.target.gear].inbox, wire.target.port))
                continue
            outlet = self.standard.outlet(wire.source)  # one publish serves every consumer
            if outlet not in port_outlets:
                port_outlets.append(outlet)
        for name, slot in slots.items():
            slot.router.rewire({port: tuple(o) for port, o in routes[name].items()})
        self.taps.rewire({name: slot.router for name, slot in slots.items()}, bp)

    async def _retire(self, slot: GearSlot) -> None:
        """Drain a removed gear: stop its input, let its inbox empty (bounded), stop it."""
        await slot.drain()
        try:
            async with asyncio.timeout(self.settings.grace_period):
                while len(slot.inbox):
                    await slot.inbox.wait_empty()
        except TimeoutError:
            log.warning(
                "gear '%s' removed with %d messages still queued", slot.name, len(slot.inbox)
            )
        await self._stop_slot(slot)

    async def _stop_slot(self, slot: GearSlot) -> None:
        try:
            async with asyncio.timeout(self.settings.grace_period):
                await slot.stop()
        except TimeoutError:
            log.warning("gear '%s' did not stop within the grace period; cancelling", slot.name)
            if slot.task is not None:
                slot.task.cancel()
                await asyncio.wait([slot.task])

    # -- readiness, drain, stop ------------------------------------------------------------------

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until every gear has started (listeners bound, dialers launched)."""
        async with asyncio.timeout(timeout):
            for slot in list(self.slots.values()):
                await slot.ready.wait()

    def is_ready(self) -> bool:
        return all(slot.ready.is_set() for slot in self.slots.values())

    async def drain(self, grace: float | None = None) -> bool:
        """Stop accepting new input, then wait (bounded) until every accepted message is processed.

        Returns True when the rack went quiescent within the grace period.
        """
        grace = self.settings.grace_period if grace is None else grace
        for slot in self.slots.values():
            await slot.drain()
        try:
            async with asyncio.timeout(grace):
                await self.standard.drain()  # no new deliveries; what was emitted is published
                await self.inflight.wait_zero()
                await self.standard.flush()
        except TimeoutError:
            log.warning(
                "drain: %d messages still in flight after %.1fs grace", self.inflight.count, grace
            )
            return False
        return True

    async def _stop_all(self) -> None:
        for slot in list(self.slots.values()):
            await self._stop_slot(slot)
        for slot in self.slots.values():  # durable deliveries still queued: redeliver at once
            while (item := slot.inbox.get_nowait()) is not None:
                if item[2] is not None:
                    await item[2].release()
                slot.inbox.done()
        await self.taps.aclose()  # end records out while the rack's NATS is still there
        await self.standard.aclose()
        if self.telemetry is not None:  # last: the gears' final spans and counts go out too
            await self.telemetry.aclose()

    def stats(self) -> dict[str, dict[str, float]]:
        """Counters per gear (plus inbox depth)."""
        return {
            name: {**slot.stats.snapshot(), "queued": len(slot.inbox)}
            for name, slot in self.slots.items()
        }
