"""The passport: a rack's identity and scenario, signed by the cluster's Ed25519 key.

    envelope = passport.sign(pki.signing_key)                  # mixer side
    write_passport(state_dir / "state.flux", envelope)
    passport = Passport.verify(read_passport(path), pinned_key=trusted, now=time.time())

Wire form: a CBOR map `{"v": 1, "body": <canonical CBOR of the body map>, "sig": <64 bytes>}`,
`sig` being the Ed25519 signature of `b"fluxrig-passport-v1\\0" + body`. The body holds every
`Passport` field; `mixer_key` is the raw public key that signed it.

`verify` raises `PassportError` (never another exception) for: input that is not a CBOR envelope,
an unknown version, more than 8 MiB, a signature that does not verify, a signer other than
`pinned_key` (the key this rack trusts; None on first enrollment) or than the body's `mixer_key`,
an expired passport or one issued more than 5 minutes in the future, and a body field missing,
unknown or of the wrong type (named). Decoding is bounded: no CBOR tags, no duplicate or non-text
keys, no trailing bytes, at most 4 nested containers.

`generate_rack_key_and_csr` makes the rack's Ed25519 key and the CSR the mixer's CA signs;
`write_passport`/`read_passport` keep `state.flux` private (0600, atomic writes).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from rack.errors import PassportError
from rack.files import check_private, write_atomic
from rack.model.ids import MAX_MACHINE_ID, EntityId, EntityType
from rack.model.scenario import NAME_PATTERN

VERSION = 1
MAX_PASSPORT_BYTES = 8 * 1024 * 1024
CLOCK_SKEW = 300  # seconds a passport may be issued in the future of this clock
_CONTEXT = b"fluxrig-passport-v1\0"
_MAX_TIME = 253_402_300_800  # year 10000
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_NAME_RE = re.compile(NAME_PATTERN)
_FORGED = "passport signature does not verify: forged or tampered; delete state.flux and re-enroll"


@dataclass(frozen=True, slots=True)
class PassportScenario:
    """The scenario a passport grants: its CAS digest, the ref it came from, the YAML text."""

    digest: str
    ref: str | None
    document: str

    def __post_init__(self) -> None:
        if type(self.digest) is not str or type(self.document) is not str:
            raise PassportError("passport field 'scenario' needs text 'digest' and 'document'")
        if self.ref is not None and type(self.ref) is not str:
            raise PassportError("passport field 'scenario.ref' must be text or null")
        _check_digest("scenario", self.digest, self.document)


@dataclass(frozen=True, slots=True)
class Passport:
    """A rack's signed identity and scenario; times are unix seconds."""

    rack: str
    entity_id: int
    machine_id: int
    mixer_key: bytes
    scenario: PassportScenario | None
    specs: Mapping[str, str]
    issued_at: int
    expires_at: int
    cert: bytes | None = None
    ca: bytes | None = None

    def __post_init__(self) -> None:
        _check_fields(self)

    def sign(self, signing_key: Ed25519PrivateKey) -> bytes:
        """The signed envelope; `signing_key` must be the key named by `mixer_key`."""
        public = signing_key.public_key().public_bytes_raw()
        if public != self.mixer_key:
            raise PassportError(
                f"passport names mixer_key {key_fingerprint(self.mixer_key)} but the signing key "
                f"is {key_fingerprint(public)}"
            )
        body = cbor2.dumps(_body_map(self), canonical=True)
        sig = signing_key.sign(_CONTEXT + body)
        envelope = cbor2.dumps({"v": VERSION, "body": body, "sig": sig}, canonical=True)
        if len(envelope) > MAX_PASSPORT_BYTES:
            raise PassportError(f"passport is {len(envelope)} bytes; max {MAX_PASSPORT_BYTES}")
        return envelope

    @classmethod
    def verify(cls, data: bytes, *, pinned_key: bytes | None, now: float) -> Passport:
        """Check an envelope from `sign` and return its passport; see the module doc."""
        if pinned_key is not None and (type(pinned_key) is not bytes or len(pinned_key) != 32):
            raise PassportError("the pinned mixer key must be 32 raw Ed25519 bytes")
        body, sig = _open_envelope(data)
        if pinned_key is not None and not _signed(pinned_key, sig, body):
            claimed = _claimed_key(body)
            if claimed is not None and claimed != pinned_key and _signed(claimed, sig, body):
                raise PassportError(
                    f"passport signed by {key_fingerprint(claimed)}, this rack trusts "
                    f"{key_fingerprint(pinned_key)}: it belongs to another cluster; re-enroll "
                    "(delete state.flux) only if this rack really moved"
                )
            raise PassportError(_FORGED)
        passport = _from_body(_decode(body, "passport body"))
        if pinned_key is None and not _signed(passport.mixer_key, sig, body):
            raise PassportError(_FORGED)
        if pinned_key is not None and passport.mixer_key != pinned_key:
            raise PassportError(
                f"passport signed with {key_fingerprint(pinned_key)} names another mixer_key, "
                f"{key_fingerprint(passport.mixer_key)}; the mixer issued it wrongly"
            )
        _check_time(passport, now)
        return passport


