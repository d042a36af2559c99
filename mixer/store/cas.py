"""`CasStore`: the mixer's content-addressed store for scenarios and specs.

Blobs are immutable SHA-256 files under `<root>/blobs/sha256/`; the DuckDB table `cas_refs`
indexes `kind → name → tag → digest`. Digests are spelled `sha256:<64 hex>` everywhere, so a
digest is also a valid reference. A blob is written (atomically) before its index row, so the
index never points at a missing file; a crash in between leaves at most an unreferenced blob.

Thread-safety: every method is synchronous and may be called from any thread (the mixer uses
`asyncio.to_thread`). The store works on its own DuckDB cursor (a separate connection to the
caller's database, so the registry can share the database file) and serialises all index
operations with a `threading.Lock`, because one DuckDB connection must not be used by several
threads at once. Blob reads run outside the lock; blob writes are atomic renames.
"""

from __future__ import annotations

import builtins
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import duckdb

from mixer.errors import ConflictError, NotFoundError, StoreError
from mixer.store.blobs import BlobDir
from mixer.store.index import DuplicateRefError, Ref, RefIndex
from mixer.store.refs import (
    LATEST,
    Kind,
    check_kind,
    check_name,
    check_tag,
    digest_of,
    parse_ref,
    semver_of,
)


@dataclass(frozen=True, slots=True)
class PutResult:
    """Outcome of `CasStore.put`: `created` is False when name:tag already held these bytes;
    with `dry_run` nothing was written and `created` says whether it would have been."""

    digest: str
    created: bool
    size: int
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class Blob:
    """Verified content of one stored blob; `name`/`tag` are set when resolved from a name."""

    kind: Kind
    digest: str
    data: bytes
    name: str | None = None
    tag: str | None = None


class CasStore:
    """Immutable blobs under `root` indexed in the DuckDB database behind `db`."""

    def __init__(self, root: Path | str, db: duckdb.DuckDBPyConnection) -> None:
        self.root = Path(root)
        self._blobs = BlobDir(self.root)
        self._lock = threading.Lock()
        self._db = db.cursor()
        with self._lock:
            self._index = RefIndex(self._db)
        self._closed = False

    def close(self) -> None:
        """Close the store's own cursor (not the caller's connection); idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> CasStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def put(
        self, kind: str, name: str, tag: str, data: bytes, *, dry_run: bool = False
    ) -> PutResult:
        """Store `data` as `name:tag`. Identical bytes under the same name:tag are a no-op
        (and repair a damaged blob file); different bytes raise ConflictError."""
        k, name, tag = check_kind(kind), check_name(name), check_tag(tag)
        digest = digest_of(data)
        with self._lock:
            existing = self._index.lookup(k, name, tag)
            if existing is None and dry_run:
                return PutResult(digest, True, len(data), dry_run=True)
            if existing is None:
                self._blobs.write(digest, data)
                try:
                    self._index.insert(k, name, tag, digest, len(data))
                    return PutResult(digest, True, len(data))
                except DuplicateRefError:  # another connection to the database won the race
                    existing = self._index.lookup(k, name, tag)
            if existing is None:
                raise StoreError(f"{k} {name}:{tag} vanished from the index while importing")
            _refuse_other_bytes(existing, digest)
            if not dry_run:
                self._blobs.write(digest, data)
            return PutResult(digest, False, len(data), dry_run=dry_run)

    def get(self, kind: str, ref: str) -> Blob:
        """The verified bytes `ref` points at; NotFoundError, InvalidRefError or StoreError."""
        k = check_kind(kind)
        digest, entry = self._resolve(k, ref)
        data = self._blobs.read(digest)
        if entry is None:
            return Blob(k, digest, data)
        return Blob(k, digest, data, entry.name, entry.tag)

    def resolve(self, kind: str, ref: str) -> str:
        """The digest (`sha256:<hex>`) that `ref` names."""
        return self._resolve(check_kind(kind), ref)[0]

    def list(self, kind: str, name: str | None = None) -> builtins.list[Ref]:
        """Entries of `kind` sorted by name, then SemVer (non-SemVer tags last, alphabetical)."""
        k = check_kind(kind)
        wanted = None if name is None else check_name(name)
        with self._lock:
            return self._index.refs(k, wanted)

    def tags(self, kind: str, name: str) -> builtins.list[str]:
        """Tags of `name` in listing order; empty if the name is unknown."""
        return [r.tag for r in self.list(kind, name)]

    def _resolve(self, kind: Kind, ref: str) -> tuple[str, Ref | None]:
        parsed = parse_ref(ref)
        with self._lock:
            if parsed.digest is not None:
                if not self._index.has_digest(kind, parsed.digest):
                    raise NotFoundError(f"no {kind} with digest {parsed.digest} in the store")
                return parsed.digest, None
            entry = self._by_name(kind, parsed.name, parsed.tag)
        return entry.digest, entry

    def _by_name(self, kind: Kind, name: str, tag: str) -> Ref:
        if tag == LATEST:
            return _latest(kind, name, self._index.refs(kind, name))
        entry = self._index.lookup(kind, name, tag)
        if entry is None:
            raise _missing(kind, name, tag, [r.tag for r in self._index.refs(kind, name)])
        return entry


def _refuse_other_bytes(existing: Ref, digest: str) -> None:
    if existing.digest != digest:
        raise ConflictError(
            f"{existing.kind} {existing.ref} already holds {existing.digest}; the new content "
            f"is {digest}. Tags are immutable: import it under a new tag"
        )


def _latest(kind: Kind, name: str, refs: builtins.list[Ref]) -> Ref:
    versioned = [r for r in refs if semver_of(r.tag) is not None]
    if versioned:
        return versioned[-1]  # refs come sorted ascending by SemVer
    if not refs:
        raise _missing(kind, name, LATEST, [])
    raise NotFoundError(
        f"{kind} {name!r} has no SemVer tag for 'latest' to resolve; its tags: "
        f"{', '.join(r.tag for r in refs)}. Name a tag explicitly ({name}:<tag>)"
    )


def _missing(kind: Kind, name: str, tag: str, tags: builtins.list[str]) -> NotFoundError:
    if not tags:
        return NotFoundError(f"no {kind} named {name!r} in the store; import it first")
    return NotFoundError(f"no {kind} {name}:{tag} in the store; its tags: {', '.join(tags)}")
