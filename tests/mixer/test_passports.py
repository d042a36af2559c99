"""Passports end to end: a real Mixer (hub, PKI, passport office) and managed racks with their
own keys; bootstrap tokens; Sovereign Continuity (a rack restarts on its passport with the mixer
gone); passports refused at boot. The last test kills a real mixer process while a real rack
process serves TCP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mixer.app import Mixer
from mixer.settings import MixerSettings
from rack.link import LinkState
from rack.link.identity import PASSPORT, RackIdentity
from rack.model.passport import Passport, write_passport
from tests.e2e.rackproc import RackProcess
from tests.mixer.fleet import TIMEOUT, clean_environment, managed, scenario, store, until
from tests.mixer.test_mixer_cli import MixerProcess

BOOTSTRAP = "bootstrap-token-for-passports"
API_TOKEN = "api-token-for-passport-tests"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_environment(monkeypatch, tmp_path)


def secure_settings(state: Path, **enrollment: Any) -> MixerSettings:
    return MixerSettings.model_validate(
        {
            "mixer": {"state_dir": state},
            "hub": {"port": 0, "leafnodes": False},
            "api": {"port": 0, "grpc_port": 0, "auth_token": API_TOKEN},
            "telemetry": {"grpc_port": 0, "http_port": 0},
            "enrollment": {
                "heartbeat_interval": 0.1,
                "max_missed": 50,
                "bootstrap_token": BOOTSTRAP,
                **enrollment,
            },
            "orchestrator": {"apply_timeout": 10.0, "push_retry": 0.5},
        }
    )


async def test_wrong_or_missing_bootstrap_token_is_refused(tmp_path: Path) -> None:
    async with Mixer(secure_settings(tmp_path / "m")) as mixer:
        for token in (None, "not-the-token-at-all"):
            async with managed(mixer.nats_url, "edge-x", tmp_path, token=token) as edge:
                await edge.link.wait_until(lambda link: link.state is LinkState.REFUSED, TIMEOUT)
                assert edge.link.error is not None
                assert edge.link.error.code == "unauthorized"
                assert "bootstrap token" in edge.link.error.message
                assert BOOTSTRAP not in edge.link.error.message
        assert mixer.registry.list() == []  # nothing enrolled


async def test_an_adopted_rack_gets_a_passport_and_restarts_on_it_without_the_mixer(
    tmp_path: Path,
) -> None:
    async with Mixer(secure_settings(tmp_path / "m")) as mixer:
        digest = store(mixer, "echo", scenario("echo", "gw", racks=("edge-1",)))
        await mixer.orchestrator.activate("echo:1.0.0")
        async with managed(
            mixer.nats_url, "edge-1", tmp_path, token=BOOTSTRAP, identity=True
        ) as edge:
            await until(lambda: edge.running({"gw"}))  # adopted at hello: named by the scenario
            # A passport comes at adoption, another once the rack applied the scenario: wait for
            # the one that carries it (the first may still be in hand).
            await until(
                lambda: edge.link.passport is not None and edge.link.passport.scenario is not None
            )
            passport = edge.link.passport
            assert passport is not None
            record = mixer.registry.get("edge-1")
            assert (passport.machine_id, passport.entity_id) == (
                record.machine_id,
                record.entity_id,
            )
            assert passport.scenario is not None
            assert passport.scenario.digest == digest
            assert passport.cert is not None
            assert mixer.pki is not None
            assert mixer.pki.verify_client_cert(passport.cert) == "edge-1"  # signed from its CSR
            assert passport.mixer_key == mixer.pki.signing_public_raw
        state = tmp_path / "edge-1" / PASSPORT
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
    # The mixer is gone: the rack restarts and serves its scenario from the passport.
    async with managed("nats://127.0.0.1:1", "edge-1", tmp_path, identity=True) as edge:
        assert edge.running({"gw"})
        assert edge.agent.digest == digest
        assert edge.rack.ids.machine_id == passport.machine_id


async def test_the_passport_follows_a_new_activation(tmp_path: Path) -> None:
    async with Mixer(secure_settings(tmp_path / "m")) as mixer:
        store(mixer, "v1", scenario("v1", "gw", racks=("edge-1",)))
        await mixer.orchestrator.activate("v1:1.0.0")
        async with managed(
            mixer.nats_url, "edge-1", tmp_path, token=BOOTSTRAP, identity=True
        ) as edge:
            await until(lambda: edge.link.passport is not None)
            v2 = store(mixer, "v2", scenario("v2", "gw", "extra", racks=("edge-1",)))
            await mixer.orchestrator.activate("v2:1.0.0")

            def renewed() -> bool:
                held = edge.link.passport
                return (
                    held is not None and held.scenario is not None and (held.scenario.digest == v2)
                )

            await until(renewed)


# -- refused at boot ------------------------------------------------------------------------------


async def _enrolled_passport(tmp_path: Path) -> tuple[Passport, Ed25519PrivateKey]:
    """Enroll edge-1 once (its identity and a passport on disk); the mixer's signing key."""
    async with Mixer(secure_settings(tmp_path / "m")) as mixer:
        store(mixer, "echo", scenario("echo", "gw", racks=("edge-1",)))
        await mixer.orchestrator.activate("echo:1.0.0")
        async with managed(
            mixer.nats_url, "edge-1", tmp_path, token=BOOTSTRAP, identity=True
        ) as edge:
            await until(lambda: edge.link.passport is not None)
            passport = edge.link.passport
            assert mixer.pki is not None
            key = mixer.pki.signing_key
    assert passport is not None
    return passport, key


