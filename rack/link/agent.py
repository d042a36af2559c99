"""A rack run by the mixer: no gears until adopted, then the pushed scenario, acked to the mixer.

    async with Rack(settings, name="edge-1") as rack, MixerLink(url, "edge-1") as link:
        agent = ScenarioAgent(rack, link, GearRegistry.discover(), start_timeout=30)
        await agent.run()            # until cancelled

The agent follows the link (`rack.link.MixerLink`):

- status `pending`, `suspended` or `retired`: the rack runs no gears (seed: a pending rack does
  not initialise its gear runtime); when it had some (a suspended rack), they are drained and
  stopped. `offline` is the mixer's view of a rack it cannot hear: the rack keeps running.
- a scenario push while `active` (or `offline`): the document is checked against its digest,
  pre-flighted with this rack's own gear catalogue, cut to the gears of this rack (`deploy` is
  its name or empty), applied through the rack's partial reload (unchanged gears keep running
  and keep their sockets), and the agent waits until every gear runs (`start_timeout`). Then it
  answers `ok` with what changed. If anything fails (pre-flight, a gear that does not start in
  time, a standard wire that cannot be provisioned), the rack goes back to what it ran before
  (its last known good) and the answer names the reason.

The MachineID the mixer allocated is used for the rack's fluxIDs from the first scenario on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from rack.errors import FluxError, ScenarioError
from rack.gear.registry import GearRegistry
from rack.link.enrollment import MixerLink
from rack.link.protocol import ScenarioAck, ScenarioPush
from rack.model.passport import Passport
from rack.model.scenario import Blueprint, Scenario
from rack.preflight import preflight_document
from rack.runtime.rack import Rack
from rack.scenario_files import parse_document

__all__ = ["IDLE_STATUSES", "ScenarioAgent"]

log = logging.getLogger("fluxrig.link")

IDLE_STATUSES = frozenset({"pending", "suspended", "retired"})


class ScenarioAgent:
    """Applies the mixer's pushes and statuses to one rack. `digest`: the CAS digest running
    (None: no scenario); `applied`/`failed`: how many pushes were applied/refused."""

    def __init__(
        self, rack: Rack, link: MixerLink, gears: GearRegistry, *, start_timeout: float
    ) -> None:
        self.rack, self.link, self.gears = rack, link, gears
        self.start_timeout = start_timeout
        self.digest: str | None = None
        self.activation: int | None = None
        self.applied = 0
        self.failed = 0

    async def run(self) -> None:
        """Follow the link until cancelled."""
        seen = 0
        said_idle: str | None = None
        while True:
            await self.link.wait_until(_news(seen, said_idle))
            status = self.link.status
            if status in IDLE_STATUSES:
                if status != said_idle:
                    await self._go_idle(status)
                    said_idle = status
            else:
                said_idle = None
            if self.link.pushes != seen:
                seen = self.link.pushes
                push = self.link.push
                if push is not None:
                    await self.link.ack(await self._handle(push, status))

    async def boot(self, passport: Passport) -> bool:
        """Run the scenario a verified passport grants (at start, before the mixer answers)."""
        self.rack.use_machine_id(passport.machine_id)
        granted = passport.scenario
        if granted is None:
            log.info("rack '%s': its passport grants no scenario", self.rack.name)
            return True
        push = ScenarioPush(
            activation=0, digest=granted.digest, ref=granted.ref, document=granted.document
        )
        ack = await self._handle(push, "active")
        if ack.ok:
            log.info(
                "rack '%s' runs %s from its passport (machine id %d), mixer or not",
                self.rack.name, granted.ref or granted.digest, passport.machine_id,
            )  # fmt: skip
        return ack.ok

    async def _go_idle(self, status: str | None) -> None:
        if self.rack.slots or self.digest is not None:
            log.warning("rack '%s' is %s: stopping its gears", self.rack.name, status)
            await self.rack.apply(self._nothing())
            self.digest = self.activation = None
        else:
            log.info(
                "rack '%s' is %s: no gears run until the mixer adopts it and sends a scenario",
                self.rack.name, status,
            )  # fmt: skip

    async def _handle(self, push: ScenarioPush, status: str | None) -> ScenarioAck:
        if status in IDLE_STATUSES:
            return self._ack(push, f"the rack is {status}: it runs no scenario")
        try:
            blueprint = self._blueprint(push)
        except ScenarioError as exc:
            return self._ack(push, f"rejected by the rack's pre-flight: {exc}")
        if self.link.machine_id and not self.rack.slots:
            self.rack.use_machine_id(self.link.machine_id)
        before = self.rack.blueprint
        try:
            report = await self.rack.apply(blueprint)
            await self.rack.wait_ready(self.start_timeout)
        except TimeoutError:
            error = f"gears did not start within {self.start_timeout:g}s: {self._not_ready()}"
        except FluxError as exc:
            error = str(exc)
        else:
            self.digest, self.activation = push.digest, push.activation
            self.applied += 1
            return self._ack(push, None, str(report))
        await self._restore(before)
        return self._ack(push, error)

    def _blueprint(self, push: ScenarioPush) -> Blueprint:
        if push.document is None or push.digest is None:
            return self._nothing()
        data = push.document.encode("utf-8")
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != push.digest:
            raise ScenarioError(f"the document's digest is {actual}, not {push.digest}")
        doc = parse_document(push.document, push.ref or push.digest)
        return preflight_document(doc, self.gears).for_rack(self.rack.name)

    async def _restore(self, before: Blueprint | None) -> None:
        """Back to the last known good after a failed apply."""
        try:
            await self.rack.apply(before or self._nothing())
        except FluxError as exc:  # the previous one applied before: this is unexpected
            log.error("rack '%s' could not go back to its previous scenario: %s", self.rack.name,
                      exc)  # fmt: skip

    def _ack(self, push: ScenarioPush, error: str | None, report: str | None = None) -> ScenarioAck:
        if error is not None:
            self.failed += 1
            log.error(
                "activation %d (%s) not applied, keeping %s: %s",
                push.activation, push.ref or push.digest, self.digest or "no scenario", error,
            )  # fmt: skip
        return ScenarioAck(
            name=self.rack.name,
            activation=push.activation,
            digest=push.digest,
            running=self.digest,
            ok=error is None,
            error=error,
            report=report,
        )

    def _not_ready(self) -> str:
        late = [
            f"'{slot.name}' ({slot.last_error or 'no error reported'})"
            for slot in self.rack.slots.values()
            if not slot.ready.is_set()
        ]
        return ", ".join(late) or "unknown"

    def _nothing(self) -> Blueprint:
        return Blueprint(Scenario(name=f"{self.rack.name} (idle)"), {}, ())


def _news(seen: int, said: str | None) -> Callable[[MixerLink], bool]:
    """A new push, or a new idle status to act on."""

    def predicate(link: MixerLink) -> bool:
        return link.pushes != seen or (link.status in IDLE_STATUSES and link.status != said)

    return predicate
