"""The cluster PKI: real keys and certificates on disk, and a real mutual-TLS handshake."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mixer.errors import MixerError, PkiError
from mixer.pki import FILES, ClusterPki
from rack.model.passport import generate_rack_key_and_csr

_E = TypeVar("_E", bound=x509.ExtensionType)
KEYS = ("ca.key", "signing.key", "hub.key")
CERTS = ("ca.crt", "hub.crt")


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "pki"


@pytest.fixture
def pki(pki_dir: Path) -> ClusterPki:
    return ClusterPki.open(pki_dir)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _ext(cert: x509.Certificate, kind: type[_E]) -> _E:
    return cert.extensions.get_extension_for_class(kind).value


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _csr(key: CertificateIssuerPrivateKeyTypes, cn: str) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, algorithm)
    return csr.public_bytes(serialization.Encoding.PEM)


def test_pki_error_is_a_mixer_error() -> None:
    assert issubclass(PkiError, MixerError)


def test_first_start_creates_every_file_with_private_modes(pki: ClusterPki, pki_dir: Path) -> None:
    assert sorted(os.listdir(pki_dir)) == sorted(FILES)
    assert os.listdir(pki_dir.parent) == ["pki"]  # the staging directory is gone
    assert _mode(pki_dir) == 0o700
    assert {name: _mode(pki_dir / name) for name in KEYS} == dict.fromkeys(KEYS, 0o600)
    assert {name: _mode(pki_dir / name) for name in CERTS} == dict.fromkeys(CERTS, 0o644)


def test_ca_certificate(pki: ClusterPki) -> None:
    ca = _load(pki.ca_path)
    assert ca.subject == ca.issuer
    assert str(ca.subject.rfc4514_string()).startswith("CN=fluxrig cluster CA ")
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(public.curve, ec.SECP256R1)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 0)
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert (usage.key_cert_sign, usage.crl_sign, usage.digital_signature) == (True, True, False)
    assert ca.not_valid_after_utc - ca.not_valid_before_utc > timedelta(days=3649)
    assert pki.ca_pem == pki.ca_path.read_bytes()
    assert pki.ca_cert == ca
    assert pki.fingerprint() == ca.fingerprint(hashes.SHA256()).hex()


def test_hub_certificate_and_signing_key(pki: ClusterPki) -> None:
    hub = _load(pki.hub_cert_path)
    hub.verify_directly_issued_by(_load(pki.ca_path))
    sans = _ext(hub, x509.SubjectAlternativeName)
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert list(_ext(hub, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert (
        timedelta(days=364)
        < hub.not_valid_after_utc - hub.not_valid_before_utc
        < timedelta(days=366)
    )
    assert isinstance(pki.signing_key, ed25519.Ed25519PrivateKey)
    assert pki.signing_public_raw == pki.signing_key.public_key().public_bytes_raw()
    assert len(pki.signing_public_raw) == 32


def test_second_open_loads_the_same_pki(pki: ClusterPki, pki_dir: Path) -> None:
    before = {name: (pki_dir / name).read_bytes() for name in FILES}
    again = ClusterPki.open(pki_dir)
    assert again.fingerprint() == pki.fingerprint()
    assert again.signing_public_raw == pki.signing_public_raw
    assert {name: (pki_dir / name).read_bytes() for name in FILES} == before


def test_first_start_in_an_existing_empty_directory(tmp_path: Path) -> None:
    ClusterPki.open(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted(FILES)
    assert _mode(tmp_path) == 0o700


@pytest.mark.parametrize("name", KEYS)
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_key_accessible_by_others_is_refused(
    pki: ClusterPki, pki_dir: Path, name: str, mode: int
) -> None:
    path = pki_dir / name
    path.chmod(mode)
    with pytest.raises(PkiError, match=f"private key {path} is accessible.*chmod 600 {path}"):
        ClusterPki.open(pki_dir)


@pytest.mark.parametrize("name", FILES)
def test_corrupt_file_is_refused(pki: ClusterPki, pki_dir: Path, name: str) -> None:
    path = pki_dir / name
    path.write_bytes(b"-----BEGIN garbage-----\n" + path.read_bytes()[40:])
    with pytest.raises(PkiError, match=f"{path} is corrupt.*restore the PKI directory"):
        ClusterPki.open(pki_dir)


@pytest.mark.parametrize("name", FILES)
def test_missing_file_is_named_and_nothing_is_regenerated(
    pki: ClusterPki, pki_dir: Path, name: str
) -> None:
    (pki_dir / name).unlink()
    before = {other: (pki_dir / other).read_bytes() for other in FILES if other != name}
    with pytest.raises(PkiError, match=f"incomplete: {name} missing"):
        ClusterPki.open(pki_dir)
    assert {other: (pki_dir / other).read_bytes() for other in before} == before
    assert not (pki_dir / name).exists()


def test_key_that_does_not_match_its_certificate_is_refused(pki: ClusterPki, pki_dir: Path) -> None:
    (pki_dir / "hub.key").write_bytes((pki_dir / "ca.key").read_bytes())
    with pytest.raises(PkiError, match=f"{pki_dir / 'hub.key'} does not match .*hub.crt"):
        ClusterPki.open(pki_dir)


def test_signing_key_of_the_wrong_kind_is_refused(pki: ClusterPki, pki_dir: Path) -> None:
    (pki_dir / "signing.key").write_bytes((pki_dir / "hub.key").read_bytes())
    with pytest.raises(PkiError, match=r"signing\.key is not an Ed25519 private key"):
        ClusterPki.open(pki_dir)


def test_ca_certificate_that_is_not_a_ca_is_refused(pki: ClusterPki, pki_dir: Path) -> None:
    for suffix in ("key", "crt"):
        (pki_dir / f"ca.{suffix}").write_bytes((pki_dir / f"hub.{suffix}").read_bytes())
    with pytest.raises(PkiError, match=r"ca\.crt is not a self-signed CA certificate"):
        ClusterPki.open(pki_dir)


def test_hub_certificate_is_reissued_when_hub_hosts_change(pki: ClusterPki, pki_dir: Path) -> None:
    hub_key = (pki_dir / "hub.key").read_bytes()
    again = ClusterPki.open(pki_dir, hub_hosts=["mixer.example", "10.1.2.3", "::1"])
    sans = _ext(_load(pki_dir / "hub.crt"), x509.SubjectAlternativeName)
    assert sans.get_values_for_type(x509.DNSName) == ["mixer.example"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("::1"),
    ]
    assert again.fingerprint() == pki.fingerprint()
    assert (pki_dir / "hub.key").read_bytes() == hub_key
    assert _mode(pki_dir / "hub.crt") == 0o644


def test_hub_certificate_is_reissued_30_days_before_it_expires(pki_dir: Path) -> None:
    ClusterPki.open(pki_dir)
    old = _load(pki_dir / "hub.crt")
    later = old.not_valid_after_utc - timedelta(days=31)
    ClusterPki.open(pki_dir, clock=lambda: later)
    assert _load(pki_dir / "hub.crt") == old
    soon = old.not_valid_after_utc - timedelta(days=29)
    ClusterPki.open(pki_dir, clock=lambda: soon)
    new = _load(pki_dir / "hub.crt")
    assert new.not_valid_after_utc > old.not_valid_after_utc
    assert new.public_key() == old.public_key()


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ([], "non-empty list"),
        ("localhost", "non-empty list"),
        (["bad host"], "'bad host' is neither"),
    ],
)
def test_bad_hub_hosts_are_refused(pki_dir: Path, hosts: list[str], message: str) -> None:
    with pytest.raises(PkiError, match=message):
        ClusterPki.open(pki_dir, hub_hosts=hosts)
    assert not pki_dir.exists()


def test_issue_client_certificate_from_a_rack_csr(pki: ClusterPki) -> None:
    key_pem, csr_pem = generate_rack_key_and_csr("edge-1")
    cert = pki.issue_client_cert(csr_pem, "edge-1")
    cert.verify_directly_issued_by(pki.ca_cert)
    assert cert.subject.rfc4514_string() == "CN=edge-1"
    sans = _ext(cert, x509.SubjectAlternativeName)
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["fluxrig://rack/edge-1"]
    # the Snake's NATS user: unique per certificate, so one certificate can be revoked
    assert sans.get_values_for_type(x509.DNSName) == [f"{cert.serial_number:x}.edge-1.rack.fluxrig"]
    assert list(_ext(cert, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert cert.public_key() == key.public_key()
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == timedelta(days=90, minutes=5)
    assert pki.verify_client_cert(cert) == "edge-1"
    assert pki.verify_client_cert(cert.public_bytes(serialization.Encoding.PEM)) == "edge-1"
    assert pki.verify_client_cert(cert.public_bytes(serialization.Encoding.DER)) == "edge-1"
    other = pki.issue_client_cert(csr_pem, "edge-1")
    assert other.serial_number != cert.serial_number


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048)],
    ids=["p256", "rsa2048"],
)
def test_ecdsa_p256_and_rsa_csrs_are_accepted(
    pki: ClusterPki, key: CertificateIssuerPrivateKeyTypes
) -> None:
    cert = pki.issue_client_cert(_csr(key, "edge-2"), "edge-2", days=7)
    assert pki.verify_client_cert(cert) == "edge-2"


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP384R1()), rsa.generate_private_key(65537, 1024)],
    ids=["p384", "rsa1024"],
)
def test_other_csr_keys_are_refused(pki: ClusterPki, key: CertificateIssuerPrivateKeyTypes) -> None:
    with pytest.raises(PkiError, match=r"unsupported key.*Ed25519, ECDSA P-256 or RSA"):
        pki.issue_client_cert(_csr(key, "edge-2"), "edge-2")


def test_csr_for_another_rack_is_refused(pki: ClusterPki) -> None:
    _, csr_pem = generate_rack_key_and_csr("edge-1")
    with pytest.raises(PkiError, match="CSR is for CN 'edge-1', not for rack 'edge-2'"):
        pki.issue_client_cert(csr_pem, "edge-2")


def test_csr_with_a_broken_signature_is_refused(pki: ClusterPki) -> None:
    _, csr_pem = generate_rack_key_and_csr("edge-1")
    der = bytearray(x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte of the signature
    broken = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(PkiError, match="signature that does not verify"):
        pki.issue_client_cert(broken, "edge-1")


@pytest.mark.parametrize(
    ("csr", "rack", "days", "message"),
    [
        (b"not a csr", "edge-1", 90, "not a PEM certificate request"),
        (b"", "a/b", 90, "invalid rack name"),
        (b"", "edge-1", 0, "1..3650 days"),
    ],
)
def test_bad_issue_requests_are_refused(
    pki: ClusterPki, csr: bytes, rack: str, days: int, message: str
) -> None:
    with pytest.raises(PkiError, match=message):
        pki.issue_client_cert(csr, rack, days=days)


def test_certificate_from_another_pki_is_refused(pki: ClusterPki, tmp_path: Path) -> None:
    other = ClusterPki.open(tmp_path / "other")
    cert = other.issue_client_cert(generate_rack_key_and_csr("edge-1")[1], "edge-1")
    with pytest.raises(PkiError, match="'edge-1' was not issued by this cluster's CA"):
        pki.verify_client_cert(cert)


def test_expired_and_server_certificates_are_refused(pki: ClusterPki, pki_dir: Path) -> None:
    cert = pki.issue_client_cert(generate_rack_key_and_csr("edge-1")[1], "edge-1", days=1)
    tomorrow = datetime.now(UTC) + timedelta(days=1, minutes=1)
    with pytest.raises(PkiError, match=r"'edge-1' expired at .*; re-enroll the rack"):
        ClusterPki.open(pki_dir, clock=lambda: tomorrow).verify_client_cert(cert)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    with pytest.raises(PkiError, match=r"not valid before .*NTP"):
        ClusterPki.open(pki_dir, clock=lambda: yesterday).verify_client_cert(cert)
    with pytest.raises(PkiError, match="not a client certificate"):
        pki.verify_client_cert(pki.hub_cert_path.read_bytes())
    with pytest.raises(PkiError, match="not a certificate"):
        pki.verify_client_cert(b"garbage")


def test_backup_copies_every_file_with_its_mode(
    pki: ClusterPki, pki_dir: Path, tmp_path: Path
) -> None:
    target = pki.backup(tmp_path / "backup")
    assert sorted(os.listdir(target)) == sorted(FILES)
    for name in FILES:
        assert (target / name).read_bytes() == (pki_dir / name).read_bytes()
        assert _mode(target / name) == _mode(pki_dir / name)
    assert _mode(target) == 0o700
    assert ClusterPki.open(target).fingerprint() == pki.fingerprint()


def test_backup_refuses_a_non_empty_target(pki: ClusterPki, tmp_path: Path) -> None:
    target = tmp_path / "backup"
    target.mkdir()
    (target / "keep").write_text("mine")
    with pytest.raises(PkiError, match="not an empty directory"):
        pki.backup(target)
    assert os.listdir(target) == ["keep"]


# -- a real mutual-TLS handshake -----------------------------------------------------------------


def _client_context(pki: ClusterPki, issuer: ClusterPki, directory: Path) -> ssl.SSLContext:
    """A client that trusts `pki`'s CA and presents a rack certificate issued by `issuer`."""
    key_pem, csr_pem = generate_rack_key_and_csr("edge-1")
    cert = issuer.issue_client_cert(csr_pem, "edge-1")
    directory.mkdir()
    (directory / "rack.key").write_bytes(key_pem)
    (directory / "rack.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    context = ssl.create_default_context(cafile=pki.ca_path)
    context.load_cert_chain(directory / "rack.crt", directory / "rack.key")
    return context


async def _serve(pki: ClusterPki, seen: list[str]) -> asyncio.Server:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.hub_cert_path, pki.hub_key_path)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=pki.ca_path)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        seen.append(pki.verify_client_cert(peer))
        writer.write(b"ok")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)


async def test_mutual_tls_with_a_rack_certificate(pki: ClusterPki, tmp_path: Path) -> None:
    seen: list[str] = []
    async with await _serve(pki, seen) as server:
        port = server.sockets[0].getsockname()[1]
        client = _client_context(pki, pki, tmp_path / "rack")
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        assert await reader.readexactly(2) == b"ok"
        writer.close()
        await writer.wait_closed()
    assert seen == ["edge-1"]


async def test_mutual_tls_refuses_a_certificate_from_another_pki(
    pki: ClusterPki, tmp_path: Path
) -> None:
    seen: list[str] = []
    other = ClusterPki.open(tmp_path / "other")
    async with await _serve(pki, seen) as server:
        port = server.sockets[0].getsockname()[1]
        client = _client_context(pki, other, tmp_path / "rack")

        async def exchange() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
            try:
                return await reader.readexactly(2)
            finally:
                writer.close()

        # TLS 1.3: the client finishes its side first, then sees the server's alert or EOF.
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await exchange()
    assert seen == []  # the server never accepted the connection
