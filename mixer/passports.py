"""The passport office: signs every active rack a passport and its client certificate.

    office = PassportOffice(pki, store, registry, gears, db, settings.enrollment, send=publish)
    await office.rack_seen(record, sighting)     # an enrollment observer: hellos and heartbeats

A passport (`rack.model.passport`) is the rack's signed identity and state: name, fluxEntityID,
MachineID, the cluster's signing key, the scenario the rack runs (digest and document) with the
spec texts it references, a client certificate for its key (from the CSR of its hello) and the
cluster CA, issued and expiry times. With it a rack restarts and runs its scenario while the
mixer is unreachable (Sovereign Continuity).

When: a rack that is `active` gets a new passport on `fluxrig.rack.<name>.passport` when its
hello or heartbeat says it has none, or one for another scenario than the one it runs, or one
with less than half of `[enrollment] passport_ttl` left. At most one per rack every
`REISSUE_AFTER` seconds (the rack's next heartbeat reports the new one). Racks that are not
active get none: a pending rack has no identity to prove yet.

Certificates: issued by the cluster CA from the rack's CSR (CN = its name), valid
`CERT_DAYS` days, kept in the `certificates` table (serial, rack, key, validity, revocation) and
reused until `CERT_RENEW_DAYS` before they expire or the rack presents another key. They are
also handed out in the hello reply of an adopted rack (`certificate_for`), so it can open the
Snake before it has a passport. `revoke(rack)` revokes every certificate of a rack: their keys
form the revocation list enrollment checks (`revoked_key`), and the hub drops their NATS users
(`leaf_users` lists only the valid ones).

Blocking work (DuckDB, signing, pre-flight) runs in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import duckdb
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mixer.certificates import leaf_user
from mixer.enrollment import Sighting
from mixer.errors import MixerError, PkiError
from mixer.migrations import Migration, apply_migrations
from mixer.pki import ClusterPki
from mixer.registry import RackRecord, RackStatus
from mixer.rollout import spec_refs
from mixer.settings import EnrollmentSection
from mixer.store import CasStore
from rack.errors import ScenarioError
from rack.gear.registry import GearRegistry
from rack.link.protocol import passport_subject
from rack.model.passport import Passport, PassportScenario
from rack.preflight import preflight_document
from rack.scenario_files import parse_document

__all__ = ["PassportOffice"]

log = logging.getLogger("fluxrig.mixer.passports")

Send = Callable[[str, bytes], Awaitable[None]]
REISSUE_AFTER = 10.0
CERT_DAYS = 90
CERT_RENEW_DAYS = 30

MIGRATIONS = (
    Migration(
        1,
        "certificates issued to racks",
        (
            """CREATE TABLE certificates (
                serial     TEXT PRIMARY KEY,
                rack       TEXT NOT NULL,
                public_key TEXT NOT NULL,
                issued_at  TIMESTAMP NOT NULL,
                not_after  TIMESTAMP NOT NULL,
                revoked_at TIMESTAMP,
                pem        TEXT NOT NULL
            )""",
        ),
    ),
)


class PassportOffice:
    """Issues passports (see the module doc); `close()` is idempotent."""

    def __init__(
        self,
        pki: ClusterPki,
        store: CasStore,
        gears: GearRegistry,
        database: duckdb.DuckDBPyConnection,
        settings: EnrollmentSection,
        *,
        send: Send,
    ) -> None:
        self.pki, self.store, self.gears, self.settings = pki, store, gears, settings
        self._send = send
        self._conn = database.cursor()
        self._lock = threading.Lock()
        self._issued: dict[str, tuple[str | None, float]] = {}  # rack → (scenario, monotonic)
        self.issued = 0
        with self._lock:
            apply_migrations(self._conn, "passports", MIGRATIONS)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    async def rack_seen(self, record: RackRecord, sighting: Sighting) -> None:
        """An enrollment observer: renew the passport of an active rack when it is due."""
        if record.status is not RackStatus.ACTIVE or not self._due(record.name, sighting):
            return
        try:
            data = await asyncio.to_thread(self.passport_for, record, sighting.scenario)
        except (MixerError, ScenarioError) as exc:
            log.error("no passport for rack %r: %s", record.name, exc)
            return
        self._issued[record.name] = (sighting.scenario, time.monotonic())
        await self._send(passport_subject(record.name), data)
        self.issued += 1
        log.info("passport issued to rack %r (scenario %s)", record.name, sighting.scenario)

    def _due(self, rack: str, sighting: Sighting) -> bool:
        last = self._issued.get(rack)
        recent = last is not None and time.monotonic() - last[1] < REISSUE_AFTER
        if recent and last is not None and last[0] == sighting.scenario:
            return False  # just sent: the next heartbeat reports it
        held = sighting.passport
        if held is None or held.scenario != sighting.scenario:
            return True
        return held.expires_at - time.time() < self.settings.passport_ttl / 2

    # -- certificates (blocking) --------------------------------------------------------------

    def certificate_for(self, record: RackRecord) -> bytes | None:
        """The rack's valid certificate (PEM), issued from its CSR when needed."""
        return self._certificate(record)

    def leaf_users(self, now: datetime | None = None) -> dict[str, list[str]]:
        """rack → the hub users of its valid (unexpired, unrevoked) certificates."""
        moment = _naive(now or datetime.now(UTC))
        with self._lock:
            rows = self._conn.execute(
                "SELECT rack, serial FROM certificates WHERE revoked_at IS NULL AND not_after > ? "
                "ORDER BY rack, issued_at",
                [moment],
            ).fetchall()
        users: dict[str, list[str]] = {}
        for rack, serial in rows:
            users.setdefault(str(rack), []).append(leaf_user(str(rack), int(str(serial), 16)))
        return users

    def revoke(self, rack: str) -> int:
        """Revoke every valid certificate of `rack`; returns how many."""
        with self._lock:
            rows = self._conn.execute(
                "UPDATE certificates SET revoked_at = ? WHERE rack = ? AND revoked_at IS NULL "
                "RETURNING serial",
                [_naive(datetime.now(UTC)), rack],
            ).fetchall()
        for (serial,) in rows:
            log.warning("certificate %s of rack %r revoked", serial, rack)
        return len(rows)

    def revoked_key(self, csr_pem: str) -> bool:
        """Whether the key of this CSR had a certificate that was revoked (the revocation
        list enrollment checks)."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError:
            return False  # enrollment refuses the CSR itself
        key = _key_id(csr.public_key().public_bytes(*_SPKI))
        with self._lock:
            row = self._conn.execute(
                "SELECT count(*) FROM certificates WHERE public_key = ? AND revoked_at IS NOT NULL",
                [key],
            ).fetchone()
        return bool(row and row[0])

    # -- building (blocking) ------------------------------------------------------------------

    def passport_for(self, record: RackRecord, digest: str | None) -> bytes:
        """The signed passport of `record`, granting the scenario `digest` (None: none)."""
        now = int(time.time())
        scenario, specs = self._scenario(digest)
        cert = self._certificate(record)
        passport = Passport(
            rack=record.name,
            entity_id=record.entity_id,
            machine_id=record.machine_id,
            mixer_key=self.pki.signing_public_raw,
            scenario=scenario,
            specs=specs,
            issued_at=now,
            expires_at=now + int(self.settings.passport_ttl),
            cert=cert,
            ca=self.pki.ca_pem,
        )
        return passport.sign(self.pki.signing_key)

    def _scenario(self, digest: str | None) -> tuple[PassportScenario | None, dict[str, str]]:
        if digest is None:
            return None, {}
        blob = self.store.get("scenario", digest)
        document = blob.data.decode("utf-8")
        ref = f"{blob.name}:{blob.tag}" if blob.name else None
        blueprint = preflight_document(parse_document(document, ref or digest), self.gears)
        specs = {}
        for _, spec_ref in spec_refs(blueprint):
            spec = self.store.get("spec", spec_ref)
            specs[spec.digest] = spec.data.decode("utf-8")
        return PassportScenario(digest, ref, document), specs

    def _certificate(self, record: RackRecord) -> bytes | None:
        """The rack's valid certificate for the key of its CSR, issued when needed."""
        csr_pem = record.attributes.get("csr")
        if not isinstance(csr_pem, str):
            return None  # a rack without a CSR (an older rack): a passport without certificate
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError as exc:
            raise PkiError(f"the CSR of rack {record.name!r} is not valid PEM: {exc}") from exc
        key = _key_id(csr.public_key().public_bytes(*_SPKI))
        if self.revoked_key(csr_pem):
            raise PkiError(f"the key of rack {record.name!r} was revoked: no certificate for it")
        reusable = self._reusable(record.name, key)
        if reusable is not None:
            return reusable
        cert = self.pki.issue_client_cert(csr_pem.encode(), record.name, days=CERT_DAYS)
        pem = cert.public_bytes(serialization.Encoding.PEM)
        with self._lock:
            self._conn.execute(
                "INSERT INTO certificates VALUES (?, ?, ?, ?, ?, NULL, ?)",
                [
                    format(cert.serial_number, "x"),
                    record.name,
                    key,
                    _naive(cert.not_valid_before_utc),
                    _naive(cert.not_valid_after_utc),
                    pem.decode(),
                ],
            )
        log.info("certificate %x issued to rack %r", cert.serial_number, record.name)
        return pem

    def _reusable(self, rack: str, key: str) -> bytes | None:
        horizon = _naive(datetime.now(UTC) + timedelta(days=CERT_RENEW_DAYS))
        with self._lock:
            row = self._conn.execute(
                "SELECT pem FROM certificates WHERE rack = ? AND public_key = ? AND "
                "revoked_at IS NULL AND not_after > ? ORDER BY not_after DESC LIMIT 1",
                [rack, key, horizon],
            ).fetchone()
        return str(row[0]).encode() if row else None


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _key_id(spki_der: bytes) -> str:
    return "sha256:" + hashlib.sha256(spki_der).hexdigest()


def _naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)
