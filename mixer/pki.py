"""The cluster PKI: the CA that signs the hub's and the racks' TLS certificates, and the Ed25519
key that signs passports. Blocking file and crypto work: the mixer calls it through a thread.

    pki = ClusterPki.open(state_dir / "pki", hub_hosts=["mixer.example", "10.0.0.5"])
    cert = pki.issue_client_cert(csr_pem, "edge-1")      # CSR from generate_rack_key_and_csr
    assert pki.verify_client_cert(cert) == "edge-1"

Files (keys 0600, certificates 0644, directory 0700, every write atomic): `ca.key` + `ca.crt`
(ECDSA P-256, self-signed, 10 years), `signing.key` (Ed25519, signs passports), `hub.key` +
`hub.crt` (server certificate of the NATS hub, 1 year, SAN from `hub_hosts`).

A missing or empty directory is a first start: every file is created (staged in a sibling
directory and renamed into place when the directory is missing, so a crash leaves nothing
half-made). Later starts load the files and raise `PkiError`, naming the file and what to do, when
a key is accessible by group or others, a file is corrupt, a key does not match its certificate,
`ca.crt` is not a valid CA, or only part of the set exists: nothing is ever regenerated over
existing keys. Only the hub certificate is re-issued (same key) when its names differ from
`hub_hosts`, it expires within 30 days, or this CA did not issue it; never the CA. The
certificates themselves are built and inspected by `mixer.certificates`, the files written by
`rack.files.write_atomic`.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from mixer.certificates import (
    RACK_URI,
    IssuerKey,
    cert_pem,
    client_key,
    common_names,
    extension_items,
    hub_names,
    issue_ca,
    issue_client,
    issue_hub,
    issued_by,
    key_pem,
    parse_cert,
)
from mixer.errors import PkiError
from rack.files import check_private, fsync_dir, write_atomic
from rack.model.scenario import NAME_PATTERN

log = logging.getLogger("fluxrig.mixer.pki")

Clock = Callable[[], datetime]
CA_KEY, CA_CERT, SIGNING_KEY = "ca.key", "ca.crt", "signing.key"
HUB_KEY, HUB_CERT = "hub.key", "hub.crt"
FILES = (CA_KEY, CA_CERT, SIGNING_KEY, HUB_KEY, HUB_CERT)
HUB_RENEW_BEFORE = timedelta(days=30)
_NAME_RE = re.compile(NAME_PATTERN)
_RESET = "restore the PKI directory from a backup, or move it away to create a new cluster CA"
_SPKI = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ClusterPki:
    """The loaded cluster PKI of one mixer. Immutable once open; safe from any thread."""

    __slots__ = ("_ca", "_clock", "_signing_key", "directory")

    def __init__(
        self,
        directory: Path,
        ca: tuple[IssuerKey, x509.Certificate],
        signing_key: ed25519.Ed25519PrivateKey,
        clock: Clock,
    ) -> None:
        self.directory, self._ca, self._signing_key, self._clock = directory, ca, signing_key, clock

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        hub_hosts: Sequence[str] = ("localhost", "127.0.0.1"),
        clock: Clock = _utc_now,
    ) -> ClusterPki:
        """Create (first start) or load and check the PKI in `directory`; see the module doc."""
        directory, names = Path(directory), hub_names(hub_hosts)
        try:
            present = [name for name in FILES if (directory / name).exists()]
            if not present:
                _create(directory, names, clock())
            elif missing := [name for name in FILES if name not in present]:
                raise PkiError(
                    f"the PKI directory {directory} is incomplete: {', '.join(missing)} missing "
                    f"({', '.join(present)} present); {_RESET} (racks must then re-enroll)"
                )
            ca = _load_pair(directory, CA_KEY, CA_CERT)
            _check_ca(ca[1], directory / CA_CERT, clock())
            pki = cls(directory, ca, _load_signing_key(directory / SIGNING_KEY), clock)
            pki._refresh_hub(names)
        except OSError as exc:
            raise PkiError(f"cannot use the PKI directory {directory}: {exc}") from exc
        return pki

    @property
    def ca_path(self) -> Path:
        return self.directory / CA_CERT

    @property
    def hub_cert_path(self) -> Path:
        return self.directory / HUB_CERT

    @property
    def hub_key_path(self) -> Path:
        return self.directory / HUB_KEY

    @property
    def ca_cert(self) -> x509.Certificate:
        return self._ca[1]

    @property
    def ca_pem(self) -> bytes:
        return self._ca[1].public_bytes(serialization.Encoding.PEM)

    @property
    def signing_key(self) -> ed25519.Ed25519PrivateKey:
        """The cluster's passport signing key."""
        return self._signing_key

    @property
    def signing_public_raw(self) -> bytes:
        """The 32 raw bytes of the passport signing public key (a passport's `mixer_key`)."""
        return self._signing_key.public_key().public_bytes_raw()

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the CA certificate's DER: what `fluxrig keys` shows."""
        return self._ca[1].fingerprint(hashes.SHA256()).hex()

    def issue_client_cert(self, csr_pem: bytes, rack: str, *, days: int = 90) -> x509.Certificate:
        """A client certificate for `rack` from its CSR, whose signature and CN are checked."""
        if not isinstance(rack, str) or not _NAME_RE.match(rack):
            raise PkiError(f"invalid rack name {rack!r}: use 1..63 letters, digits, '_' or '-'")
        if not 1 <= days <= 3650:
            raise PkiError(f"a client certificate lasts 1..3650 days, not {days}")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
            valid = csr.is_signature_valid
        except (ValueError, TypeError) as exc:
            raise PkiError(
                f"the CSR of rack '{rack}' is not a PEM certificate request: {exc}"
            ) from None
        if not valid:
            raise PkiError(f"the CSR of rack '{rack}' has a signature that does not verify")
        names = common_names(csr.subject)
        if names != [rack]:
            cn = ", ".join(repr(name) for name in names) or "nothing"
            raise PkiError(f"the CSR is for CN {cn}, not for rack '{rack}'")
        key = client_key(csr.public_key(), rack)
        return issue_client(self._ca, key, rack, self._clock(), timedelta(days=days))

    def verify_client_cert(self, cert: x509.Certificate | bytes) -> str:
        """The rack name of a client certificate (parsed, PEM or DER) that this CA issued."""
        if isinstance(cert, bytes):
            try:
                cert = parse_cert(cert)
            except ValueError as exc:
                raise PkiError(f"not a certificate: {exc}") from None
        names = common_names(cert.subject)
        who = f"certificate {names[0] if names else cert.subject.rfc4514_string()!r}"
        if not issued_by(cert, self._ca[1]):
            raise PkiError(f"{who} was not issued by this cluster's CA ({self.fingerprint()[:16]})")
        now, start, end = self._clock(), cert.not_valid_before_utc, cert.not_valid_after_utc
        if now > end:
            raise PkiError(f"{who} expired at {end:%Y-%m-%d %H:%M:%S}Z; re-enroll the rack")
        if now < start:
            raise PkiError(f"{who} is not valid before {start}: check the clocks (NTP)")
        if ExtendedKeyUsageOID.CLIENT_AUTH not in extension_items(cert, x509.ExtendedKeyUsage):
            raise PkiError(f"{who} is not a client certificate (no clientAuth usage)")
        uri = x509.UniformResourceIdentifier(RACK_URI.format(names[0] if names else ""))
        if len(names) != 1 or uri not in extension_items(cert, x509.SubjectAlternativeName):
            raise PkiError(f"{who} does not name one rack in its CN and SAN URI")
        return names[0]

    def backup(self, target_dir: Path) -> Path:
        """Copy every file (modes kept) into `target_dir`, which must be new or empty."""
        target = Path(target_dir)
        try:
            if target.exists() and (not target.is_dir() or any(target.iterdir())):
                raise PkiError(f"backup target {target} exists and is not an empty directory")
            _private_dir(target)
            for name in FILES:
                source = self.directory / name
                mode = stat.S_IMODE(source.stat().st_mode)
                write_atomic(target / name, source.read_bytes(), mode=mode)
        except OSError as exc:
            raise PkiError(f"cannot back up the PKI into {target}: {exc}") from exc
        return target

    def _refresh_hub(self, names: list[x509.GeneralName]) -> None:
        key, cert = _load_pair(self.directory, HUB_KEY, HUB_CERT)
        now = self._clock()
        if (
            set(extension_items(cert, x509.SubjectAlternativeName)) == set(names)
            and cert.not_valid_after_utc - now > HUB_RENEW_BEFORE
            and issued_by(cert, self._ca[1])
        ):
            return
        hub_cert = issue_hub(self._ca, key, names, now)
        write_atomic(self.hub_cert_path, cert_pem(hub_cert), mode=0o644)
        log.info("re-issued the hub certificate %s for %s", self.hub_cert_path, names)


