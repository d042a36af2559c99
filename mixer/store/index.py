"""The CAS index in DuckDB: `cas_refs(kind, name, tag) -> digest`.

The table is created through the mixer's shared migration runner (component `cas`).
`RefIndex` is not thread-safe on its own: `CasStore` serialises every call with its lock.
DuckDB errors are wrapped in `StoreError`; a duplicate key surfaces as `DuplicateRefError`
so the caller can re-read the winning row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from mixer.errors import StoreError
from mixer.migrations import Migration, apply_migrations
from mixer.store.refs import Kind, tag_order

COMPONENT = "cas"
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "cas_refs: name -> tag -> digest",
        (
            "CREATE TABLE IF NOT EXISTS cas_refs ("
            "kind TEXT NOT NULL, name TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL, "
            "size BIGINT NOT NULL, created_at TIMESTAMP NOT NULL, PRIMARY KEY (kind, name, tag))",
            "CREATE INDEX IF NOT EXISTS cas_refs_digest ON cas_refs (kind, digest)",
        ),
    ),
)

_COLUMNS = "kind, name, tag, digest, size, created_at"


@dataclass(frozen=True, slots=True)
class Ref:
    """One index entry: `name:tag` of `kind` points at `digest` (`sha256:<hex>`)."""

    kind: Kind
    name: str
    tag: str
    digest: str
    size: int
    created_at: datetime  # UTC, timezone-aware

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"


class DuplicateRefError(StoreError):
    """Internal: the (kind, name, tag) row appeared between the lookup and the insert."""


class RefIndex:
    """Queries and inserts on `cas_refs`, over a DuckDB connection owned by the caller."""

    __slots__ = ("_db",)

    def __init__(self, db: duckdb.DuckDBPyConnection) -> None:
        self._db = db
        try:
            apply_migrations(db, COMPONENT, MIGRATIONS)
        except duckdb.Error as exc:
            raise StoreError(f"cannot prepare the CAS index tables: {exc}") from exc

    def lookup(self, kind: Kind, name: str, tag: str) -> Ref | None:
        rows = self._query(
            f"SELECT {_COLUMNS} FROM cas_refs WHERE kind = ? AND name = ? AND tag = ?",
            [kind, name, tag],
        )
        return rows[0] if rows else None

    def insert(self, kind: Kind, name: str, tag: str, digest: str, size: int) -> Ref:
        ref = Ref(kind, name, tag, digest, size, datetime.now(UTC))
        try:
            self._db.execute(
                f"INSERT INTO cas_refs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                [kind, name, tag, digest, size, ref.created_at.replace(tzinfo=None)],
            )
        except duckdb.ConstraintException as exc:
            raise DuplicateRefError(f"{kind} {name}:{tag} already exists") from exc
        except duckdb.Error as exc:
            raise StoreError(f"cannot record {kind} {name}:{tag} in the index: {exc}") from exc
        return ref

    def refs(self, kind: Kind, name: str | None = None) -> list[Ref]:
        """Entries of `kind` (optionally one name), by name then SemVer tag order."""
        if name is None:
            rows = self._query(f"SELECT {_COLUMNS} FROM cas_refs WHERE kind = ?", [kind])
        else:
            rows = self._query(
                f"SELECT {_COLUMNS} FROM cas_refs WHERE kind = ? AND name = ?", [kind, name]
            )
        return sorted(rows, key=lambda r: (r.name, tag_order(r.tag)))

    def has_digest(self, kind: Kind, digest: str) -> bool:
        rows = self._query(
            f"SELECT {_COLUMNS} FROM cas_refs WHERE kind = ? AND digest = ? LIMIT 1",
            [kind, digest],
        )
        return bool(rows)

    def _query(self, sql: str, params: list[Any]) -> list[Ref]:
        try:
            rows = self._db.execute(sql, params).fetchall()
        except duckdb.Error as exc:
            raise StoreError(f"cannot read the CAS index: {exc}") from exc
        return [_to_ref(row) for row in rows]


def _to_ref(row: tuple[Any, ...]) -> Ref:
    kind, name, tag, digest, size, created_at = row
    return Ref(kind, name, tag, digest, int(size), created_at.replace(tzinfo=UTC))
