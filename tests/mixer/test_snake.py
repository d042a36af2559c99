"""The Snake end to end: real hub and rack nats-servers, real certificates, real mTLS.

A rack's embedded nats-server is a leaf node of the mixer's hub, mapped by its certificate to a
NATS user that may use only its own subjects. These tests check the refusals the security model
rests on: no certificate, another CA's certificate, a revoked one; a pending rack (anonymous on
the client port) cannot publish data; rack A cannot read rack B's subjects nor speak as B.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import nats
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from nats.aio.client import Client

from mixer.app import Mixer
from rack.link import MixerLink
from rack.link.enrollment import LinkState
from rack.link.identity import RackIdentity
from rack.link.protocol import heartbeat_subject, scenario_subject
from rack.link.snake import Snake
from rack.natsd import LeafRemote, NatsServer, NatsServerConfig, TlsFiles
from rack.settings import RackSettings
from tests.mixer.fleet import managed, mixer_settings, until

TIMEOUT = 20.0


@dataclass
class SnakeRack:
    identity: RackIdentity
    snake: Snake
    link: MixerLink


@contextlib.asynccontextmanager
async def snake_rack(mixer: Mixer, name: str, base: Path) -> AsyncIterator[SnakeRack]:
    """A managed rack's link and Snake (what `fluxrig run --mixer-url` assembles), no gears."""
    settings = RackSettings(state_dir=base / name, nats_port=0)
    identity = await asyncio.to_thread(RackIdentity.load, settings.state_dir, name)
    async with Snake(settings, identity) as snake:
        link = MixerLink(
            mixer.rack_url, name, identity=identity, snake=snake,
            backoff_initial=0.05, backoff_max=0.2, request_timeout=2.0,
        )  # fmt: skip
        async with link:
            yield SnakeRack(identity, snake, link)


async def rack_action(mixer: Mixer, name: str, verb: str) -> None:
    """An operator's POST /api/v1/racks/{name}/{verb} (adopt, retire, …)."""
    url = f"{mixer.api_url}/api/v1/racks/{name}/{verb}"
    async with aiohttp.ClientSession() as http, http.post(url) as resp:
        assert resp.status == 200, await resp.text()


async def certified(mixer: Mixer, rack: SnakeRack) -> None:
    """Enrolled (pending), adopted by the operator, then on its Snake."""
    await until(lambda: rack.link.status == "pending", TIMEOUT)
    await rack_action(mixer, rack.identity.name, "adopt")
    await on_snake(rack)


async def on_snake(rack: SnakeRack) -> None:
    await until(
        lambda: rack.snake.hub_up and rack.link.via_snake and rack.link.state is LinkState.ENROLLED,
        TIMEOUT,
    )


async def hub_said(mixer: Mixer, pattern: str, before: set[str]) -> str:
    """Wait for a hub log line matching `pattern` that is not in `before` (the lines then)."""
    regex = re.compile(pattern)
    found: list[str] = []

    def seen() -> bool:
        found[:] = [x for x in mixer.hub.log_lines if regex.search(x) and x not in before]
        return bool(found)

    await until(seen, TIMEOUT)
    return found[0]


class Inbox:
    """What a NATS subscription received, and the client's errors."""

    def __init__(self) -> None:
        self.subjects: list[str] = []
        self.errors: list[str] = []

    async def got(self, msg: nats.aio.msg.Msg) -> None:
        self.subjects.append(msg.subject)

    async def error(self, exc: Exception) -> None:
        self.errors.append(str(exc))


async def probe(publisher: Client, receiver: Inbox, subject: str) -> None:
    """Publish on an allowed `subject` and wait until it arrived: everything published before
    it on the same path had its chance to arrive too (NATS keeps order per connection)."""
    await publisher.publish(subject, b"probe")
    await publisher.flush()
    await until(lambda: subject in receiver.subjects, TIMEOUT)


# -- certified racks -----------------------------------------------------------------------------


async def test_an_adopted_rack_opens_its_snake_and_enrolls_through_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fluxrig.link")
    async with (
        Mixer(mixer_settings(tmp_path / "m")) as mixer,
        snake_rack(mixer, "edge-1", tmp_path) as edge,
    ):
        await until(lambda: edge.link.status == "pending", TIMEOUT)
        assert not edge.snake.is_open  # pending: no certificate, hellos only
        assert not (tmp_path / "edge-1" / "rack.crt").exists()
        await rack_action(mixer, "edge-1", "adopt")
        await on_snake(edge)
        cert = x509.load_pem_x509_certificate(edge.identity.cert_path.read_bytes())
        assert cert.public_key() == edge.identity.key.public_key()
        assert mixer.hub.leaf_connected
        user = f"{cert.serial_number:x}.edge-1.rack.fluxrig"
        assert any(user in line for line in mixer.hub.log_lines) or mixer.access.reloads >= 1
        beats = edge.link.heartbeats
        await until(lambda: edge.link.heartbeats > beats + 2, TIMEOUT)
        await until(lambda: mixer.registry.get("edge-1").last_seen is not None, TIMEOUT)
    # A new leaf takes a moment to connect and learn the hub's interest: not worth a warning.
    warned = [r.getMessage() for r in caplog.records
              if r.name == "fluxrig.link" and r.levelno >= logging.WARNING]  # fmt: skip
    assert not any("Snake" in m or "did not take" in m for m in warned), warned


