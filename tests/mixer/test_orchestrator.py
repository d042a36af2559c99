"""Scenario activation end to end: a real Mixer (hub, DuckDB, orchestrator, enrollment) and real
racks managed by it (Rack + MixerLink + ScenarioAgent) over NATS; the last test runs the real
`fluxrig run --mixer-url` process."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from mixer.app import Mixer
from mixer.errors import ActivationFailedError
from mixer.registry import RackStatus
from rack.errors import ScenarioError
from tests.e2e.rackproc import RackProcess
from tests.mixer.fleet import (
    TIMEOUT,
    ManagedRack,
    clean_environment,
    managed,
    mixer_settings,
    scenario,
    store,
    until,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_environment(monkeypatch, tmp_path)


# -- deferred adoption, projection, adoption by scenario ------------------------------------------


async def test_pending_rack_runs_no_gears_until_adopted_then_runs_the_active_scenario(
    tmp_path: Path,
) -> None:
    async with Mixer(mixer_settings(tmp_path / "m")) as mixer:
        digest = store(mixer, "echo", scenario("echo", "gw"))
        result = await mixer.orchestrator.activate("echo:1.0.0")  # no rack yet: at once
        assert (result.activation.state, result.racks) == ("active", ())
        async with managed(mixer.nats_url, "edge-1", tmp_path) as edge:
            await edge.link.wait_until(lambda link: link.status == "pending", TIMEOUT)
            assert edge.gears == set()
            assert edge.agent.digest is None
            await mixer._rack_changed(mixer.registry.adopt("edge-1"))  # what REST adopt calls
            await until(lambda: edge.running({"gw"}))
            assert edge.agent.digest == digest
            assert edge.rack.ids.machine_id == mixer.registry.get("edge-1").machine_id
            await until(lambda: _applied(mixer, "edge-1") == digest)
            (row,) = mixer.orchestrator.activations.provenance("edge-1")
            assert (row.last_state, row.activation, row.since is not None) == (
                "applied",
                result.activation.id,
                True,
            )


def _applied(mixer: Mixer, rack: str) -> str | None:
    rows = mixer.orchestrator.activations.provenance(rack)
    return rows[0].digest if rows and rows[0].last_state == "applied" else None


async def test_activation_projects_gears_by_deploy_and_adopts_the_racks_it_names(
    tmp_path: Path,
) -> None:
    async with (
        Mixer(mixer_settings(tmp_path / "m")) as mixer,
        managed(mixer.nats_url, "edge-a", tmp_path) as a,
        managed(mixer.nats_url, "edge-b", tmp_path) as b,
    ):
        await enrolled(a, b)
        text = scenario("split", "only-a@edge-a", "only-b@edge-b", "everywhere")
        digest = store(mixer, "split", text)
        result = await mixer.orchestrator.activate("split:1.0.0")
        assert sorted(result.adopted) == ["edge-a", "edge-b"]  # named by `deploy`: adopted
        assert {(o.rack, o.state) for o in result.racks} == {
            ("edge-a", "applied"),
            ("edge-b", "applied"),
        }
        assert a.gears == {"only-a", "everywhere"}
        assert b.gears == {"only-b", "everywhere"}
        assert a.agent.digest == b.agent.digest == digest
        assert mixer.registry.get("edge-a").status is RackStatus.ACTIVE


# -- last known good ------------------------------------------------------------------------------


async def test_a_failed_activation_puts_the_whole_fleet_back_on_the_last_known_good(
    tmp_path: Path,
) -> None:
    taken = socket.create_server(("127.0.0.1", 0))  # the port edge-b's new gear cannot bind
    port = taken.getsockname()[1]
    async with (
        Mixer(mixer_settings(tmp_path / "m")) as mixer,
        managed(mixer.nats_url, "edge-a", tmp_path) as a,
        managed(mixer.nats_url, "edge-b", tmp_path) as b,
    ):
        await enrolled(a, b)
        good = store(mixer, "v1", scenario("v1", "gw", racks=("edge-a", "edge-b")))
        first = await mixer.orchestrator.activate("v1:1.0.0")
        assert {o.state for o in first.racks} == {"applied"}
        store(mixer, "v2", scenario("v2", "gw", "new-a@edge-a", f"new-b@edge-b@127.0.0.1:{port}"))
        with pytest.raises(ActivationFailedError) as failed:
            await mixer.orchestrator.activate("v2:1.0.0")
        outcome = {o.rack: o for o in failed.value.result.racks}
        assert outcome["edge-a"].state == "applied"  # it took v2 ...
        assert outcome["edge-b"].state == "failed"
        assert "new-b" in (outcome["edge-b"].error or "")  # names the gear that did not start
        assert "edge-b" in str(failed.value)
        assert "back on" in str(failed.value)
        assert [o.rack for o in failed.value.result.rollback] == ["edge-a"]  # ... and went back
        assert failed.value.result.activation.state == "failed"
        # Both racks run v1 again: the same gears, the unchanged one never restarted.
        assert a.running({"gw"})
        assert b.running({"gw"})
        assert a.agent.digest == b.agent.digest == good
        active = mixer.orchestrator.activations.active()
        assert active is not None
        assert active.id == first.activation.id
        assert mixer.orchestrator.desired is not None
        assert mixer.orchestrator.desired.digest == good
    taken.close()


async def enrolled(*racks: ManagedRack) -> None:
    for edge in racks:
        await edge.link.wait_until(lambda link: link.status is not None, TIMEOUT)


async def test_a_rejected_scenario_is_never_pushed(tmp_path: Path) -> None:
    async with (
        Mixer(mixer_settings(tmp_path / "m")) as mixer,
        managed(mixer.nats_url, "edge-a", tmp_path) as a,
    ):
        await enrolled(a)
        good = store(mixer, "v1", scenario("v1", "gw", racks=("edge-a",)))
        await mixer.orchestrator.activate("v1:1.0.0")
        pushes = a.link.pushes
        bad = scenario("v2", "gw").replace("meta:", "spec: visa:9.9.9\nmeta:")
        store(mixer, "v2", bad)
        with pytest.raises(ScenarioError) as rejected:
            await mixer.orchestrator.activate("v2:1.0.0")
        assert [p.path for p in rejected.value.problems] == ["spec"]
        assert "visa:9.9.9" in str(rejected.value)
        history = mixer.orchestrator.activations.history()
        assert [h.state for h in history] == ["rejected", "active"]
        assert a.link.pushes == pushes
        assert a.agent.digest == good
        assert mixer.orchestrator.desired is not None
        assert mixer.orchestrator.desired.digest == good


async def test_an_activation_whose_caller_goes_away_still_finishes(tmp_path: Path) -> None:
    async with Mixer(mixer_settings(tmp_path / "m", apply_timeout=1.0)) as mixer:
        mixer.registry.adopt(mixer.registry.hello("edge-gone").name)  # active, never answers
        store(mixer, "v1", scenario("v1", "gw"))
        caller = asyncio.create_task(mixer.orchestrator.activate("v1:1.0.0"))
        history = mixer.orchestrator.activations.history
        await until(lambda: [h.state for h in history()] == ["activating"])
        caller.cancel()  # e.g. a gRPC deadline
        with pytest.raises(asyncio.CancelledError):
            await caller
        await until(lambda: [h.state for h in history()] == ["failed"])
        (record,) = history()
        assert "edge-gone" in (record.error or "")
        assert "did not answer" in (record.error or "")


# -- convergence ----------------------------------------------------------------------------------


async def test_suspend_stops_the_gears_and_resume_pushes_the_scenario_again(
    tmp_path: Path,
) -> None:
    async with (
        Mixer(mixer_settings(tmp_path / "m")) as mixer,
        managed(mixer.nats_url, "edge-a", tmp_path) as a,
    ):
        await enrolled(a)
        digest = store(mixer, "v1", scenario("v1", "gw", racks=("edge-a",)))
        await mixer.orchestrator.activate("v1:1.0.0")
        assert a.running({"gw"})
        await mixer._rack_changed(mixer.registry.suspend("edge-a"))
        await until(lambda: a.gears == set() and a.agent.digest is None)
        await mixer._rack_changed(mixer.registry.resume("edge-a"))
        await until(lambda: a.running({"gw"}) and a.agent.digest == digest)


async def test_mixer_restart_keeps_the_active_scenario(tmp_path: Path) -> None:
    state = tmp_path / "m"
    async with Mixer(mixer_settings(state)) as mixer:
        digest = store(mixer, "v1", scenario("v1", "gw"))
        first = await mixer.orchestrator.activate("v1:1.0.0")
    async with Mixer(mixer_settings(state)) as mixer:  # resumes: `-s` not given
        desired = mixer.orchestrator.desired
        assert desired is not None
        assert (desired.digest, desired.activation) == (digest, first.activation.id)
        mixer.registry.adopt(mixer.registry.hello("edge-new").name)
        async with managed(mixer.nats_url, "edge-new", tmp_path) as fresh:
            # pushed at its hello; the agent records the digest once its gears run
            await until(lambda: fresh.running({"gw"}) and fresh.agent.digest == digest)
            pushes = fresh.link.pushes
            heartbeats = fresh.link.heartbeats
            await fresh.link.wait_until(lambda link: link.heartbeats >= heartbeats + 5, TIMEOUT)
            assert fresh.link.pushes == pushes  # on the active scenario: not pushed again


async def test_startup_scenario_file_is_activated_and_racks_get_it_at_hello(
    tmp_path: Path,
) -> None:
    path = tmp_path / "startup.yaml"
    path.write_text(scenario("boot", "gw", racks=("edge-s",)))
    async with Mixer(mixer_settings(tmp_path / "m", startup_scenario=str(path))) as mixer:
        desired = mixer.orchestrator.desired
        assert desired is not None
        assert desired.ref is not None
        assert desired.ref.startswith("boot:file-")
        async with managed(mixer.nats_url, "edge-s", tmp_path) as edge:
            # Named by the active scenario: adopted at hello, then pushed.
            await until(lambda: edge.running({"gw"}))
            assert mixer.registry.get("edge-s").status is RackStatus.ACTIVE


# -- the real process ----------------------------------------------------------------------------


async def test_fluxrig_run_with_mixer_url_waits_pending_then_serves_the_pushed_scenario(
    tmp_path: Path,
) -> None:
    async with Mixer(mixer_settings(tmp_path / "m")) as mixer:
        proc = RackProcess(
            None, "--state-dir", str(tmp_path / "rack"), "--mixer-url", mixer.nats_url,
            env={"FLUXRIG_NAME": "edge-e2e"},
        )  # fmt: skip
        await proc.start()
        try:
            await proc.wait_for(r"rack 'edge-e2e' is pending: no gears run")
            store(mixer, "echo", scenario("echo", "gw", racks=("edge-e2e",)))
            result = await mixer.orchestrator.activate("echo:1.0.0")
            assert [(o.rack, o.state) for o in result.racks] == [("edge-e2e", "applied")]
            port = int((await proc.wait_for(r"listening on [\d.]+:(\d+)")).group(1))
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"ping\n")
            assert await reader.readline() == b"ping\n"
            writer.close()
            await writer.wait_closed()
        finally:
            await proc.close()


async def test_standard_tier_local_rack_enrolls_is_adopted_and_serves_the_scenario(
    tmp_path: Path,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # a free port for the echo gear (released just below)
    path = tmp_path / "echo.yaml"
    path.write_text(scenario("echo", f"gw@@127.0.0.1:{port}"))
    settings = mixer_settings(tmp_path / "m", startup_scenario=str(path), local_rack="local")
    async with Mixer(settings) as mixer:
        assert mixer.local_rack is not None
        desired = mixer.orchestrator.desired
        assert desired is not None
        await until(lambda: _applied(mixer, "local") == desired.digest, timeout=30)
        assert mixer.registry.get("local").status is RackStatus.ACTIVE  # trusted: adopted
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping\n")
        assert await reader.readline() == b"ping\n"
        writer.close()
        await writer.wait_closed()
        pid = mixer.local_rack.pid
        assert pid is not None
    with pytest.raises(ProcessLookupError):  # stopped with the mixer
        os.kill(pid, 0)
