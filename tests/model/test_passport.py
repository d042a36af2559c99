"""Passports: signed CBOR envelopes, checked with real Ed25519 keys, and their private files."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from rack.errors import FluxError, PassportError
from rack.model.ids import EntityId, EntityType
from rack.model.passport import (
    MAX_PASSPORT_BYTES,
    Passport,
    PassportScenario,
    generate_rack_key_and_csr,
    key_fingerprint,
    read_passport,
    write_passport,
)

NOW = 1_760_000_000
KEY = Ed25519PrivateKey.generate()
KEY_RAW = KEY.public_key().public_bytes_raw()
OTHER = Ed25519PrivateKey.generate()
OTHER_RAW = OTHER.public_key().public_bytes_raw()
DOCUMENT = "name: demo\ngears: []\n"
SPEC = "fields: {}\n"
CONTEXT = b"fluxrig-passport-v1\0"
_DROP = object()  # body_map(field=_DROP) leaves the field out


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _scenario(digest: Any, ref: Any, document: Any) -> dict[str, Any]:
    return {"digest": digest, "ref": ref, "document": document}


def make(**changes: Any) -> Passport:
    fields: dict[str, Any] = {
        "rack": "edge-1",
        "entity_id": int(EntityId(EntityType.RACK, 7)),
        "machine_id": 7,
        "mixer_key": KEY_RAW,
        "scenario": PassportScenario(_digest(DOCUMENT), "demo:v1", DOCUMENT),
        "specs": {_digest(SPEC): SPEC},
        "issued_at": NOW,
        "expires_at": NOW + 86_400,
        "cert": b"-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n",
        "ca": None,
    }
    return Passport(**(fields | changes))


def body_map(**changes: Any) -> dict[str, Any]:
    passport = make()
    body = cbor2.loads(cbor2.loads(passport.sign(KEY))["body"])
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _DROP}


def envelope(body: dict[str, Any] | bytes, key: Ed25519PrivateKey = KEY, **env: Any) -> bytes:
    blob = body if isinstance(body, bytes) else cbor2.dumps(body, canonical=True)
    fields = {"v": 1, "body": blob, "sig": key.sign(CONTEXT + blob)} | env
    return cbor2.dumps(fields)


def test_sign_verify_round_trip() -> None:
    passport = make()
    data = passport.sign(KEY)
    assert Passport.verify(data, pinned_key=KEY_RAW, now=NOW + 60) == passport
    assert Passport.verify(data, pinned_key=None, now=NOW + 60) == passport  # first enrollment
    assert Passport.verify(make(scenario=None, specs={}).sign(KEY), pinned_key=None, now=NOW)


def test_envelope_shape_and_canonical_body() -> None:
    env = cbor2.loads(make().sign(KEY))
    assert set(env) == {"v", "body", "sig"}
    assert env["v"] == 1
    assert len(env["sig"]) == 64
    body = cbor2.loads(env["body"])
    assert body["mixer_key"] == KEY_RAW
    assert body["scenario"] == {"digest": _digest(DOCUMENT), "ref": "demo:v1", "document": DOCUMENT}
    assert cbor2.dumps(body, canonical=True) == env["body"]


def test_passport_error_is_a_flux_error() -> None:
    assert issubclass(PassportError, FluxError)


def test_sign_refuses_a_key_other_than_mixer_key() -> None:
    with pytest.raises(PassportError, match=key_fingerprint(OTHER_RAW)):
        make().sign(OTHER)


@pytest.mark.parametrize("pinned", [KEY_RAW, None])
def test_tampered_rack_name_is_refused(pinned: bytes | None) -> None:
    env = cbor2.loads(make().sign(KEY))
    body = env["body"].replace(b"edge-1", b"edge-2")
    tampered = cbor2.dumps(env | {"body": body})
    with pytest.raises(
        PassportError, match=r"forged or tampered; delete state\.flux and re-enroll"
    ):
        Passport.verify(tampered, pinned_key=pinned, now=NOW)


def test_any_flipped_body_byte_is_refused_as_tampered() -> None:
    env = cbor2.loads(make().sign(KEY))
    for index in range(len(env["body"])):
        body = bytearray(env["body"])
        body[index] ^= 0x01
        tampered = cbor2.dumps(env | {"body": bytes(body)})
        with pytest.raises(PassportError, match="forged or tampered"):
            Passport.verify(tampered, pinned_key=KEY_RAW, now=NOW)


@pytest.mark.parametrize("pinned", [KEY_RAW, None])
def test_forged_passport_claiming_the_cluster_key_is_refused(pinned: bytes | None) -> None:
    forged = envelope(body_map(rack="evil"), key=OTHER)  # mixer_key still says KEY_RAW
    with pytest.raises(PassportError, match="forged or tampered"):
        Passport.verify(forged, pinned_key=pinned, now=NOW)


def test_passport_of_another_cluster_names_both_keys() -> None:
    foreign = make(mixer_key=OTHER_RAW).sign(OTHER)
    expected = (
        f"signed by {key_fingerprint(OTHER_RAW)}, this rack trusts {key_fingerprint(KEY_RAW)}"
    )
    with pytest.raises(PassportError, match=expected):
        Passport.verify(foreign, pinned_key=KEY_RAW, now=NOW)


def test_signer_other_than_body_mixer_key_is_refused() -> None:
    mislabelled = envelope(body_map(mixer_key=OTHER_RAW), key=KEY)
    with pytest.raises(PassportError, match="names another mixer_key"):
        Passport.verify(mislabelled, pinned_key=KEY_RAW, now=NOW)


def test_expired_passport_says_when() -> None:
    data = make().sign(KEY)
    Passport.verify(data, pinned_key=KEY_RAW, now=NOW + 86_399)
    with pytest.raises(PassportError, match=r"expired at 2025-10-10T08:53:20\+00:00"):
        Passport.verify(data, pinned_key=KEY_RAW, now=NOW + 86_400)


def test_passport_from_the_future_beyond_clock_skew_is_refused() -> None:
    data = make().sign(KEY)
    Passport.verify(data, pinned_key=KEY_RAW, now=NOW - 299)  # within 5 min of skew
    with pytest.raises(PassportError, match=r"ahead of this clock.*NTP"):
        Passport.verify(data, pinned_key=KEY_RAW, now=NOW - 301)


GOOD = make().sign(KEY)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\x00", "not valid CBOR"),
        (GOOD + b"\x00", "1 bytes of trailing data"),
        (b"", "not valid CBOR"),
        (cbor2.dumps([1, 2, 3]), "not a passport envelope"),
        (cbor2.dumps({"v": 2, "body": b"", "sig": b""}), "unknown passport version 2"),
        (cbor2.dumps({"v": True, "body": b"", "sig": b""}), "unknown passport version True"),
        (envelope(body_map(), extra=1), "expected exactly"),
        (cbor2.dumps({"v": 1, "body": "text", "sig": b"x" * 64}), "expected exactly"),
        (cbor2.dumps({"v": 1, "body": b"", "sig": b"short"}), "is 5 bytes, not 64"),
        (cbor2.dumps(cbor2.CBORTag(55799, {"v": 1})), "tags are not allowed"),
        (cbor2.dumps({"v": 1, "body": cbor2.CBORTag(2, b"\x01")}), "tags are not allowed"),
        (cbor2.dumps({"v": 1, "v2": [[[[[1]]]]]}), "nesting depth"),
        (b"\x00" * (MAX_PASSPORT_BYTES + 1), "max 8388608"),
        (envelope(b"\x82\x01"), "passport body is not valid CBOR"),
        (envelope(cbor2.dumps([1])), "body must be a CBOR map"),
        (envelope(body_map(extra=1)), r"unknown fields \(extra\): upgrade fluxrig"),
        (envelope(body_map(rack=5)), "'rack'"),
        (envelope(body_map(rack="no/slash")), "'rack'"),
        (envelope(body_map(machine_id="7")), "'machine_id'"),
        (envelope(body_map(machine_id=0)), "'machine_id'"),
        (envelope(body_map(entity_id=int(EntityId(EntityType.RACK, 8)))), "'entity_id'"),
        (envelope(body_map(entity_id=-1)), "'entity_id'"),
        (envelope(body_map(mixer_key=KEY_RAW[:31])), "'mixer_key'"),
        (envelope(body_map(scenario=[1])), "'scenario'"),
        (envelope(body_map(scenario={"digest": _digest("x"), "ref": None})), "'scenario'"),
        (envelope(body_map(scenario=_scenario(1, None, ""))), "'scenario'"),
        (envelope(body_map(scenario=_scenario(_digest("x"), 3, "x"))), "'scenario.ref'"),
        (envelope(body_map(scenario=_scenario(_digest("x"), None, "y"))), "'scenario': sha256"),
        (envelope(body_map(specs=[SPEC])), "'specs'"),
        (envelope(body_map(specs={"sha256:00": SPEC})), "'specs'"),
        (envelope(body_map(specs={_digest(SPEC): b"bytes"})), "'specs'"),
        (envelope(body_map(issued_at=1.5)), "'issued_at'"),
        (envelope(body_map(expires_at=2**63)), "'expires_at'"),
        (envelope(body_map(expires_at=NOW)), "'expires_at' must be after 'issued_at'"),
        (envelope(body_map(cert="pem text")), "'cert'"),
        (envelope(body_map(ca=[b"pem"])), "'ca'"),
    ],
)  # fmt: skip
def test_malformed_passports_are_refused_with_a_clear_message(data: bytes, message: str) -> None:
    with pytest.raises(PassportError, match=message):
        Passport.verify(data, pinned_key=KEY_RAW, now=NOW)


@pytest.mark.parametrize("field", sorted(body_map()))
def test_missing_field_is_named(field: str) -> None:
    data = envelope(body_map(**{field: _DROP}))
    with pytest.raises(PassportError, match=f"field '{field}' is missing"):
        Passport.verify(data, pinned_key=KEY_RAW, now=NOW)


def test_not_bytes_and_bad_pinned_key_are_refused() -> None:
    with pytest.raises(PassportError, match="bytes, not str"):
        Passport.verify("text", pinned_key=None, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(PassportError, match="32 raw Ed25519 bytes"):
        Passport.verify(GOOD, pinned_key=b"short", now=NOW)


def test_constructing_an_invalid_passport_fails_early() -> None:
    with pytest.raises(PassportError, match="'machine_id'"):
        make(machine_id=70_000)
    with pytest.raises(PassportError, match=r"'scenario'.*not the digest"):
        replace(make(), scenario=PassportScenario(_digest("a"), None, "b"))


@given(st.binary(max_size=600))
def test_fuzz_random_bytes_only_raise_passport_error(data: bytes) -> None:
    with pytest.raises(PassportError):
        Passport.verify(data, pinned_key=None, now=NOW)


@given(st.integers(0, len(GOOD) - 1), st.integers(1, 255), st.integers(0, len(GOOD) - 1))
def test_fuzz_mutated_passports_only_raise_passport_error(index: int, xor: int, cut: int) -> None:
    data = bytearray(GOOD)
    data[index] ^= xor
    for candidate in (bytes(data), GOOD[:cut]):
        for pinned in (KEY_RAW, None):
            with pytest.raises(PassportError):
                Passport.verify(candidate, pinned_key=pinned, now=NOW)


def test_key_fingerprint() -> None:
    assert key_fingerprint(KEY_RAW) == "ed25519:" + hashlib.sha256(KEY_RAW).hexdigest()[:16]
    assert key_fingerprint(KEY_RAW) != key_fingerprint(OTHER_RAW)


def test_generate_rack_key_and_csr() -> None:
    key_pem, csr_pem = generate_rack_key_and_csr("edge-1")
    key = serialization.load_pem_private_key(key_pem, password=None)
    csr = x509.load_pem_x509_csr(csr_pem)
    assert isinstance(key, Ed25519PrivateKey)
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "edge-1"
    assert csr.public_key() == key.public_key()
    with pytest.raises(PassportError, match="invalid rack name"):
        generate_rack_key_and_csr("a/b")


# -- files -------------------------------------------------------------------------------------


def test_write_and_read_passport_file(tmp_path: Path) -> None:
    path = tmp_path / "state.flux"
    write_passport(path, GOOD)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_passport(path) == GOOD
    newer = make(issued_at=NOW + 1).sign(KEY)
    write_passport(path, newer)
    assert read_passport(path) == newer
    assert os.listdir(tmp_path) == ["state.flux"]  # no temp file left behind


def test_failed_write_keeps_the_old_passport_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "state.flux"
    write_passport(path, GOOD)
    with pytest.raises(TypeError):
        write_passport(path, "not bytes")  # type: ignore[arg-type]
    assert read_passport(path) == GOOD
    assert os.listdir(tmp_path) == ["state.flux"]


def test_write_into_a_missing_directory_is_a_passport_error(tmp_path: Path) -> None:
    with pytest.raises(PassportError, match="cannot write the passport"):
        write_passport(tmp_path / "missing" / "state.flux", GOOD)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_read_refuses_a_file_others_can_read(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "state.flux"
    write_passport(path, GOOD)
    path.chmod(mode)
    with pytest.raises(PassportError, match=f"chmod 600 {path}"):
        read_passport(path)


def test_read_missing_passport_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_passport(tmp_path / "state.flux")


def test_read_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(PassportError):
        read_passport(tmp_path)
