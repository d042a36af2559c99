"""The hub's side of the Snake: who may connect to the NATS hub, and which subjects each may use.

    access = HubAccess(settings.hub, pki, registry, passports, store_dir=settings.hub_store)
    hub = NatsServer(access.config(await access.grants()))       # users rendered into the config
    await access.refresh(hub)                                     # after any change: SIGHUP reload

Users of the hub (nats-server `authorization`, re-rendered and reloaded on every change):

- `mixer`: client port, a random password kept in `<hub store>/mixer.secret` (0600, made once):
  every subject. Only the mixer's own services use it.
- `enroll` (anonymous, `no_auth_user`): client port, no credentials: publishes
  `fluxrig.agent.hello`, subscribes `_INBOX.*.*` (hello replies), nothing else.
- `<serial>.<rack>.rack.fluxrig`: leaf connections only, mTLS with the certificate whose DNS SAN
  it is (`verify_and_map`): the rack's own subjects (below).

A rack's own subjects: publish `fluxrig.agent.hello`, `fluxrig.event.*.<rack>` (heartbeats,
acks), `flux.telemetry.<rack>.>`, the data subjects of the cross-rack wires it feeds and replies
on the inboxes of the racks that feed it; subscribe `fluxrig.rack.<rack>.>` (status, scenario,
passport), `flux.ctrl.<rack>.>` (kill switch), `_INBOX.<rack>.>` (its replies) and the data
subjects of the cross-rack wires into it. A suspended rack keeps its control subjects but no data
subjects; pending, retired and unknown racks have no user at all, and a revoked certificate's user
is dropped (the hub closes its Snake at the reload).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from mixer.errors import MixerError
from mixer.pki import ClusterPki
from mixer.registry import RackRecord, RackStatus, Registry
from mixer.rollout import Desired
from mixer.settings import HubSection
from rack.errors import NatsServerError, ScenarioError
from rack.files import check_private, write_atomic
from rack.gear.registry import GearRegistry
from rack.link.protocol import HELLO_SUBJECT, inbox_prefix
from rack.natsd import NatsServer, NatsServerConfig, NatsUser, Permissions, TlsFiles
from rack.preflight import preflight_document
from rack.scenario_files import parse_document
from rack.wires.jetstream.names import cross_permissions

__all__ = [
    "ENROLL_USER",
    "MIXER_USER",
    "CrossGrant",
    "CrossWireGrants",
    "HubAccess",
    "rack_permissions",
]

log = logging.getLogger("fluxrig.mixer.snake")

SECRET_FILE = "mixer.secret"
MIXER_USER = "mixer"
ENROLL_USER = "enroll"
_WITH_USER = (RackStatus.ACTIVE, RackStatus.OFFLINE, RackStatus.SUSPENDED)


class Certificates(Protocol):
    """The rack certificates (`mixer.passports.PassportOffice`)."""

    def leaf_users(self) -> dict[str, list[str]]: ...

    def certificate_for(self, record: RackRecord) -> bytes | None: ...


@dataclass(frozen=True)
class CrossGrant:
    """The data subjects of one rack's cross-rack wires (from the active scenario)."""

    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()  # racks whose requests this rack answers (PubAcks)


@dataclass(frozen=True)
class RackGrant:
    rack: str
    users: tuple[str, ...]
    permissions: Permissions


@dataclass
class _Inputs:
    records: list[RackRecord] = field(default_factory=list)
    leaf_users: dict[str, list[str]] = field(default_factory=dict)


def rack_permissions(rack: str, *, data: bool, cross: CrossGrant | None = None) -> Permissions:
    """What rack `rack` may publish and subscribe through its Snake."""
    publish = [HELLO_SUBJECT, f"fluxrig.event.*.{rack}", f"flux.telemetry.{rack}.>"]
    subscribe = [f"fluxrig.rack.{rack}.>", f"flux.ctrl.{rack}.>", f"{inbox_prefix(rack)}.>"]
    if data and cross is not None:
        publish += list(cross.publish)
        publish += [f"{inbox_prefix(peer)}.>" for peer in cross.reply_to]
        subscribe += list(cross.subscribe)
    return Permissions(publish=tuple(dict.fromkeys(publish)), subscribe=tuple(subscribe))


def _internal_password(path: Path) -> SecretStr:
    """The mixer user's password: read, or made once (0600)."""
    try:
        with open(path, "rb") as fh:
            if problem := check_private(os.fstat(fh.fileno()), path, "hub password"):
                raise MixerError(problem)
            text = fh.read(1024).decode("ascii", "replace").strip()
        if text:
            return SecretStr(text)
    except FileNotFoundError:
        pass
    password = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, password.encode() + b"\n", mode=0o600)
    return SecretStr(password)