def _resign(passport: Passport, key: Ed25519PrivateKey, **changes: Any) -> bytes:
    fields = {f: getattr(passport, f) for f in Passport.__dataclass_fields__}
    return Passport(**(fields | changes)).sign(key)


@pytest.mark.parametrize("damage", ["tampered", "forged", "expired"])
async def test_a_bad_passport_is_refused_at_boot_with_a_clear_message(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    passport, key = await _enrolled_passport(tmp_path)
    path = tmp_path / "edge-1" / PASSPORT
    now = int(time.time())
    if damage == "tampered":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        write_passport(path, bytes(data))
        expected = "forged or tampered"
    elif damage == "forged":
        other = Ed25519PrivateKey.generate()
        raw = other.public_key().public_bytes_raw()
        write_passport(path, _resign(passport, other, mixer_key=raw))
        expected = "trusts"  # signed by another key than the pinned one
    else:
        write_passport(path, _resign(passport, key, issued_at=now - 7200, expires_at=now - 60))
        expected = "expired"
    identity = RackIdentity.load(path.parent, "edge-1")
    with pytest.raises(Exception, match=expected):
        identity.passport(now=time.time())
    # The rack process refuses it at boot, says why, and runs nothing (waits for the mixer).
    proc = RackProcess(
        None, "--state-dir", str(path.parent), "--mixer-url", "nats://127.0.0.1:1",
        env={"FLUXRIG_NAME": "edge-1"},
    )  # fmt: skip
    await proc.start()
    try:
        line = await proc.wait_for(r"passport rejected at boot: (.*)")
        assert expected in line.group(1)
        await proc.wait_for(r"cannot reach the mixer")
        assert "listening on" not in proc.log()
    finally:
        await proc.close()


# -- the real processes: kill the mixer under traffic -------------------------------------------


class EchoTraffic:
    """Request/reply on one TCP connection, one at a time, until stopped; counts failures."""

    def __init__(self, port: int) -> None:
        self.port, self.sent, self.failed = port, 0, 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            while not self._stopping:
                payload = f"req-{self.sent}\n".encode()
                writer.write(payload)
                try:
                    async with asyncio.timeout(5):  # not wait_for: it can swallow a cancel
                        reply = await reader.readline()
                except TimeoutError:
                    reply = b""
                self.sent += 1
                self.failed += reply != payload
        finally:
            writer.close()

    async def stop(self) -> None:
        """Finish the request in flight and stop; a connection error fails the test here."""
        assert self._task is not None
        self._stopping = True
        async with asyncio.timeout(10):
            await self._task


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


async def test_killing_the_mixer_fails_no_request_and_the_rack_comes_back_active(
    tmp_path: Path,
) -> None:
    hub_port, leaf_port, echo_port = _free_port(), _free_port(), _free_port()
    env = {
        **os.environ,
        "FLUXRIG_API_TOKEN": API_TOKEN,
        "FLUXRIG_BOOTSTRAP_TOKEN": BOOTSTRAP,
        "FLUXRIG_ENROLLMENT_HEARTBEAT_INTERVAL": "0.2",
        "FLUXRIG_HUB_LEAFNODE_PORT": str(leaf_port),  # the Snake: the rack is a leaf node
        "FLUXRIG_TELEMETRY_GRPC_PORT": "0",
        "FLUXRIG_TELEMETRY_HTTP_PORT": "0",
    }
    path = tmp_path / "echo.yaml"
    path.write_text(scenario("echo", f"gw@@127.0.0.1:{echo_port}", racks=("edge-1",)))
    args = (
        "--state-dir", str(tmp_path / "m"), "--nats-port", str(hub_port), "--api-port", "0",
        "--grpc-port", "0", "-s", str(path),
    )  # fmt: skip
    rack = RackProcess(
        None, "--state-dir", str(tmp_path / "edge-1"), "--mixer-url",
        f"nats://127.0.0.1:{hub_port}",
        env={"FLUXRIG_NAME": "edge-1", "FLUXRIG_BOOTSTRAP_TOKEN": BOOTSTRAP,
             "FLUXRIG_NATS_PORT": "0"},
    )  # fmt: skip
    traffic = EchoTraffic(echo_port)
    try:
        async with MixerProcess(*args, cwd=tmp_path, env=env) as mixer:
            await mixer.wait_for(r"mixer ready")
            await rack.start()
            try:
                await rack.wait_for(r"listening on 127\.0\.0\.1:\d+")
            except AssertionError as exc:  # the mixer's side of the story too
                raise AssertionError(f"{exc}\n--- mixer log ---\n{mixer.log()}") from None
            mid = int((await rack.wait_for(r"passport kept \(machine id (\d+)")).group(1))
            traffic.start()
            await until(lambda: traffic.sent > 50)
            assert await mixer.stop(signal.SIGKILL) == -signal.SIGKILL  # no goodbye
        await rack.wait_for(r"lost the connection to the mixer")
        sent = traffic.sent
        await until(lambda: traffic.sent > sent + 200)  # serving on, mixer gone
        async with MixerProcess(*args, cwd=tmp_path, env=env) as mixer:
            await mixer.wait_for(r"mixer ready")
            start = len(rack.lines)
            line = await rack.wait_for(
                r"enrolled with the mixer as 'edge-1' \(machine id (\d+), status (\w+)\)",
                start=start,
            )
            assert (int(line.group(1)), line.group(2)) == (mid, "active")
            await until(lambda: traffic.sent > sent + 400)
        await traffic.stop()
        assert traffic.failed == 0
        assert "scenario 'echo' applied" in rack.log()
        assert rack.log().count("listening on 127.0.0.1") == 1  # never restarted its gear
        assert "Snake opened: leaf node of the hub at tls://127.0.0.1:" in rack.log()
    finally:
        await rack.close()


async def test_garbage_on_the_rack_subjects_is_refused_and_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import nats

    from rack.link.protocol import applied_subject, passport_subject, scenario_subject

    async with Mixer(secure_settings(tmp_path / "m")) as mixer:
        digest = store(mixer, "echo", scenario("echo", "gw", racks=("edge-1",)))
        await mixer.orchestrator.activate("echo:1.0.0")
        async with managed(
            mixer.nats_url, "edge-1", tmp_path, token=BOOTSTRAP, identity=True
        ) as edge:
            await until(lambda: edge.running({"gw"}) and edge.link.passport is not None)
            held, pushes = edge.link.passport, edge.link.pushes
            nc = await nats.connect(mixer.nats_url)
            try:
                for subject in (scenario_subject("edge-1"), passport_subject("edge-1")):
                    for junk in (b"", b"\xff\x00garbage", b'{"activation": "x"}'):
                        await nc.publish(subject, junk)
                await nc.publish(applied_subject("edge-1"), b"not json")
                await nc.publish(applied_subject("edge-1"), b'{"name": "edge-2"}')
                await nc.flush()
            finally:
                await nc.close()
            await until(lambda: "refused a passport from the mixer" in caplog.text)
            await until(lambda: "malformed scenario push" in caplog.text)
            assert edge.link.passport is held  # the good passport is kept
            assert edge.link.pushes == pushes  # nothing was taken for a push
            assert edge.running({"gw"})
            assert edge.agent.digest == digest
            # The mixer still activates and the rack still applies.
            v2 = store(mixer, "v2", scenario("v2", "gw", "more", racks=("edge-1",)))
            result = await mixer.orchestrator.activate("v2:1.0.0")
            assert [(o.rack, o.state) for o in result.racks] == [("edge-1", "applied")]
            assert edge.agent.digest == v2


async def test_a_hello_with_a_bad_csr_is_refused_naming_the_field(tmp_path: Path) -> None:
    import json

    import nats

    from rack.link.protocol import HELLO_SUBJECT
    from rack.model.passport import generate_rack_key_and_csr

    _, other = generate_rack_key_and_csr("someone-else")
    cases = {
        "not a csr": "is not a PEM certificate request",
        other.decode(): "names ['someone-else'], not the rack 'edge-1'",
    }
    async with Mixer(secure_settings(tmp_path / "m")) as mixer:
        nc = await nats.connect(mixer.nats_url)
        try:
            for csr, expected in cases.items():
                hello = {"name": "edge-1", "token": BOOTSTRAP, "csr": csr}
                reply = await nc.request(HELLO_SUBJECT, json.dumps(hello).encode(), timeout=5)
                error = json.loads(reply.data)["error"]
                assert error["code"] == "bad_request"
                assert "field 'csr'" in error["message"]
                assert expected in error["message"]
        finally:
            await nc.close()
        assert mixer.registry.list() == []  # nothing enrolled with a CSR it cannot certify