async def test_a_leaf_without_a_certificate_is_refused(tmp_path: Path) -> None:
    async with Mixer(mixer_settings(tmp_path / "m")) as mixer:
        before = set(mixer.hub.log_lines)
        remote = LeafRemote(url=f"tls://127.0.0.1:{mixer.hub.leafnode_port}")
        config = NatsServerConfig(port=0, store_dir=tmp_path / "intruder", leaf_remotes=[remote])
        async with NatsServer(config) as intruder:
            await hub_said(mixer, r"(?i)leafnode.*(tls|certificate|handshake)", before)
            assert not intruder.leaf_connected
            assert not mixer.hub.leaf_connected


async def test_a_certificate_of_another_ca_is_refused(tmp_path: Path) -> None:
    files = _foreign_certificate(tmp_path / "foreign", "edge-1")
    async with Mixer(mixer_settings(tmp_path / "m")) as mixer:
        before = set(mixer.hub.log_lines)
        tls = TlsFiles(cert=files[0], key=files[1], ca=mixer.pki.ca_path)  # type: ignore[union-attr]
        remote = LeafRemote(url=f"tls://127.0.0.1:{mixer.hub.leafnode_port}", tls=tls)
        config = NatsServerConfig(port=0, store_dir=tmp_path / "intruder", leaf_remotes=[remote])
        async with NatsServer(config) as intruder:
            await hub_said(mixer, r"(?i)leafnode.*(tls|certificate|handshake|authority)", before)
            assert not intruder.leaf_connected
            assert not mixer.hub.leaf_connected


async def test_a_retired_rack_is_killed_revoked_and_refused(tmp_path: Path) -> None:
    async with Mixer(mixer_settings(tmp_path / "m")) as mixer:
        async with snake_rack(mixer, "edge-1", tmp_path) as edge:
            await certified(mixer, edge)
            cert_path = edge.identity.cert_path
            kept = (cert_path.read_bytes(), edge.identity.ca_path.read_bytes())
            await rack_action(mixer, "edge-1", "retire")
            await until(lambda: edge.link.killed and edge.link.status == "retired", TIMEOUT)
            await until(lambda: not mixer.hub.leaf_connected, TIMEOUT)  # the Snake is closed
            assert not cert_path.exists()
            assert not edge.identity.passport_path.exists()
        # The revoked certificate, presented again by hand, is refused by the hub …
        key = tmp_path / "edge-1" / "rack.key"
        (tmp_path / "old.crt").write_bytes(kept[0])
        (tmp_path / "ca.crt").write_bytes(kept[1])
        tls = TlsFiles(cert=tmp_path / "old.crt", key=key, ca=tmp_path / "ca.crt")
        remote = LeafRemote(url=f"tls://127.0.0.1:{mixer.hub.leafnode_port}", tls=tls)
        before = set(mixer.hub.log_lines)
        config = NatsServerConfig(port=0, store_dir=tmp_path / "again", leaf_remotes=[remote])
        async with NatsServer(config) as again:
            await hub_said(mixer, r"lid:\d+ - authentication error", before)
            assert not again.leaf_connected
        # … and its key is on the revocation list: no new hello with it.
        async with snake_rack(mixer, "edge-1", tmp_path) as back:
            await until(lambda: back.link.error is not None, TIMEOUT)
            assert back.link.error is not None
            assert back.link.error.code in ("revoked", "retired")
            assert not back.snake.is_open


# -- permissions ---------------------------------------------------------------------------------