def key_fingerprint(raw: bytes) -> str:
    """A short, printable name of an Ed25519 public key: `ed25519:<16 hex of its SHA-256>`."""
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def generate_rack_key_and_csr(rack: str) -> tuple[bytes, bytes]:
    """A new Ed25519 private key (PKCS#8 PEM) and a CSR for CN=`rack` signed with it."""
    key = Ed25519PrivateKey.generate()
    csr = rack_csr(key, rack)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, csr


def rack_csr(key: Ed25519PrivateKey, rack: str) -> bytes:
    """The PEM CSR for CN=`rack` signed with the rack's `key` (what the mixer's CA certifies)."""
    if not isinstance(rack, str) or not _NAME_RE.match(rack):
        raise PassportError(f"invalid rack name {rack!r}: use 1..63 letters, digits, '_' or '-'")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, rack)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, None)
    return csr.public_bytes(serialization.Encoding.PEM)


def write_passport(path: Path, data: bytes) -> None:
    """Replace `path` atomically and durably, mode 0600 (see `rack.files.write_atomic`)."""
    try:
        write_atomic(Path(path), data, mode=0o600)
    except OSError as exc:
        raise PassportError(f"cannot write the passport {path}: {exc}") from exc


def read_passport(path: Path) -> bytes:
    """The bytes of `path`, refused when group or others may access it (FileNotFoundError when
    there is none yet: the rack must enroll)."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_PASSPORT_BYTES:
                raise PassportError(f"{path} is not a passport file (not regular, or over 8 MiB)")
            if problem := check_private(st, Path(path), "passport"):
                raise PassportError(problem)
            return fh.read(MAX_PASSPORT_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise PassportError(f"cannot read the passport {path}: {exc}") from exc


# -- decoding and checks ---------------------------------------------------------------------


def _reject_tag(*_: Any) -> Any:
    raise ValueError("CBOR tags are not allowed in a passport")


_BUILTIN_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261)
_DECODER_OPTIONS: dict[str, Any] = {
    "tag_hook": _reject_tag,
    "semantic_decoders": dict.fromkeys((*_BUILTIN_TAGS, 1004, 55799), _reject_tag),
    "max_depth": 4,
    "allow_indefinite": False,
    "strict_hashable_types": True,
    "allow_duplicate_keys": False,
}


def _decode(data: bytes, what: str) -> Any:
    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(fp, **_DECODER_OPTIONS).decode()
    except Exception as exc:  # cbor2 raises several types, incl. RecursionError/MemoryError
        cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        raise PassportError(f"{what} is not valid CBOR: {exc}{cause}") from None
    if fp.tell() != len(data):
        raise PassportError(f"{what} has {len(data) - fp.tell()} bytes of trailing data")
    return value


def _open_envelope(data: Any) -> tuple[bytes, bytes]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise PassportError(f"a passport is bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_PASSPORT_BYTES:
        raise PassportError(f"passport is {len(data)} bytes; max {MAX_PASSPORT_BYTES}")
    envelope = _decode(data, "passport")
    if type(envelope) is not dict or "v" not in envelope:
        raise PassportError("not a passport envelope: expected a CBOR map {v, body, sig}")
    version = envelope["v"]
    if type(version) is not int or version != VERSION:
        raise PassportError(
            f"unknown passport version {version!r}; this rack reads version {VERSION}: "
            "upgrade fluxrig"
        )
    body, sig = envelope.get("body"), envelope.get("sig")
    if envelope.keys() != {"v", "body", "sig"} or type(body) is not bytes or type(sig) is not bytes:
        raise PassportError(
            "not a passport envelope: expected exactly {v, body: bytes, sig: bytes}"
        )
    if len(sig) != 64:
        raise PassportError(f"passport signature is {len(sig)} bytes, not 64")
    return body, sig


def _signed(key: bytes, sig: bytes, body: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(sig, _CONTEXT + body)
    except (InvalidSignature, ValueError):
        return False
    return True


def _claimed_key(body: bytes) -> bytes | None:
    """The body's mixer_key if the body decodes and has a well-formed one, else None."""
    try:
        key = _decode(body, "passport body").get("mixer_key")
    except (PassportError, AttributeError):
        return None
    return key if type(key) is bytes and len(key) == 32 else None


