"""`fluxrig keys show|backup`: the mixer's cluster PKI (`<state_dir>/pki`), seen from its host.

    fluxrig keys show [--state-dir .fluxrig-mixer] [--json]
    fluxrig keys backup /media/usb/pki-2025-06 [--state-dir .fluxrig-mixer]

Strictly read-only on the PKI: `mixer.pki.ClusterPki.open` would create a missing PKI and may
re-issue the hub certificate, so this module reads the files itself with `cryptography` (a base
dependency: the command works without the mixer's extras). A key accessible by group or others is
refused as the mixer refuses it (`rack.files.check_private`); a missing directory or file is an
error naming what to do, and nothing is ever created in the PKI directory.

`backup` copies the bytes it checked, each file with its exact mode (atomically, via
`rack.files.write_atomic`), into a new or empty directory made 0700.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from rack.errors import FluxError
from rack.files import check_private, write_atomic
from rack.model.passport import key_fingerprint

DEFAULT_STATE_DIR = Path(".fluxrig-mixer")  # the mixer's default `mixer.state_dir`
KEYS = ("ca.key", "signing.key", "hub.key")  # as mixer.pki.FILES, which a test pins
FILES = ("ca.key", "ca.crt", "signing.key", "hub.key", "hub.crt")
_SPKI = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo


@dataclass(frozen=True, slots=True)
class PkiFile:
    """One file of the PKI as read: its bytes and mode (from the open file)."""

    path: Path
    data: bytes
    mode: int


@dataclass(frozen=True, slots=True)
class PkiView:
    """A read-only look at a cluster PKI directory, every file checked."""

    directory: Path
    files: dict[str, PkiFile]
    ca: x509.Certificate
    hub: x509.Certificate
    signing_public_raw: bytes

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the CA certificate's DER, as `ClusterPki.fingerprint()`."""
        return self.ca.fingerprint(hashes.SHA256()).hex()


def read_pki(directory: Path) -> PkiView:
    """Read and check the PKI in `directory` without writing anything; `FluxError` if unusable."""
    if not directory.is_dir():
        raise FluxError(f"no cluster PKI in {directory}: start fluxrig-mixer once to create it")
    if missing := [name for name in FILES if not (directory / name).is_file()]:
        raise FluxError(
            f"the PKI directory {directory} is incomplete: {', '.join(missing)} missing; "
            "restore it from a backup (fluxrig-mixer refuses to start on it)"
        )
    try:
        files = {name: _read(directory / name, private=name in KEYS) for name in FILES}
    except OSError as exc:
        raise FluxError(f"cannot read the PKI directory {directory}: {exc}") from exc
    ca, hub = _cert(files["ca.crt"]), _cert(files["hub.crt"])
    for key_name, cert in (("ca.key", ca), ("hub.key", hub)):
        public = _key(files[key_name]).public_key().public_bytes(*_SPKI)
        if public != cert.public_key().public_bytes(*_SPKI):
            raise FluxError(f"{files[key_name].path} does not match its certificate")
    signing = _key(files["signing.key"])
    if not isinstance(signing, ed25519.Ed25519PrivateKey):
        raise FluxError(f"{files['signing.key'].path} is not an Ed25519 private key")
    raw = signing.public_key().public_bytes_raw()
    return PkiView(directory, files, ca, hub, raw)


def _read(path: Path, *, private: bool) -> PkiFile:
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        if private and (problem := check_private(st, path, "private key")):
            raise FluxError(f"{problem}, and consider whether it was copied")
        return PkiFile(path, fh.read(), stat.S_IMODE(st.st_mode))


def _cert(file: PkiFile) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(file.data)
    except ValueError as exc:
        raise FluxError(f"certificate {file.path} is corrupt: {exc}") from None


def _key(file: PkiFile) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(file.data, password=None)
    except (ValueError, TypeError) as exc:
        raise FluxError(f"private key {file.path} is corrupt or encrypted ({exc})") from None


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in san]


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(view: PkiView) -> dict[str, Any]:
    """The machine-readable form of `keys show --json`."""
    ca, hub = view.ca, view.hub
    return {
        "directory": str(view.directory),
        "ca": {
            "subject": ca.subject.rfc4514_string(),
            "fingerprint_sha256": view.fingerprint(),
            "not_before": _time(ca.not_valid_before_utc),
            "not_after": _time(ca.not_valid_after_utc),
        },
        "signing_key": {
            "fingerprint": key_fingerprint(view.signing_public_raw),
            "public_key": view.signing_public_raw.hex(),
        },
        "hub": {
            "names": _names(hub),
            "not_after": _time(hub.not_valid_after_utc),
            "issued_by_ca": _issued_by(hub, ca),
        },
        "files": [
            {"name": name, "path": str(f.path), "mode": f"{f.mode:03o}", "bytes": len(f.data)}
            for name, f in view.files.items()
        ],
    }


def cmd_keys_show(args: argparse.Namespace) -> int:
    view = read_pki(args.state_dir / "pki")
    info = describe(view)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    ca, signing, hub = info["ca"], info["signing_key"], info["hub"]
    days = (view.hub.not_valid_after_utc - datetime.now(UTC)).days
    print(f"cluster PKI in {view.directory}")
    print(f"CA              {ca['subject']}")
    print(f"  fingerprint   {ca['fingerprint_sha256']}")
    print(f"  valid         {ca['not_before']} .. {ca['not_after']}")
    print(f"passport key    {signing['fingerprint']}")
    print(f"hub certificate {', '.join(hub['names']) or '(no names)'}")
    print(f"  expires       {hub['not_after']} ({'EXPIRED' if days < 0 else f'in {days} days'})")
    print("files")
    for file in info["files"]:
        print(f"  {file['name']:<12} {file['mode']}  {file['path']}")
    return 0


def cmd_keys_backup(args: argparse.Namespace) -> int:
    view, target = read_pki(args.state_dir / "pki"), Path(args.target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FluxError(f"backup target {target} exists and is not an empty directory")
    try:
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(target, 0o700)
        for name, file in view.files.items():
            write_atomic(target / name, file.data, mode=file.mode)
            print(f"wrote {target / name} ({file.mode:03o})")
    except OSError as exc:
        raise FluxError(f"cannot back up the PKI into {target}: {exc}") from exc
    print(
        f"fluxrig: warning: {target} holds the cluster's private keys (CA, passport signing, "
        "hub): whoever reads it can issue rack certificates and sign passports; keep it "
        "encrypted and offline",
        file=sys.stderr,
    )
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="the mixer's cluster PKI (run on the mixer host)")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"the mixer's state dir; the PKI is <state-dir>/pki (default {DEFAULT_STATE_DIR})",
    )
    show = actions.add_parser("show", parents=[common], help="CA, signing key, hub certificate")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=cmd_keys_show)
    backup = actions.add_parser(
        "backup", parents=[common], help="copy the PKI files, modes kept, into a new directory"
    )
    backup.add_argument("target", type=Path, help="new or empty directory")
    backup.set_defaults(func=cmd_keys_backup)
