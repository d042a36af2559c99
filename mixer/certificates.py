"""Building and checking the cluster's X.509 certificates with `cryptography`: the self-signed CA,
the NATS hub's server certificate, a rack's client certificate from its CSR, and the inspectors
the PKI checks certificates with. Pure functions of keys, names and a time: the files they live
in are `mixer.pki`'s.

    ca_cert = issue_ca(ca_key, "fluxrig cluster CA 1a2b3c4d", now)
    hub_cert = issue_hub((ca_key, ca_cert), hub_key, hub_names(["mixer.example"]), now)
    assert issued_by(hub_cert, ca_cert)

The CA (10 years) has BasicConstraints `ca, path_length=0` and may only sign certificates and
CRLs. Every certificate it issues is an end entity with `digitalSignature`, one extended key usage
(serverAuth for the hub, 1 year; clientAuth for a rack, `fluxrig://rack/<name>` and
`leaf_user(name, serial)` as SANs: the hub maps a Snake to the NATS user of that exact
certificate, so removing the user revokes one certificate), subject and authority key
identifiers, a random serial, and a start backdated 5 minutes for clock skew. `hub_names` and
`client_key` raise `PkiError` for a host or a CSR key they refuse.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mixer.errors import PkiError

IssuerKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
CA_LIFETIME, HUB_LIFETIME = timedelta(days=3650), timedelta(days=365)
BACKDATE = timedelta(minutes=5)
RACK_URI = "fluxrig://rack/{}"


def leaf_user(rack: str, serial: int) -> str:
    """The DNS SAN of a rack's certificate, and the hub's NATS user its Snake maps to."""
    return f"{serial:x}.{rack}.rack.fluxrig"


def hub_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """The SANs of the hub certificate: an IP address or a DNS name per distinct host."""
    if isinstance(hosts, str) or not hosts:
        raise PkiError(f"hub_hosts must be a non-empty list of names or addresses, not {hosts!r}")
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?", host or "-"):
                raise PkiError(
                    f"hub host {host!r} is neither a DNS name nor an IP address"
                ) from None
            names.append(x509.DNSName(host))
    return names


def issue_ca(key: ec.EllipticCurvePrivateKey, common_name: str, now: datetime) -> x509.Certificate:
    """The self-signed cluster CA certificate of `key`."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = _builder(name, name, key.public_key(), now, CA_LIFETIME)
    builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    builder = builder.add_extension(_key_usage("key_cert_sign", "crl_sign"), critical=True)
    return builder.sign(key, hashes.SHA256())


def issue_hub(
    ca: tuple[IssuerKey, x509.Certificate],
    key: IssuerKey,
    names: list[x509.GeneralName],
    now: datetime,
) -> x509.Certificate:
    """The hub's server certificate for `key`, valid for the SANs `names`."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fluxrig hub")])
    eku = ExtendedKeyUsageOID.SERVER_AUTH
    return _issue(ca, subject, key.public_key(), names, eku, now, HUB_LIFETIME)


def issue_client(
    ca: tuple[IssuerKey, x509.Certificate],
    public_key: CertificatePublicKeyTypes,
    rack: str,
    now: datetime,
    lifetime: timedelta,
) -> x509.Certificate:
    """A rack's client certificate: CN `rack`, SANs `fluxrig://rack/<rack>` and `rack`."""
    serial = x509.random_serial_number()
    sans = [
        x509.UniformResourceIdentifier(RACK_URI.format(rack)),
        x509.DNSName(leaf_user(rack, serial)),
    ]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, rack)])
    eku = ExtendedKeyUsageOID.CLIENT_AUTH
    return _issue(ca, subject, public_key, sans, eku, now, lifetime, serial=serial)


def _issue(
    ca: tuple[IssuerKey, x509.Certificate],
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    names: Sequence[x509.GeneralName],
    eku: x509.ObjectIdentifier,
    now: datetime,
    lifetime: timedelta,
    *,
    serial: int | None = None,
) -> x509.Certificate:
    """An end-entity certificate signed by the CA (random serial, backdated 5 minutes)."""
    ca_key, ca_cert = ca
    builder = _builder(subject, ca_cert.subject, public_key, now, lifetime, serial)
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    for extension, critical in (
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (_key_usage("digital_signature"), True),
        (x509.ExtendedKeyUsage([eku]), False),
        (x509.SubjectAlternativeName(names), False),
        (aki, False),
    ):
        builder = builder.add_extension(extension, critical=critical)
    plain = isinstance(ca_key, ed25519.Ed25519PrivateKey)  # Ed25519 signs without a digest
    return builder.sign(ca_key, None if plain else hashes.SHA256())


def client_key(key: object, rack: str) -> CertificatePublicKeyTypes:
    """The CSR's public key if it is Ed25519, ECDSA P-256 or RSA of at least 2048 bits."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return key
    raise PkiError(
        f"the CSR of rack '{rack}' has an unsupported key ({type(key).__name__}); "
        "use Ed25519, ECDSA P-256 or RSA of at least 2048 bits"
    )


def common_names(name: x509.Name) -> list[str]:
    """Every CN of a subject, in order."""
    return [str(attr.value) for attr in name.get_attributes_for_oid(NameOID.COMMON_NAME)]


def issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """Whether `ca_cert` signed `cert` (names and signature; not validity times)."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def extension_items(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> list[object]:
    """The items of a list-like extension (SAN, EKU) of `cert`; empty when it has none."""
    try:
        return list(cast("list[object]", cert.extensions.get_extension_for_class(kind).value))
    except x509.ExtensionNotFound:
        return []


def parse_cert(data: bytes) -> x509.Certificate:
    """A PEM or DER certificate; ValueError when `data` is neither."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: IssuerKey) -> bytes:
    """`key` as unencrypted PKCS#8 PEM."""
    encoding, fmt = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    return key.private_bytes(encoding, fmt, serialization.NoEncryption())


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: CertificatePublicKeyTypes,
    now: datetime,
    lifetime: timedelta,
    serial: int | None = None,
) -> x509.CertificateBuilder:
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(ski, critical=False)
    )


def _key_usage(*granted: str) -> x509.KeyUsage:
    names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment"]
    names += ["key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"]
    return x509.KeyUsage(**{name: name in granted for name in names})