class CrossWireGrants:
    """The cross-rack wire subjects of scenarios, per rack (blocking: pre-flight, cached by
    digest). A scenario that no longer passes pre-flight grants nothing."""

    def __init__(self, gears: GearRegistry) -> None:
        self.gears = gears
        self._cache: dict[str, dict[str, CrossGrant]] = {}

    def grants(self, scenarios: Iterable[Desired | None]) -> dict[str, CrossGrant]:
        merged: dict[str, CrossGrant] = {}
        for desired in scenarios:
            if desired is None:
                continue
            for rack, grant in self._of(desired).items():
                old = merged.get(rack, CrossGrant())
                merged[rack] = CrossGrant(
                    publish=tuple(dict.fromkeys(old.publish + grant.publish)),
                    subscribe=tuple(dict.fromkeys(old.subscribe + grant.subscribe)),
                    reply_to=tuple(dict.fromkeys(old.reply_to + grant.reply_to)),
                )
        return merged

    def _of(self, desired: Desired) -> dict[str, CrossGrant]:
        cached = self._cache.get(desired.digest)
        if cached is not None:
            return cached
        source = desired.ref or desired.digest
        try:
            blueprint = preflight_document(parse_document(desired.document, source), self.gears)
        except ScenarioError as exc:
            log.warning("no cross-rack subjects for %s: %s", source, exc)
            return {}
        cached = {
            rack: CrossGrant(tuple(p.publish), tuple(p.subscribe), tuple(p.reply_to))
            for rack, p in cross_permissions(blueprint).items()
        }
        if len(self._cache) >= 8:
            self._cache.clear()
        self._cache[desired.digest] = cached
        return cached


class HubAccess:
    """Renders the hub's users (see the module doc) and reloads the hub when they change."""

    def __init__(
        self,
        settings: HubSection,
        pki: ClusterPki,
        registry: Registry,
        certificates: Certificates,
        *,
        store_dir: Path,
        cross: Callable[[], Mapping[str, CrossGrant]] | None = None,
    ) -> None:
        self.settings = settings
        self.pki = pki
        self.registry = registry
        self.store_dir = store_dir
        self.certificates = certificates
        self._cross = cross or dict
        self._password = _internal_password(store_dir / SECRET_FILE)
        self._lock = asyncio.Lock()
        self._current: tuple[RackGrant, ...] | None = None
        self.reloads = 0

    def internal_url(self, url: str) -> str:
        """`url` with the mixer's own credentials (for its services; never handed out)."""
        parts = urlsplit(url)
        netloc = f"{MIXER_USER}:{self._password.get_secret_value()}@{parts.netloc}"
        return urlunsplit(parts._replace(netloc=netloc))

    def grants(self) -> tuple[RackGrant, ...]:
        """Every rack user the hub should have now (blocking: registry and certificates)."""
        records = self.registry.list()
        users = self.certificates.leaf_users()
        cross = self._cross()
        grants = []
        for record in sorted(records, key=lambda r: r.name):
            certs = users.get(record.name)
            if record.status not in _WITH_USER or not certs:
                continue
            data = record.status is not RackStatus.SUSPENDED
            perms = rack_permissions(record.name, data=data, cross=cross.get(record.name))
            grants.append(RackGrant(record.name, tuple(certs), perms))
        return tuple(grants)

    def config(self, grants: tuple[RackGrant, ...]) -> NatsServerConfig:
        """The hub's nats-server configuration with these rack users."""
        hub = self.settings
        self._current = grants
        users = [
            NatsUser(user=MIXER_USER, password=self._password),
            NatsUser(
                user=ENROLL_USER,
                permissions=Permissions(publish=(HELLO_SUBJECT,), subscribe=("_INBOX.*.*",)),
            ),
        ]
        for grant in grants:
            users += [
                NatsUser(user=user, permissions=grant.permissions, connection_types=("LEAFNODE",))
                for user in grant.users
            ]
        tls = TlsFiles(
            cert=self.pki.hub_cert_path,
            key=self.pki.hub_key_path,
            ca=self.pki.ca_path,
            verify_and_map=True,
        )
        return NatsServerConfig(
            host=hub.host,
            port=hub.port,
            store_dir=self.store_dir,
            server_name="mixer",
            jetstream=True,
            domain="hub",
            leafnode_port=hub.leafnode_port if hub.leafnodes else None,
            leafnode_tls=tls if hub.leafnodes else None,
            users=users,
            no_auth_user=ENROLL_USER,
        )

    async def certify(self, record: RackRecord, hub: NatsServer | None) -> dict[str, Any] | None:
        """What the hello reply of an adopted rack carries to open the Snake: its certificate
        (issued from its CSR), the CA and the hub's leaf port; its hub user exists first."""
        if hub is None or hub.leafnode_port is None:
            return None
        if record.status not in (RackStatus.ACTIVE, RackStatus.SUSPENDED):
            return None
        cert = await asyncio.to_thread(self.certificates.certificate_for, record)
        if cert is None:
            return None
        await self.refresh(hub)
        return {
            "certificate": cert.decode(),
            "ca": self.pki.ca_pem.decode(),
            "leafnode_port": hub.leafnode_port,
        }

    async def initial(self) -> NatsServerConfig:
        return self.config(await asyncio.to_thread(self.grants))

    async def refresh(self, hub: NatsServer | None) -> bool:
        """Recompute the rack users; reload `hub` when they changed. Never raises: a failed
        reload is logged and the hub keeps its previous users."""
        if hub is None:
            return False
        async with self._lock:
            try:
                grants = await asyncio.to_thread(self.grants)
            except Exception:
                log.exception("cannot compute the hub's rack users")
                return False
            if grants == self._current:
                return False
            config = self.config(grants)
            try:
                await hub.reload(config)
            except NatsServerError as exc:
                log.error("the hub did not take the new rack users: %s", exc)
                self._current = None  # try again at the next change
                return False
            self.reloads += 1
            log.info(
                "hub access reloaded: %d rack(s) may open the Snake (%s)",
                len(grants), ", ".join(g.rack for g in grants) or "none",
            )  # fmt: skip
            return True
