"""`fluxrig run`: a standalone rack serving one scenario file until it is told to stop.

SIGTERM/SIGINT → drain (stop accepting, finish in-flight, bounded by the grace period) → stop.
SIGHUP, or a change of the scenario file, → re-read, pre-flight, partial reload. An invalid new
scenario is rejected with every problem logged, and the running one stays.

Without a scenario file, `fluxrig run --mixer-url URL` is a rack managed by the mixer: it
enrolls (`rack.link.MixerLink`), runs no gears while pending, and runs what the mixer pushes once
adopted (`rack.link.agent.ScenarioAgent`); see docs/orchestration.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

from rack.errors import FluxError, PassportError, ScenarioError, SettingsError
from rack.gear.registry import GearRegistry
from rack.link import MixerLink
from rack.link.agent import ScenarioAgent
from rack.link.identity import RackIdentity
from rack.link.snake import Snake
from rack.model.passport import Passport
from rack.model.scenario import Blueprint
from rack.preflight import preflight_file
from rack.runtime.rack import Rack
from rack.settings import RackSettings

log = logging.getLogger("fluxrig.rack")


def _file_state(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class ScenarioSource:
    """The scenario file a rack serves: loads it, and notices when it changes."""

    def __init__(self, path: Path, registry: GearRegistry, rack: str | None) -> None:
        self.path = path
        self.registry = registry
        self.rack = rack
        self._seen = _file_state(path)

    def load(self) -> Blueprint:
        self._seen = _file_state(self.path)
        blueprint = preflight_file(self.path, self.registry)
        return blueprint.for_rack(self.rack) if self.rack else blueprint

    def changed(self) -> bool:
        return _file_state(self.path) != self._seen

    async def watch(self, interval: float, requests: Requests) -> None:
        """Poll the file's mtime/size (portable, no extra dependency) and flag changes."""
        while True:
            await asyncio.sleep(interval)
            if self.changed():
                self._seen = _file_state(self.path)
                requests.request_reload()


class Requests:
    """What the signal handlers and the file watcher ask of the serve loop."""

    def __init__(self) -> None:
        self.stop = False
        self.reload = False
        self.wake = asyncio.Event()

    def request_stop(self) -> None:
        self.stop = True
        self.wake.set()

    def request_reload(self) -> None:
        self.reload = True
        self.wake.set()


async def serve(
    scenario: Path | None,
    settings: RackSettings,
    *,
    rack_name: str | None = None,
    registry: GearRegistry | None = None,
) -> int:
    """Run the rack until SIGTERM/SIGINT; returns the process exit code.

    `scenario` None: the rack is managed by the mixer at `settings.mixer_url` (required)."""
    registry = registry or GearRegistry.discover()
    requests = Requests()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, requests.request_stop)
    loop.add_signal_handler(signal.SIGHUP, requests.request_reload)
    try:
        if scenario is None:
            if not settings.mixer_url:
                raise SettingsError("a rack without a scenario file needs mixer_url (--mixer-url)")
            return await _serve_managed(settings, rack_name or settings.name, registry, requests)
        source = ScenarioSource(scenario, registry, rack_name)
        return await _serve_file(source, settings, rack_name, requests)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def _serve_file(
    source: ScenarioSource, settings: RackSettings, rack_name: str | None, requests: Requests
) -> int:
    blueprint = source.load()  # fatal at startup: nothing else to fall back to
    async with Rack(settings, name=rack_name or settings.name) as rack:
        await rack.apply(blueprint)
        if not await _started(rack, settings.start_timeout):
            return 1
        log.info("rack '%s' ready (pid %d)", rack.name, os.getpid())
        async with asyncio.TaskGroup() as tg:
            watcher = (
                tg.create_task(source.watch(settings.watch_interval, requests))
                if settings.watch
                else None
            )
            await _serve_until_stopped(rack, source, requests)
            if watcher is not None:
                watcher.cancel()
        clean = await _drain(rack, settings)
    log.info("rack stopped%s", "" if clean else " (grace period expired)")
    return 0 if clean else 1


