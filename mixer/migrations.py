"""A tiny schema-migration runner for the mixer's DuckDB database.

Each component (`registry`, later `telemetry`, ...) owns an ordered list of `Migration` steps
numbered 1, 2, 3, ... The table `schema_migrations(component, version, applied_at)` records which
steps ran. `apply_migrations` runs the missing steps of one component in a single transaction:
either all of them are applied and recorded, or none is. Reopening a database whose schema is
current runs nothing, so it is safe (and intended) to call on every start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from mixer.errors import MigrationError

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    component  TEXT      NOT NULL,
    version    INTEGER   NOT NULL,
    applied_at TIMESTAMP NOT NULL,
    PRIMARY KEY (component, version)
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: its version (1-based, contiguous) and the SQL statements it runs."""

    version: int
    description: str
    statements: tuple[str, ...]


def _check_order(component: str, migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(migrations) + 1)):
        raise MigrationError(
            f"migrations of {component!r} must be numbered 1..{len(migrations)} in order, "
            f"got {versions}"
        )


def current_version(conn: duckdb.DuckDBPyConnection, component: str) -> int:
    """The highest applied version of `component` (0 when none, or no bookkeeping table yet)."""
    conn.execute(_BOOKKEEPING)
    row = conn.execute(
        "SELECT coalesce(max(version), 0) FROM schema_migrations WHERE component = ?",
        [component],
    ).fetchone()
    return int(row[0]) if row else 0


def apply_migrations(
    conn: duckdb.DuckDBPyConnection, component: str, migrations: Sequence[Migration]
) -> list[int]:
    """Apply the missing migrations of `component` in one transaction; return the versions applied.

    Raises MigrationError when a step fails (everything is rolled back) or when the database holds
    a newer schema than this program knows (upgrade the mixer, or restore a matching backup).
    """
    _check_order(component, migrations)
    conn.execute("BEGIN TRANSACTION")
    try:
        have = current_version(conn, component)
        if have > len(migrations):
            raise MigrationError(
                f"the database has {component!r} schema version {have}, newer than the "
                f"{len(migrations)} this mixer knows; upgrade the mixer or restore a matching "
                "backup"
            )
        applied = [_apply_one(conn, component, m) for m in migrations[have:]]
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return applied


def _apply_one(conn: duckdb.DuckDBPyConnection, component: str, migration: Migration) -> int:
    try:
        for statement in migration.statements:
            conn.execute(statement)
    except duckdb.Error as exc:
        raise MigrationError(
            f"{component!r} migration {migration.version} ({migration.description}) failed: {exc}"
        ) from exc
    conn.execute(
        "INSERT INTO schema_migrations VALUES (?, ?, ?)",
        [component, migration.version, datetime.now(UTC).replace(tzinfo=None)],
    )
    return migration.version
