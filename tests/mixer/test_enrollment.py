"""Enrollment end to end: a real Mixer (hub, DuckDB, sweep) and real MixerLinks over NATS."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from mixer.app import Mixer
from mixer.registry import RackStatus
from mixer.settings import MixerSettings
from rack.link import LinkState, MixerLink
from rack.link.protocol import HELLO_SUBJECT, heartbeat_subject, status_subject
from rack.natsd import NatsServer
from tests.e2e.rackproc import RackProcess

TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.upper().startswith("FLUXRIG_") and key.upper() != "FLUXRIG_NATS_SERVER":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def mixer_settings(
    state: Path, *, nats_port: int = 0, max_missed: int = 20, auto_adopt: bool = False
) -> MixerSettings:
    return MixerSettings.model_validate(
        {
            "mixer": {"state_dir": state},
            "hub": {"port": nats_port, "leafnodes": False},
            "api": {"port": 0, "grpc_port": 0, "insecure": True},
            "telemetry": {"grpc_port": 0, "http_port": 0},
            "enrollment": {
                "heartbeat_interval": 0.1,
                "max_missed": max_missed,
                "auto_adopt": auto_adopt,
            },
        }
    )


@asynccontextmanager
async def running_mixer(state: Path, **kw: Any) -> AsyncIterator[Mixer]:
    async with Mixer(mixer_settings(state, **kw)) as mixer:
        yield mixer


def link(url: str, name: str, **kw: Any) -> MixerLink:
    options: dict[str, Any] = {
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "request_timeout": 2.0,
    }
    return MixerLink(url, name, **(options | kw))


async def until(check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll `check` (registry state, log records) until it holds, or fail after `timeout`."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - server-side state, no event to await
            await asyncio.sleep(0.02)


@asynccontextmanager
async def observer(url: str, subject: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    """A separate NATS client collecting the JSON messages published on `subject`."""
    nc = await nats.connect(url)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def collect(msg: Any) -> None:
        queue.put_nowait(json.loads(msg.data))

    try:
        await nc.subscribe(subject, cb=collect)
        await nc.flush()
        yield queue
    finally:
        await nc.close()


async def next_status(queue: asyncio.Queue[dict[str, Any]], status: str) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        while (update := await queue.get())["status"] != status:
            pass
    return update


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- enrollment and adoption -------------------------------------------------------------------


async def test_hello_enrolls_pending_racks_with_unique_machine_ids(tmp_path: Path) -> None:
    async with running_mixer(tmp_path / "m") as mixer, AsyncExitStack() as stack:
        first = await stack.enter_async_context(link(mixer.nats_url, "edge-1"))
        await first.wait_until(lambda k: k.state is LinkState.ENROLLED, TIMEOUT)
        second = await stack.enter_async_context(link(mixer.nats_url, "edge-2"))
        await second.wait_until(lambda k: k.state is LinkState.ENROLLED, TIMEOUT)
        assert (first.status, first.machine_id) == ("pending", 1)
        assert (second.status, second.machine_id) == ("pending", 2)
        records = await asyncio.to_thread(mixer.registry.list)
        assert [(r.name, r.machine_id, r.status) for r in records] == [
            ("edge-1", 1, RackStatus.PENDING),
            ("edge-2", 2, RackStatus.PENDING),
        ]
        assert first.entity_id == records[0].entity_id
        assert records[0].attributes["pid"] == os.getpid()
        assert {"hostname", "python"} <= records[0].attributes.keys()
        assert records[0].version is not None
        assert first.heartbeat_interval == 0.1


async def test_auto_adopt_activates_and_tells_the_rack(tmp_path: Path) -> None:
    async with (
        running_mixer(tmp_path / "m", auto_adopt=True) as mixer,
        observer(mixer.nats_url, status_subject("edge-1")) as statuses,
        link(mixer.nats_url, "edge-1") as rack,
    ):
        await rack.wait_until(lambda k: k.status_updates >= 1, TIMEOUT)
        assert rack.status == "active"
        assert await next_status(statuses, "active") == {"status": "active", "machine_id": 1}
        record = await asyncio.to_thread(mixer.registry.get, "edge-1")
        assert (record.status, record.adopted) == (RackStatus.ACTIVE, True)


async def test_manual_adoption_reaches_the_rack(tmp_path: Path) -> None:
    async with running_mixer(tmp_path / "m") as mixer, link(mixer.nats_url, "edge-1") as rack:
        await rack.wait_until(lambda k: k.status == "pending", TIMEOUT)
        record = await asyncio.to_thread(mixer.registry.adopt, "edge-1")
        await mixer.enrollment.notify(record)
        await rack.wait_until(lambda k: k.status == "active", TIMEOUT)
        assert rack.machine_id == 1


async def test_heartbeats_update_last_seen_and_stats(tmp_path: Path) -> None:
    async with running_mixer(tmp_path / "m") as mixer, link(mixer.nats_url, "edge-1") as rack:
        await rack.wait_until(lambda k: k.state is LinkState.ENROLLED, TIMEOUT)
        enrolled = await asyncio.to_thread(mixer.registry.get, "edge-1")
        await until(lambda: mixer.registry.get("edge-1").stats.get("rss_bytes") is not None)
        first = mixer.registry.get("edge-1")
        assert first.last_seen is not None
        assert enrolled.last_seen is not None
        assert first.last_seen > enrolled.last_seen
        assert first.stats["rss_bytes"] > 0
        assert first.stats["cpu_percent"] >= 0
        assert {"load1", "ts"} <= first.stats.keys()
        await until(lambda: mixer.registry.get("edge-1").stats["ts"] > first.stats["ts"])
        assert rack.heartbeats >= 2


@pytest.mark.parametrize("adopted", [True, False], ids=["adopted", "pending"])
async def test_silent_rack_goes_offline_and_comes_back(tmp_path: Path, adopted: bool) -> None:
    back = "active" if adopted else "pending"
    async with (
        running_mixer(tmp_path / "m", max_missed=2) as mixer,
        observer(mixer.nats_url, status_subject("edge-1")) as statuses,
    ):
        async with link(mixer.nats_url, "edge-1") as rack:
            await rack.wait_until(lambda k: k.status == "pending", TIMEOUT)
            if adopted:
                await mixer.enrollment.notify(mixer.registry.adopt("edge-1"))
                await rack.wait_until(lambda k: k.status == "active", TIMEOUT)
        # the link is closed: no more heartbeats, the sweep declares the rack offline
        assert await next_status(statuses, "offline") == {"status": "offline", "machine_id": 1}
        assert mixer.registry.get("edge-1").status is RackStatus.OFFLINE
        async with link(mixer.nats_url, "edge-1") as again:
            await again.wait_until(lambda k: k.state is LinkState.ENROLLED, TIMEOUT)
            assert (again.status, again.machine_id) == (back, 1)
            if adopted:  # a hello that brought the rack back is announced
                assert await next_status(statuses, back) == {"status": back, "machine_id": 1}
            record = mixer.registry.get("edge-1")
            assert (record.status.value, record.adopted) == (back, adopted)


async def test_link_says_hello_again_after_the_mixer_restarts(tmp_path: Path) -> None:
    port = free_port()
    async with AsyncExitStack() as stack:
        async with running_mixer(tmp_path / "m", nats_port=port, auto_adopt=True) as mixer:
            rack = await stack.enter_async_context(link(mixer.nats_url, "edge-1"))
            await rack.wait_until(lambda k: k.status == "active", TIMEOUT)
        await rack.wait_until(lambda k: k.state is not LinkState.ENROLLED, TIMEOUT)
        hellos = rack.hellos
        async with running_mixer(tmp_path / "m", nats_port=port) as mixer:
            await rack.wait_until(lambda k: k.state is LinkState.ENROLLED, TIMEOUT)
            assert rack.hellos > hellos
            assert (rack.status, rack.machine_id) == ("active", 1)  # remembered by the registry
            assert mixer.registry.get("edge-1").status is RackStatus.ACTIVE


async def test_nats_without_a_mixer_is_retried(nats_server: NatsServer) -> None:
    async with link(nats_server.url, "edge-1") as rack:
        await rack.wait_until(lambda k: k.state is LinkState.NO_MIXER and k.hellos >= 3, TIMEOUT)
        assert (rack.status, rack.error) == (None, None)


# -- refusals and garbage ----------------------------------------------------------------------


async def test_same_name_from_another_machine_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fluxrig.link")
    async with (
        running_mixer(tmp_path / "m") as mixer,
        link(mixer.nats_url, "edge-1", public_key="key-a") as owner,
    ):
        await owner.wait_until(lambda k: k.state is LinkState.ENROLLED, TIMEOUT)
        before = mixer.registry.list()
        async with link(mixer.nats_url, "edge-1", public_key="key-b") as impostor:
            await impostor.wait_until(lambda k: k.error is not None and k.hellos >= 3, TIMEOUT)
            assert impostor.state is LinkState.REFUSED
            assert (impostor.status, impostor.machine_id) == (None, None)
            assert impostor.error is not None
            assert impostor.error.code == "name_conflict"
            assert "already taken by another machine" in impostor.error.message
        after = mixer.registry.list()
        assert [(r.machine_id, r.status, r.public_key) for r in after] == [
            (r.machine_id, r.status, r.public_key) for r in before
        ]
        assert [(r.machine_id, r.public_key) for r in after] == [(1, "key-a")]
    refusals = [r for r in caplog.records if "refused this rack's hello" in r.message]
    assert len(refusals) >= 3
    assert [r.levelno for r in refusals].count(logging.ERROR) == 1  # repeats at DEBUG


async def _hello_reply(nc: Client, payload: bytes) -> dict[str, Any]:
    msg = await nc.request(HELLO_SUBJECT, payload, timeout=TIMEOUT)
    reply: dict[str, Any] = json.loads(msg.data)
    return reply


@pytest.mark.parametrize(
    ("payload", "code", "words"),
    [
        (b"not json", "bad_request", "hello is not JSON"),
        (b"\xff\xfe", "bad_request", "hello is not JSON"),
        (b"[1, 2]", "bad_request", "must be a JSON object, got list"),
        (b'{"version": "1"}', "bad_request", "field 'name' is missing"),
        (b'{"name": 5}', "bad_request", "field 'name'"),
        (b'{"name": "edge 1"}', "bad_name", "invalid rack name 'edge 1'"),
        (b'{"name": "edge.1"}', "bad_name", "invalid rack name 'edge.1'"),
        (b'{"name": "e", "attributes": [1]}', "bad_request", "field 'attributes'"),
        (b'{"name": "e", "p": "' + b"x" * 70_000 + b'"}', "bad_request", "the limit is 65536"),
    ],
    ids=["text", "binary", "list", "no-name", "int-name", "space", "dot", "attrs", "huge"],
)
async def test_malformed_hellos_get_error_replies(
    tmp_path: Path, payload: bytes, code: str, words: str
) -> None:
    async with running_mixer(tmp_path / "m") as mixer:
        nc = await nats.connect(mixer.nats_url)
        try:
            reply = await _hello_reply(nc, payload)
            assert reply["error"]["code"] == code
            assert words in reply["error"]["message"]
            # garbage heartbeats too: the service keeps working
            await nc.publish(heartbeat_subject("edge-1"), payload)
            good = await _hello_reply(nc, b'{"name": "edge-1"}')
            assert (good["status"], good["machine_id"]) == ("pending", 1)
        finally:
            await nc.close()
        assert [r.name for r in mixer.registry.list()] == ["edge-1"]


async def test_heartbeats_of_unknown_and_retired_racks_are_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fluxrig.mixer.enrollment")
    beat = {"name": "ghost", "ts": 1.0, "stats": {"cpu_percent": 1.0}}
    async with running_mixer(tmp_path / "m") as mixer:
        nc = await nats.connect(mixer.nats_url)
        try:
            for _ in range(3):
                await nc.publish(heartbeat_subject("ghost"), json.dumps(beat).encode())
            await until(lambda: any("unknown rack 'ghost'" in r.message for r in caplog.records))
            assert mixer.registry.list() == []

            await _hello_reply(nc, b'{"name": "old"}')
            await asyncio.to_thread(mixer.registry.retire, "old")
            beat["name"] = "old"
            await nc.publish(heartbeat_subject("old"), json.dumps(beat).encode())
            await until(lambda: any("'old' was retired" in r.message for r in caplog.records))
            record = mixer.registry.get("old")
            assert (record.status, record.stats) == (RackStatus.RETIRED, {})
            reply = await _hello_reply(nc, b'{"name": "old"}')
            assert reply["error"]["code"] == "retired"
        finally:
            await nc.close()
    ghosts = [r for r in caplog.records if "unknown rack 'ghost'" in r.message]
    assert len(ghosts) == 1  # rate-limited


async def test_link_waits_for_a_mixer_that_is_not_there_yet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fluxrig.link")
    port = free_port()
    async with link(f"nats://127.0.0.1:{port}", "edge-1") as rack:
        await rack.wait_until(lambda k: k.state is LinkState.UNREACHABLE, TIMEOUT)
        await until(lambda: sum("cannot reach" in r.message for r in caplog.records) >= 3)
        assert (rack.status, rack.hellos) == (None, 0)
        async with running_mixer(tmp_path / "m", nats_port=port) as mixer:
            await rack.wait_until(lambda k: k.state is LinkState.ENROLLED, TIMEOUT)
            assert (rack.status, rack.machine_id) == ("pending", 1)
            assert mixer.registry.get("edge-1").status is RackStatus.PENDING
    unreachable = [r for r in caplog.records if "cannot reach" in r.message]
    assert [r.levelno for r in unreachable].count(logging.WARNING) == 1  # logged once


# -- the real `fluxrig run --mixer-url` ----------------------------------------------------------
# (serving the scenario the mixer pushes: tests/mixer/test_orchestrator.py)

ECHO = """\
meta: {name: echo-enrolled, version: 1.0.0}
gears:
  - {name: gw, type: io_tcp, config: {mode: server, bind: "127.0.0.1:0", framing: delimiter}}
