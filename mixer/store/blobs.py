"""Immutable content-addressed blobs on disk: `<root>/blobs/sha256/<2 hex>/<64 hex>`.

Writes are atomic and durable (`rack.files.write_atomic`: temp file in the target directory,
fsync, `os.replace`, fsync of the directory), so a crash leaves either the whole blob or none.
Concurrent writers of the same bytes are harmless: each writes its own temp file and the last
rename wins with identical content. Reads verify the SHA-256, so a corrupted file is reported,
never served.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mixer.errors import NotFoundError, StoreError
from mixer.store.refs import DIGEST_PREFIX, check_digest
from rack.files import write_atomic

BLOB_MODE = 0o644


class BlobDir:
    """The blob half of the CAS store; stateless apart from its root, safe from any thread."""

    __slots__ = ("root",)

    def __init__(self, root: Path) -> None:
        self.root = root / "blobs" / "sha256"

    def path_for(self, digest: str) -> Path:
        hex_part = check_digest(digest)[len(DIGEST_PREFIX) :]
        return self.root / hex_part[:2] / hex_part

    def write(self, digest: str, data: bytes) -> Path:
        """Store `data` under `digest` (which the caller computed); keep an intact existing copy,
        replace a corrupted one."""
        path = self.path_for(digest)
        if path.exists() and self._intact(path, digest):
            return path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, data, mode=BLOB_MODE)
        except OSError as exc:
            raise StoreError(f"cannot write blob {path}: {exc}") from exc
        return path

    def read(self, digest: str) -> bytes:
        """The verified bytes of `digest`; NotFoundError if absent, StoreError if corrupted."""
        path = self.path_for(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is missing from {path}") from None
        except OSError as exc:
            raise StoreError(f"cannot read blob {path}: {exc}") from exc
        actual = DIGEST_PREFIX + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise StoreError(
                f"blob {path} is corrupted: expected {digest}, content hashes to {actual}; "
                "re-import the original file to repair it"
            )
        return data

    def exists(self, digest: str) -> bool:
        return self.path_for(digest).is_file()

    def _intact(self, path: Path, digest: str) -> bool:
        try:
            return DIGEST_PREFIX + hashlib.sha256(path.read_bytes()).hexdigest() == digest
        except OSError:
            return False