async def test_a_pending_rack_cannot_publish_data_nor_read_other_racks(tmp_path: Path) -> None:
    async with Mixer(mixer_settings(tmp_path / "m")) as mixer:
        mixer_inbox, anon_inbox = Inbox(), Inbox()
        hub = await nats.connect(mixer.nats_url)
        anon = await nats.connect(mixer.rack_url, error_cb=anon_inbox.error)
        try:
            await hub.subscribe("flux.>", cb=mixer_inbox.got)
            await hub.subscribe("fluxrig.>", cb=mixer_inbox.got)
            await hub.flush()
            for subject in (
                "flux.x.edge-2.s.g.out",
                "flux.msg.s.g.out",
                "fluxrig.event.heartbeat.x",
            ):
                await anon.publish(subject, b"data")
            await anon.flush()
            await until(lambda: len(anon_inbox.errors) >= 3, TIMEOUT)
            assert all("ermissions" in e for e in anon_inbox.errors), anon_inbox.errors
            await anon.subscribe("fluxrig.rack.>", cb=anon_inbox.got)  # refused by the hub
            await anon.flush()
            await until(lambda: any("subscription" in e.lower() for e in anon_inbox.errors))
            await hub.publish("fluxrig.rack.edge-2.scenario", b"{}")
            await probe(hub, mixer_inbox, "fluxrig.event.heartbeat.probe")
            assert not [s for s in mixer_inbox.subjects if s.startswith("flux.")]
            assert "fluxrig.event.heartbeat.x" not in mixer_inbox.subjects
            assert anon_inbox.subjects == []
        finally:
            await anon.close()
            await hub.close()


async def test_rack_a_cannot_read_nor_speak_for_rack_b(tmp_path: Path) -> None:
    async with (
        Mixer(mixer_settings(tmp_path / "m")) as mixer,
        snake_rack(mixer, "edge-a", tmp_path) as a,
        snake_rack(mixer, "edge-b", tmp_path) as b,
    ):
        await certified(mixer, a)
        await certified(mixer, b)
        local_a = await nats.connect(a.snake.url)  # anyone on rack A's own server
        hub = await nats.connect(mixer.nats_url)
        got_a, got_hub = Inbox(), Inbox()
        try:
            await local_a.subscribe("fluxrig.rack.>", cb=got_a.got)
            await local_a.subscribe("flux.ctrl.>", cb=got_a.got)
            await hub.subscribe("fluxrig.event.>", cb=got_hub.got)
            await local_a.flush()
            await hub.flush()
            # Rack B's subjects never reach rack A …
            await until(lambda: a.snake.hub_up, TIMEOUT)
            await hub.publish(scenario_subject("edge-b"), b"{}")
            await hub.publish("flux.ctrl.edge-b.kill", b"{}")
            await probe(hub, got_a, "fluxrig.rack.edge-a.probe")
            assert [s for s in got_a.subjects if "edge-b" in s] == []
            # … and rack A cannot speak as rack B.
            await local_a.publish(heartbeat_subject("edge-b"), b"{}")
            await probe(local_a, got_hub, heartbeat_subject("edge-a"))
            assert heartbeat_subject("edge-b") not in got_hub.subjects
        finally:
            await local_a.close()
            await hub.close()


def _foreign_certificate(directory: Path, rack: str) -> tuple[Path, Path]:
    """A client certificate for `rack`, shaped like the cluster's, signed by another CA."""
    directory.mkdir(parents=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, rack)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"1.{rack}.rack.fluxrig")]), False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "rack.crt", directory / "rack.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


# -- a cross-rack wire through the mixer ----------------------------------------------------------

CROSS = """\
meta: {name: cross, version: 1.0.0}
racks: [{name: edge-a}, {name: edge-b}]
gears:
  - {name: gen, type: generator, deploy: edge-a, config: {rate: 2000, count: 100}}
  - {name: sink, type: sink, deploy: edge-b}
wires:
  - {from: gen.out, to: sink.in, transport: standard}
"""


async def test_a_cross_rack_wire_travels_through_the_snakes_with_the_hubs_permissions(
    tmp_path: Path,
) -> None:
    async with Mixer(mixer_settings(tmp_path / "m")) as mixer:
        mixer.store.put("scenario", "cross", "1.0.0", CROSS.encode())
        await mixer.orchestrator.activate("cross:1.0.0")  # names both racks: adopted at hello
        async with (
            managed(mixer.rack_url, "edge-a", tmp_path, snake=True) as a,
            managed(mixer.rack_url, "edge-b", tmp_path, snake=True) as b,
        ):
            await until(lambda: a.running({"gen"}) and b.running({"sink"}), TIMEOUT)
            assert a.link.via_snake
            assert b.link.via_snake
            sink = b.rack.slots["sink"].gear
            assert sink is not None
            await until(lambda: getattr(sink, "count", 0) >= 100, TIMEOUT)
            # the hub granted exactly the wire's subject: edge-a publishes it, edge-b reads it
            grants = {g.rack: g.permissions for g in mixer.access.grants()}
            subject = "flux.x.edge-b.cross.gen.out"
            assert subject in grants["edge-a"].publish
            assert subject not in grants["edge-a"].subscribe
            assert subject in grants["edge-b"].subscribe
            assert "_INBOX.edge-a.>" in grants["edge-b"].publish  # its stream's PubAcks
