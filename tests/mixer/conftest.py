"""Fixtures of the mixer tests: an API context over a real DuckDB file and a real CAS store, and
for activation: a started orchestrator on a real nats-server, and racks played by a raw client.

`ctx` has no orchestrator (the activation routes answer 503); tests of activation use `hub_ctx`
(the same store, registry and activation log, with an orchestrator started on a real
nats-server) and `fake_rack`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import duckdb
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from mixer.activations import ActivationLog
from mixer.api.http import ApiContext
from mixer.orchestrator import Orchestrator
from mixer.registry import Registry
from mixer.settings import OrchestratorSection
from mixer.store import CasStore
from rack.gear.registry import GearRegistry
from rack.link.protocol import (
    MAX_SCENARIO_PAYLOAD,
    ScenarioAck,
    ScenarioPush,
    applied_subject,
    decode,
    encode,
    scenario_subject,
)
from rack.natsd import NatsServer
from tests.mixer.documents import TOKEN

APPLY_TIMEOUT = 1.0  # the started orchestrator's: fake racks answer within milliseconds
BOUND = 10.0  # seconds: an upper bound for anything that should take milliseconds


@pytest.fixture
def database(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    conn = duckdb.connect(str(tmp_path / "mixer.duckdb"))
    yield conn
    conn.close()


@pytest.fixture
def ctx(tmp_path: Path, database: duckdb.DuckDBPyConnection) -> Iterator[ApiContext]:
    conn = database
    store = CasStore(tmp_path / "cas", conn)
    registry = Registry(conn)
    gears = GearRegistry.discover()
    yield ApiContext(store, registry, gears, auth_token=TOKEN)
    store.close()
    registry.close()


@pytest.fixture
async def hub_ctx(
    ctx: ApiContext, database: duckdb.DuckDBPyConnection, nats_server: NatsServer
) -> AsyncIterator[ApiContext]:
    """`ctx` with a started orchestrator on a real hub (apply_timeout `APPLY_TIMEOUT`)."""
    async with started_orchestrator(ctx, database, nats_server.url) as orchestrator:
        yield dataclasses.replace(ctx, orchestrator=orchestrator)


@asynccontextmanager
async def started_orchestrator(
    ctx: ApiContext,
    database: duckdb.DuckDBPyConnection,
    hub_url: str,
    apply_timeout: float = APPLY_TIMEOUT,
) -> AsyncIterator[Orchestrator]:
    """An orchestrator on `ctx`'s store and registry (its activation log on `database`)."""
    activations = ActivationLog(database)
    settings = OrchestratorSection(apply_timeout=apply_timeout)
    orchestrator = Orchestrator(hub_url, ctx.store, ctx.registry, ctx.gears, activations, settings)
    try:
        async with orchestrator:
            yield orchestrator
    finally:
        activations.close()


Answer = Callable[[ScenarioPush], ScenarioAck | None]


def applies(name: str, report: str = "started 2 gears") -> Answer:
    """The rack applies every push."""

    def answer(push: ScenarioPush) -> ScenarioAck:
        return ScenarioAck(
            name=name,
            activation=push.activation,
            digest=push.digest,
            running=push.digest,
            ok=True,
            report=report,
        )

    return answer


def fails(name: str, error: str) -> Answer:
    """The rack refuses every push that is not a rollback (and applies rollbacks)."""
    ok = applies(name, "rolled back")

    def answer(push: ScenarioPush) -> ScenarioAck:
        if push.rollback:
            return ok(push)
        return ScenarioAck(name=name, activation=push.activation, digest=push.digest, ok=False,
                           error=error)  # fmt: skip

    return answer


def silent(push: ScenarioPush) -> None:
    """The rack never answers."""
    return None


class FakeRack:
    """A rack played by a raw NATS client: it records every push it is sent, and `answer`
    (changeable between activations) decides its ack (None: it stays silent)."""

    def __init__(self, nc: Client, name: str, answer: Answer) -> None:
        self.nc, self.name, self.answer = nc, name, answer
        self.pushes: asyncio.Queue[ScenarioPush] = asyncio.Queue()

    async def on_push(self, msg: Msg) -> None:
        push = decode(ScenarioPush, msg.data, "push", limit=MAX_SCENARIO_PAYLOAD)
        self.pushes.put_nowait(push)
        ack = self.answer(push)
        if ack is not None:
            await self.nc.publish(applied_subject(self.name), encode(ack))

    async def next_push(self) -> ScenarioPush:
        async with asyncio.timeout(BOUND):
            return await self.pushes.get()

    def drained(self) -> list[ScenarioPush]:
        """Every push received so far (without waiting)."""
        pushes = []
        while not self.pushes.empty():
            pushes.append(self.pushes.get_nowait())
        return pushes


MakeRack = Callable[[str, Answer], Awaitable[FakeRack]]


@pytest.fixture
async def fake_rack(hub_ctx: ApiContext, nats_server: NatsServer) -> AsyncIterator[MakeRack]:
    """`await fake_rack("edge-1", applies("edge-1"))`: registers and adopts the rack, and
    listens on its scenario subject (subscribed before it returns)."""
    nc = await nats.connect(nats_server.url, name="fake racks")

    async def make(name: str, answer: Answer) -> FakeRack:
        rack = FakeRack(nc, name, answer)
        await nc.subscribe(scenario_subject(name), cb=rack.on_push)
        await nc.flush()

        def enroll() -> None:
            hub_ctx.registry.hello(name)
            hub_ctx.registry.adopt(name)

        await asyncio.to_thread(enroll)
        return rack

    try:
        yield make
    finally:
        await nc.drain()
