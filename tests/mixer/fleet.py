"""Helpers of the fleet tests: a real Mixer's settings, scenarios of io_tcp echo gears, and
racks managed by it in this process (Rack + MixerLink + ScenarioAgent, as `fluxrig run
--mixer-url` assembles them)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixer.app import Mixer
from mixer.settings import MixerSettings
from rack.gear.registry import GearRegistry
from rack.link import MixerLink
from rack.link.agent import ScenarioAgent
from rack.link.identity import RackIdentity
from rack.link.snake import Snake
from rack.runtime.rack import Rack
from rack.settings import RackSettings

TIMEOUT = 15.0
GEARS = GearRegistry.discover()


def clean_environment(monkeypatch: Any, tmp_path: Path) -> None:
    """No FLUXRIG_* variable of the developer's shell leaks into a test; cwd is tmp_path."""
    for key in list(os.environ):
        if key.upper().startswith("FLUXRIG_") and key.upper() != "FLUXRIG_NATS_SERVER":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def mixer_settings(state: Path, apply_timeout: float = 10.0, **mixer: Any) -> MixerSettings:
    return MixerSettings.model_validate(
        {
            "mixer": {"state_dir": state, **mixer},
            "hub": {"port": 0, "leafnode_port": 0},  # racks open their Snake on it
            "api": {"port": 0, "grpc_port": 0, "insecure": True},
            "telemetry": {"grpc_port": 0, "http_port": 0},
            "enrollment": {"heartbeat_interval": 0.1, "max_missed": 50},
            "orchestrator": {"apply_timeout": apply_timeout, "push_retry": 0.5},
        }
    )


async def until(check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll `check` (state of the mixer or a rack) until it holds, or fail after `timeout`."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - state spread over processes, no single event
            await asyncio.sleep(0.02)


def scenario(name: str, *gears: str, racks: tuple[str, ...] = ()) -> str:
    """A scenario of io_tcp echo servers; each gear is `name` or `name@rack` (deploy)."""
    lines = [f"meta: {{name: {name}, version: 1.0.0}}"]
    if racks:
        lines.append("racks: [" + ", ".join(f"{{name: {r}}}" for r in racks) + "]")
    lines.append("gears:")
    wires = ["wires:"]
    for spec in gears:
        gear, deploy, bind = ([*spec.split("@", 2), "", ""])[:3]
        bind = bind or "127.0.0.1:0"
        where = f", deploy: {deploy}" if deploy else ""
        lines.append(
            f"  - {{name: {gear}, type: io_tcp{where}, config: {{mode: server, "
            f'bind: "{bind}", framing: delimiter}}}}'
        )
        wires.append(f"  - {{from: {gear}.out, to: {gear}.in, transport: memory}}")
    return "\n".join(lines + wires) + "\n"


def store(mixer: Mixer, name: str, text: str) -> str:
    """Import `text` as `name:1.0.0` and return its digest."""
    return mixer.store.put("scenario", name, "1.0.0", text.encode()).digest


@dataclass
class ManagedRack:
    rack: Rack
    link: MixerLink
    agent: ScenarioAgent

    @property
    def gears(self) -> set[str]:
        return set(self.rack.slots)

    def running(self, gears: set[str]) -> bool:
        return self.gears == gears and self.rack.is_ready()


@asynccontextmanager
async def managed(
    url: str,
    name: str,
    state: Path,
    *,
    token: str | None = None,
    identity: bool = False,
    snake: bool = False,
) -> AsyncIterator[ManagedRack]:
    """A rack run by the mixer, in this process (what `fluxrig run --mixer-url` assembles);
    with `identity`, its key, CSR and passport live in `state/name` and a valid passport's
    scenario runs before the link starts; with `snake` (implies `identity`; give the mixer's
    `rack_url`), it enrolls anonymously and then works through its Snake, its standard wires
    on the Snake's nats-server."""
    settings = RackSettings(state_dir=state / name, start_timeout=1.5, nats_port=0)
    agent: ScenarioAgent | None = None
    me = RackIdentity.load(settings.state_dir, name) if identity or snake else None
    passport = me.passport(now=time.time()) if me is not None else None
    async with contextlib.AsyncExitStack() as stack:
        leaf = None
        if snake:
            assert me is not None
            leaf = await stack.enter_async_context(Snake(settings, me))
            settings = settings.model_copy(update={"nats_url": leaf.url})
        rack = await stack.enter_async_context(Rack(settings, name=name))
        link = MixerLink(
            url,
            name,
            running=lambda: agent.digest if agent is not None else None,
            token=token,
            identity=me,
            snake=leaf,
            backoff_initial=0.05,
            backoff_max=0.2,
            request_timeout=2.0,
        )
        link.passport = passport
        agent = ScenarioAgent(rack, link, GEARS, start_timeout=1.5)
        if passport is not None:
            await agent.boot(passport)
        async with link:
            task = asyncio.create_task(agent.run())
            try:
                yield ManagedRack(rack, link, agent)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