async def _serve_managed(
    settings: RackSettings, name: str, registry: GearRegistry, requests: Requests
) -> int:
    """The rack runs what the mixer says (rack.link.agent): nothing until adopted, or what its
    passport grants while the mixer is away (Sovereign Continuity)."""
    assert settings.mixer_url is not None
    identity = await asyncio.to_thread(RackIdentity.load, settings.state_dir, name)
    passport = await _boot_passport(identity)
    agent: ScenarioAgent | None = None
    snake = Snake(settings, identity)  # the local nats-server first: wires and link use it
    async with snake, Rack(_on_snake(settings, snake), name=name) as rack:
        token = settings.bootstrap_token
        link = MixerLink(
            settings.mixer_url,
            rack.name,
            gears=lambda: len(rack.slots),
            running=lambda: agent.digest if agent is not None else None,
            token=token.get_secret_value() if token is not None else None,
            identity=identity,
            snake=snake,
        )
        link.passport = passport
        agent = ScenarioAgent(rack, link, registry, start_timeout=settings.start_timeout)
        if passport is not None:
            await agent.boot(passport)  # before the link: the mixer may be unreachable
        async with link:
            log.info(
                "rack '%s' (pid %d) takes its scenario from the mixer at %s",
                rack.name, os.getpid(), settings.mixer_url,
            )  # fmt: skip
            async with asyncio.TaskGroup() as tg:
                follower = tg.create_task(agent.run(), name="scenario-agent")
                while not requests.stop:
                    await requests.wake.wait()
                    requests.wake.clear()
                    if requests.reload:
                        requests.reload = False
                        log.info("SIGHUP ignored: a managed rack reloads when the mixer pushes")
                follower.cancel()
            clean = await _drain(rack, settings)
    log.info("rack stopped%s", "" if clean else " (grace period expired)")
    return 0 if clean else 1


def _on_snake(settings: RackSettings, snake: Snake) -> RackSettings:
    """The rack's standard wires use the Snake's nats-server (unless `nats_url` says another)."""
    if settings.nats_url:
        return settings
    return settings.model_copy(update={"nats_url": snake.url})


async def _boot_passport(identity: RackIdentity) -> Passport | None:
    """The stored passport, if valid; a bad one is reported and the rack waits for a new one."""
    try:
        passport = await asyncio.to_thread(identity.passport, now=time.time())
    except PassportError as exc:
        log.error(
            "passport rejected at boot: %s. The rack runs no gears until the mixer issues a new "
            "one",
            exc,
        )
        return None
    if passport is None:
        log.info("rack '%s' has no passport yet: it enrolls with the mixer", identity.name)
    return passport


async def _drain(rack: Rack, settings: RackSettings) -> bool:
    log.info("rack '%s' draining (grace %.1fs)", rack.name, settings.grace_period)
    clean = await rack.drain()
    for gear, counters in rack.stats().items():
        text = " ".join(f"{k}={v:g}" for k, v in sorted(counters.items()))
        log.info("gear '%s' final stats: %s", gear, text)
    return clean


async def _started(rack: Rack, timeout: float) -> bool:
    try:
        await rack.wait_ready(timeout)
    except TimeoutError:
        for slot in rack.slots.values():
            if not slot.ready.is_set():
                log.error(
                    "gear '%s' (%s) did not start within %.1fs: %s",
                    slot.name, slot.plan.type_name, timeout, slot.last_error or "no error reported",
                )  # fmt: skip
        return False
    return True


async def _serve_until_stopped(rack: Rack, source: ScenarioSource, requests: Requests) -> None:
    while True:
        await requests.wake.wait()
        requests.wake.clear()
        if requests.stop:
            return
        if requests.reload:
            requests.reload = False
            await _reload(rack, source)


async def _reload(rack: Rack, source: ScenarioSource) -> None:
    log.info("reloading scenario from %s", source.path)
    try:
        blueprint = source.load()
        await rack.apply(blueprint)
    except ScenarioError as exc:
        log.error("new scenario rejected, keeping '%s': %s", _running(rack), exc)
    except FluxError as exc:
        log.error("new scenario not applied, keeping '%s': %s", _running(rack), exc)


def _running(rack: Rack) -> str:
    return rack.blueprint.name if rack.blueprint else "(none)"