def _create(directory: Path, names: list[x509.GeneralName], now: datetime) -> None:
    """First start: every file, staged in a sibling directory when `directory` does not exist."""
    staging = None
    if not directory.exists():
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    target = staging or directory
    try:
        _private_dir(target)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        hub_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = issue_ca(ca_key, f"fluxrig cluster CA {secrets.token_hex(4)}", now)
        hub_cert = issue_hub((ca_key, ca_cert), hub_key, names, now)
        signing_key = ed25519.Ed25519PrivateKey.generate()
        for name, key in ((CA_KEY, ca_key), (SIGNING_KEY, signing_key), (HUB_KEY, hub_key)):
            write_atomic(target / name, key_pem(key), mode=0o600)
        write_atomic(target / CA_CERT, cert_pem(ca_cert), mode=0o644)
        write_atomic(target / HUB_CERT, cert_pem(hub_cert), mode=0o644)
        if staging is not None:
            os.replace(staging, directory)
            fsync_dir(directory.parent)
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    fingerprint = ca_cert.fingerprint(hashes.SHA256()).hex()
    log.info("created the cluster PKI in %s (CA fingerprint %s)", directory, fingerprint)


def _load_pair(
    directory: Path, key_name: str, cert_name: str
) -> tuple[IssuerKey, x509.Certificate]:
    """A key and its certificate, checked to belong together."""
    key_path, cert_path = directory / key_name, directory / cert_name
    key, cert = _read_key(key_path), _read_cert(cert_path)
    spki = cert.public_key().public_bytes(*_SPKI)
    if not isinstance(key, IssuerKey) or key.public_key().public_bytes(*_SPKI) != spki:
        raise PkiError(f"{key_path} does not match the certificate {cert_path}; {_RESET}")
    return key, cert


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return parse_cert(path.read_bytes())
    except ValueError as exc:
        raise PkiError(f"certificate {path} is corrupt: {exc}; {_RESET}") from None


def _load_signing_key(path: Path) -> ed25519.Ed25519PrivateKey:
    key = _read_key(path)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise PkiError(f"{path} is not an Ed25519 private key; {_RESET}")
    return key


def _read_key(path: Path) -> object:
    """A PEM private key file, refused when group or others may access it."""
    with open(path, "rb") as fh:
        if problem := check_private(os.fstat(fh.fileno()), path, "private key"):
            raise PkiError(f"{problem}, and consider whether it was copied")
        data = fh.read()
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"private key {path} is corrupt or encrypted ({exc}); {_RESET}") from None


def _check_ca(cert: x509.Certificate, path: Path, now: datetime) -> None:
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca or not issued_by(cert, cert):
        raise PkiError(f"{path} is not a self-signed CA certificate; {_RESET}")
    if now > cert.not_valid_after_utc:
        raise PkiError(f"the cluster CA {path} expired at {cert.not_valid_after_utc}; {_RESET}")


def _private_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
