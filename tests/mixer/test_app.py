"""The composition root with real things: nats-server hub, DuckDB file, CAS blobs, REST API."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import nats
import pytest

from mixer.app import Mixer
from mixer.errors import MixerError
from mixer.registry import RackRecord, RackStatus
from mixer.settings import MixerSettings
from mixer.startup import StartupChoice, resolve_startup, slug
from mixer.store import CasStore, digest_of
from rack.gear.registry import GearRegistry

TOKEN = "test-token-0123456789abcdef"
BOOTSTRAP = "bootstrap-token-0123456789"
SCENARIO = """\
name: Payment Flow
gears:
  - {name: gen, type: generator, config: {count: 1, rate: 0}}
  - {name: out, type: sink}
wires:
  - {from: gen.out, to: out.in, transport: memory}
"""
BROKEN = """\
name: broken
gears:
  - {name: gen, type: no_such_gear}
wires:
  - {from: gen.out, to: nowhere.in}
"""

Settings = Callable[..., MixerSettings]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.upper().startswith("FLUXRIG_") and key.upper() != "FLUXRIG_NATS_SERVER":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on free ports (0) with the state under tmp_path; sections overridable."""

    def make(**sections: dict[str, Any]) -> MixerSettings:
        base: dict[str, dict[str, Any]] = {
            "mixer": {"state_dir": tmp_path / "state"},
            "hub": {"port": 0, "leafnode_port": 0},
            "api": {"port": 0, "grpc_port": 0, "auth_token": TOKEN},
            "telemetry": {"grpc_port": 0, "http_port": 0},
            "enrollment": {"bootstrap_token": BOOTSTRAP},
        }
        for name, values in sections.items():
            base[name] = {**base.get(name, {}), **values}
        return MixerSettings.model_validate(base)

    return make


@pytest.fixture
def gears() -> GearRegistry:
    return GearRegistry.discover()


@pytest.fixture
def store(tmp_path: Path) -> Any:
    db = duckdb.connect(str(tmp_path / "resolve.duckdb"))
    with CasStore(tmp_path / "cas", db) as cas:
        yield cas
    db.close()


async def test_mixer_starts_every_resource(settings: Settings, tmp_path: Path) -> None:
    async with Mixer(settings()) as mixer:
        assert mixer.ready.is_set()
        assert (tmp_path / "state" / "mixer.duckdb").is_file()
        assert (tmp_path / "state" / "hub" / "nats-server.conf").is_file()
        assert mixer.hub.leafnode_port not in (None, 0)
        nc = await nats.connect(mixer.nats_url)
        try:
            js = nc.jetstream()
            info = await js.account_info()  # JetStream is enabled on the hub
            assert info.limits is not None
            await js.add_stream(name="PROBE", subjects=["probe.>"])
            ack = await js.publish("probe.x", b"hello")
            assert ack.stream == "PROBE"
        finally:
            await nc.close()
        assert mixer.db.execute("SELECT 42").fetchone() == (42,)
        assert mixer.api_url is not None
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{mixer.api_url}/api/v1/health") as resp:
                assert resp.status == 200
            async with http.get(f"{mixer.api_url}/api/v1/racks") as resp:
                assert resp.status == 401  # a token is configured: it is enforced
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with http.get(f"{mixer.api_url}/api/v1/racks", headers=headers) as resp:
                assert resp.status == 200
    assert not mixer.ready.is_set()
    with pytest.raises(MixerError, match="not started"):
        _ = mixer.nats_url
    await mixer.aclose()  # idempotent


async def test_restart_keeps_registry_and_store(settings: Settings) -> None:
    async with Mixer(settings()) as mixer:
        rack = await asyncio.to_thread(mixer.registry.hello, "edge-1", version="1.0")
        put = await asyncio.to_thread(mixer.store.put, "scenario", "flow", "v1.0.0", b"x: 1\n")
    async with Mixer(settings()) as mixer:
        again = await asyncio.to_thread(mixer.registry.get, "edge-1")
        assert (again.machine_id, again.version, again.status) == (
            rack.machine_id,
            "1.0",
            "pending",
        )
        blob = await asyncio.to_thread(mixer.store.get, "scenario", "flow:v1.0.0")
        assert (blob.digest, blob.data) == (put.digest, b"x: 1\n")


async def test_heartbeat_sweep_takes_silent_racks_offline(settings: Settings) -> None:
    swept: asyncio.Queue[Sequence[RackRecord]] = asyncio.Queue()
    cfg = settings(enrollment={"heartbeat_interval": 0.05, "max_missed": 1})
    async with Mixer(cfg, on_offline=swept.put_nowait) as mixer:
        await asyncio.to_thread(mixer.registry.hello, "edge-1", auto_adopt=True)
        async with asyncio.timeout(10):
            gone = await swept.get()
        assert [r.name for r in gone] == ["edge-1"]
        assert gone[0].status is RackStatus.OFFLINE