wires:
  - {from: gw.out, to: gw.in, transport: memory}
"""


async def test_fluxrig_run_refuses_a_scenario_file_together_with_mixer_url(tmp_path: Path) -> None:
    scenario = tmp_path / "echo.yaml"
    scenario.write_text(ECHO)
    proc = RackProcess(scenario, "--mixer-url", "nats://127.0.0.1:1")
    await proc.start()
    try:
        assert await proc.wait() == 1
        assert "--mixer-url and a SCENARIO file" in proc.log()
        assert "drop one of them" in proc.log()
    finally:
        await proc.close()


async def test_rest_adoption_is_announced_to_the_rack_at_once(tmp_path: Path) -> None:
    import aiohttp

    async with running_mixer(tmp_path / "mixer") as mixer:
        mixer.registry.hello("edge-rest", version="test")
        async with observer(mixer.nats_url, status_subject("edge-rest")) as statuses:
            async with aiohttp.ClientSession() as http:
                url = f"{mixer.api_url}/api/v1/racks/edge-rest/adopt"
                async with http.post(url) as reply:
                    assert reply.status == 200
            update = await next_status(statuses, "active")  # not waiting for a heartbeat
            assert update["machine_id"] == mixer.registry.get("edge-rest").machine_id


async def test_enrollment_feeds_the_grpc_watch_without_waiting_for_its_poll(
    tmp_path: Path,
) -> None:
    async with running_mixer(tmp_path / "mixer") as mixer:
        watch = mixer._watch
        assert watch is not None
        watch.poll_interval = 3600  # only what enrollment publishes can arrive in time
        subscribed = asyncio.Event()

        async def ready() -> None:
            subscribed.set()

        changes = watch.changes(include_current=False, subscribed=ready)
        first = asyncio.ensure_future(anext(changes))
        await subscribed.wait()
        async with link(mixer.nats_url, "edge-watch") as rack:
            change = await asyncio.wait_for(first, TIMEOUT)  # a new rack: pending
            assert (change.record.name, change.record.status) == ("edge-watch", RackStatus.PENDING)
            await rack.wait_until(lambda k: k.state is LinkState.ENROLLED, TIMEOUT)
            await mixer._rack_changed(mixer.registry.adopt("edge-watch"))  # as REST adopt does
            change = await asyncio.wait_for(anext(changes), TIMEOUT)
            assert change.record.status is RackStatus.ACTIVE
            assert change.previous is RackStatus.PENDING
        await changes.aclose()
