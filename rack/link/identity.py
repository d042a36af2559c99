"""A managed rack's identity on disk: its key, its CSR, the mixer key it trusts, its passport.

    identity = RackIdentity.load(state_dir, "edge-1")    # creates rack.key (0600) + rack.csr
    passport = identity.passport(now=time.time())        # None: not issued yet; PassportError
    identity.store(envelope, now=time.time())            # verify, pin, write state.flux (0600)

Files in the rack's state dir:

| file | what |
|---|---|
| `rack.key` (0600) | the rack's Ed25519 private key, made on first start; never leaves the rack |
| `rack.csr` | a certificate request for it (CN = the rack's name), sent in every hello |
| `mixer.pub` (0600) | the cluster signing key pinned from the first passport (trust on first use) |
| `state.flux` (0600) | the newest passport (`rack.model.passport`), written atomically |
| `rack.crt`, `ca.crt` | the client certificate and cluster CA from the passport (for the Snake) |

Every check fails with `PassportError` naming the file and what to do: a key or passport readable
by group or others, a passport signed by another key than the pinned one, forged or tampered,
expired, or issued to another rack.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rack.errors import PassportError
from rack.files import check_private, write_atomic
from rack.link.protocol import PassportState
from rack.model.passport import Passport, key_fingerprint, rack_csr, read_passport

__all__ = ["RackIdentity"]

KEY, CSR, PIN, PASSPORT, CERT, CA = (
    "rack.key", "rack.csr", "mixer.pub", "state.flux", "rack.crt", "ca.crt",
)  # fmt: skip


@dataclass
class RackIdentity:
    """The identity files of one rack (see the module doc). Blocking: use it in a thread."""

    directory: Path
    name: str
    key: Ed25519PrivateKey
    csr_pem: str
    pinned: bytes | None

    @classmethod
    def load(cls, directory: Path, name: str) -> RackIdentity:
        """Load the rack's key (made on first start), its CSR and the pinned mixer key."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = _load_key(directory / KEY)
        csr = rack_csr(key, name).decode()
        write_atomic(directory / CSR, csr.encode(), mode=0o644)
        pin_path = directory / PIN
        pinned = _read_private(pin_path, "pinned mixer key") if pin_path.exists() else None
        if pinned is not None and len(pinned) != 32:
            raise PassportError(f"{pin_path} is not a 32-byte Ed25519 key; delete it to re-pin")
        return cls(directory, name, key, csr, pinned)

    @property
    def public_key(self) -> str:
        """The rack's public key as the registry stores it (base64 of the raw 32 bytes)."""
        return base64.b64encode(self.key.public_key().public_bytes_raw()).decode()

    @property
    def passport_path(self) -> Path:
        return self.directory / PASSPORT

    def passport(self, *, now: float) -> Passport | None:
        """The stored passport, verified against the pinned key; None when there is none."""
        try:
            data = read_passport(self.passport_path)
        except FileNotFoundError:
            return None
        return self._verified(data, now)

    def store(self, data: bytes, *, now: float) -> Passport:
        """Verify a passport from the mixer, pin its key if none is pinned, and keep it."""
        passport = self._verified(data, now)
        if self.pinned is None:
            write_atomic(self.directory / PIN, passport.mixer_key)
            self.pinned = passport.mixer_key
        write_atomic(self.passport_path, data)
        if passport.cert is not None:
            write_atomic(self.directory / CERT, passport.cert, mode=0o644)
        if passport.ca is not None:
            write_atomic(self.directory / CA, passport.ca, mode=0o644)
        return passport

    @property
    def certified(self) -> bool:
        """Whether the rack holds a client certificate and the CA (it can open the Snake)."""
        return (self.directory / CERT).is_file() and (self.directory / CA).is_file()

    @property
    def cert_path(self) -> Path:
        return self.directory / CERT

    @property
    def ca_path(self) -> Path:
        return self.directory / CA

    @property
    def key_path(self) -> Path:
        return self.directory / KEY

    def store_certificate(self, cert_pem: str, ca_pem: str) -> bool:
        """Keep the certificate of a hello reply (for this rack's key, issued by `ca_pem`; a CA
        other than the one already held is refused). Returns whether anything changed."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem.encode())
            ca = x509.load_pem_x509_certificate(ca_pem.encode())
        except ValueError as exc:
            raise PassportError(f"the mixer sent a certificate that does not parse: {exc}") from exc
        if cert.public_key() != self.key.public_key():
            raise PassportError("the mixer sent a certificate for another key than rack.key")
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise PassportError("the mixer's certificate is not issued by its CA") from exc
        held = self.directory / CA
        if held.exists() and held.read_bytes().strip() != ca_pem.encode().strip():
            raise PassportError(
                f"the mixer sent another cluster CA than {held}; delete the rack's state dir "
                "to enroll with another mixer"
            )
        if (self.directory / CERT).exists() and (
            self.directory / CERT
        ).read_bytes() == cert_pem.encode():
            return False
        write_atomic(self.directory / CA, ca_pem.encode(), mode=0o644)
        write_atomic(self.directory / CERT, cert_pem.encode(), mode=0o644)
        return True

    def forget(self) -> None:
        """The kill switch: drop the passport and the certificate (the key and pin stay)."""
        for name in (PASSPORT, CERT):
            (self.directory / name).unlink(missing_ok=True)

    def _verified(self, data: bytes, now: float) -> Passport:
        passport = Passport.verify(data, pinned_key=self.pinned, now=now)
        if passport.rack != self.name:
            raise PassportError(
                f"the passport in {self.passport_path} was issued to rack '{passport.rack}', not "
                f"'{self.name}'; delete it (or run with --name {passport.rack})"
            )
        return passport

    def describe(self) -> str:
        pin = key_fingerprint(self.pinned) if self.pinned else "none yet"
        return f"rack key {self.public_key[:12]}…, trusted mixer key {pin}"


def state_of(passport: Passport | None) -> PassportState | None:
    """What a hello or heartbeat says about a passport."""
    if passport is None:
        return None
    digest = passport.scenario.digest if passport.scenario is not None else None
    return PassportState(
        issued_at=passport.issued_at, expires_at=passport.expires_at, scenario=digest
    )


def _load_key(path: Path) -> Ed25519PrivateKey:
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomic(path, pem)
        return key
    data = _read_private(path, "rack key")
    try:
        loaded = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PassportError(f"{path} is not a PEM private key ({exc}); restore it or delete it "
                            "to enroll as a new machine") from exc  # fmt: skip
    if not isinstance(loaded, Ed25519PrivateKey):
        raise PassportError(f"{path} is not an Ed25519 key; delete it to make a new one")
    return loaded


def _read_private(path: Path, what: str) -> bytes:
    with open(path, "rb") as fh:
        if problem := check_private(os.fstat(fh.fileno()), path, what):
            raise PassportError(problem)
        return fh.read(64 * 1024)