_FIELD_NAMES = frozenset(f.name for f in fields(Passport))


def _from_body(body: Any) -> Passport:
    if type(body) is not dict:
        raise PassportError("passport body must be a CBOR map")
    if unknown := body.keys() - _FIELD_NAMES:
        names = ", ".join(sorted(map(str, unknown)))
        raise PassportError(f"passport has unknown fields ({names}): upgrade fluxrig")
    if missing := sorted(_FIELD_NAMES - body.keys()):
        raise PassportError(f"passport field '{missing[0]}' is missing")
    scenario = body["scenario"]
    if scenario is not None:
        if type(scenario) is not dict or scenario.keys() != {"digest", "ref", "document"}:
            raise PassportError("passport field 'scenario' must be null or {digest, ref, document}")
        body = {**body, "scenario": PassportScenario(**scenario)}
    return Passport(**body)


def _body_map(passport: Passport) -> dict[str, Any]:
    body = {name: getattr(passport, name) for name in _FIELD_NAMES}
    body["specs"] = dict(passport.specs)
    body["scenario"] = passport.scenario and asdict(passport.scenario)
    return body


def _check_fields(p: Passport) -> None:
    if type(p.rack) is not str or not _NAME_RE.match(p.rack):
        raise PassportError(f"passport field 'rack' is not a rack name: {p.rack!r}")
    if type(p.machine_id) is not int or not 1 <= p.machine_id <= MAX_MACHINE_ID:
        raise PassportError(f"passport field 'machine_id' must be 1..{MAX_MACHINE_ID}")
    try:
        entity = EntityId.from_int(p.entity_id) if type(p.entity_id) is int else None
    except ValueError:
        entity = None
    if entity != EntityId(EntityType.RACK, p.machine_id):
        raise PassportError("passport field 'entity_id' is not the rack entity of 'machine_id'")
    if type(p.mixer_key) is not bytes or len(p.mixer_key) != 32:
        raise PassportError("passport field 'mixer_key' must be 32 raw Ed25519 bytes")
    if p.scenario is not None and not isinstance(p.scenario, PassportScenario):
        raise PassportError("passport field 'scenario' must be a PassportScenario or None")
    if not isinstance(p.specs, Mapping):
        raise PassportError("passport field 'specs' must map digests to text")
    for digest, text in p.specs.items():
        _check_digest("specs", digest, text)
    for name in ("issued_at", "expires_at"):
        value = getattr(p, name)
        if type(value) is not int or not 0 <= value < _MAX_TIME:
            raise PassportError(f"passport field '{name}' must be unix seconds, got {value!r}")
    if p.expires_at <= p.issued_at:
        raise PassportError("passport field 'expires_at' must be after 'issued_at'")
    for name in ("cert", "ca"):
        if getattr(p, name) is not None and type(getattr(p, name)) is not bytes:
            raise PassportError(f"passport field '{name}' must be PEM bytes or null")


def _check_digest(field: str, digest: Any, text: Any) -> None:
    if type(digest) is not str or not _DIGEST.fullmatch(digest) or type(text) is not str:
        raise PassportError(f"passport field '{field}' must map 'sha256:<hex>' digests to text")
    try:
        actual = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    except UnicodeEncodeError:
        actual = "(text that is not valid Unicode)"
    if actual != digest:
        raise PassportError(f"passport field '{field}': {digest} is not the digest of its text")


def _check_time(passport: Passport, now: float) -> None:
    if now >= passport.expires_at:
        raise PassportError(
            f"passport of rack '{passport.rack}' expired at {_iso(passport.expires_at)}; "
            "the rack needs a fresh one from the mixer"
        )
    if passport.issued_at > now + CLOCK_SKEW:
        raise PassportError(
            f"passport was issued at {_iso(passport.issued_at)}, more than {CLOCK_SKEW} s ahead "
            f"of this clock ({_iso(int(now))}); check the clocks (NTP) of this rack and the mixer"
        )


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