async def test_startup_file_is_imported_by_the_mixer(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(SCENARIO)
    async with Mixer(settings(mixer={"startup_scenario": str(path)})) as mixer:
        assert mixer.startup is not None
        assert mixer.startup.action == "import"
        assert mixer.startup.ref == f"payment-flow:file-{digest_of(SCENARIO.encode())[7:19]}"
        assert mixer.store.tags("scenario", "payment-flow") == [mixer.startup.ref.split(":")[1]]


async def test_fatal_startup_scenario_closes_everything(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    mixer = Mixer(settings(mixer={"startup_scenario": f"file://{path}"}))
    with pytest.raises(MixerError, match="no_such_gear"):
        await mixer.start()
    assert not mixer.ready.is_set()
    with pytest.raises(MixerError, match="not started"):
        _ = mixer.db
    async with Mixer(settings()) as again:  # nothing was left holding the state dir
        assert again.ready.is_set()


async def test_unwritable_state_dir_is_a_mixer_error(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(MixerError, match=r"cannot create the mixer state dir .*state_dir"):
        await Mixer(settings(mixer={"state_dir": tmp_path / "file" / "state"})).start()


# -- startup resolution --------------------------------------------------------------------------


def test_empty_reference_resumes_nothing(store: CasStore, gears: GearRegistry) -> None:
    assert resolve_startup("", store, gears) == StartupChoice("resume", "")


def test_path_is_preflighted_and_imported(
    store: CasStore, gears: GearRegistry, tmp_path: Path
) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(SCENARIO)
    tag = "file-" + digest_of(SCENARIO.encode()).removeprefix("sha256:")[:12]
    choice = resolve_startup(str(path), store, gears)
    assert (choice.action, choice.ref, choice.created) == ("import", f"payment-flow:{tag}", True)
    assert choice.blueprint is not None
    assert sorted(choice.blueprint.gears) == ["gen", "out"]
    assert store.get("scenario", f"payment-flow:{tag}").data == SCENARIO.encode()
    again = resolve_startup(f"file://{path}", store, gears)  # the optional prefix
    assert (again.ref, again.digest, again.created) == (choice.ref, choice.digest, False)


def test_bare_yaml_name_is_a_path(store: CasStore, gears: GearRegistry, tmp_path: Path) -> None:
    (tmp_path / "flow.yml").write_text(SCENARIO)  # cwd is tmp_path
    assert resolve_startup("flow.yml", store, gears).action == "import"


def test_broken_file_is_fatal_and_named(
    store: CasStore, gears: GearRegistry, tmp_path: Path
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    with pytest.raises(MixerError) as exc:
        resolve_startup(str(path), store, gears)
    message = str(exc.value)
    assert str(path) in message
    assert "no_such_gear" in message
    assert "nowhere" in message
    assert store.list("scenario") == []  # a rejected scenario is not imported
    with pytest.raises(MixerError, match=r"cannot read startup scenario .*missing\.yaml"):
        resolve_startup(str(tmp_path / "missing.yaml"), store, gears)


def test_name_tag_is_resolved_from_the_store(store: CasStore, gears: GearRegistry) -> None:
    put = store.put("scenario", "payment-flow", "v1.0.0", SCENARIO.encode())
    choice = resolve_startup("payment-flow:v1.0.0", store, gears)
    assert (choice.action, choice.ref, choice.digest) == ("load", "payment-flow:v1.0.0", put.digest)
    assert resolve_startup("payment-flow:latest", store, gears).ref == "payment-flow:v1.0.0"


def test_missing_or_invalid_stored_scenario_is_fatal(store: CasStore, gears: GearRegistry) -> None:
    with pytest.raises(MixerError, match=r"startup scenario 'payment-flow:v9': no scenario named"):
        resolve_startup("payment-flow:v9", store, gears)
    store.put("scenario", "broken", "v1", BROKEN.encode())
    with pytest.raises(MixerError, match=r"stored startup scenario 'broken:v1' is rejected"):
        resolve_startup("broken:v1", store, gears)
    with pytest.raises(MixerError, match="invalid"):
        resolve_startup("not a ref", store, gears)


@pytest.mark.parametrize(
    ("title", "name"),
    [
        ("Payment Processing", "payment-processing"),
        ("High-Freq Vibration (v2)", "high-freq-vibration-v2"),
        ("--", "scenario"),
        ("SHA256", "scenario-sha256"),
        ("x" * 150, "x" * 100),
    ],
)
def test_slug(title: str, name: str) -> None:
    assert slug(title) == name


async def test_mixer_serves_the_grpc_api_with_health_and_the_token(settings: Settings) -> None:
    import grpc
    from fluxrig.v1 import racks_pb2, racks_pb2_grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with Mixer(settings()) as mixer:
        assert mixer.grpc_target is not None
        mixer.registry.hello("edge-g", version="test")
        async with grpc.aio.insecure_channel(mixer.grpc_target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert status.status == health_pb2.HealthCheckResponse.SERVING  # no token needed
            racks = racks_pb2_grpc.RackServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await racks.ListRacks(racks_pb2.ListRacksRequest())
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            reply = await racks.ListRacks(
                racks_pb2.ListRacksRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),)
            )
            assert [(r.name, r.status) for r in reply.racks] == [("edge-g", "pending")]
