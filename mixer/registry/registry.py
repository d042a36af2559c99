"""The rack registry over DuckDB: enrollment (hello), adoption, heartbeats, presence, lifecycle.

Synchronous on purpose: DuckDB calls block, so the mixer calls these methods through
`asyncio.to_thread`; one lock serialises them over the registry's own DuckDB connection, and every
method that writes runs in one transaction. The status rules are in `mixer.registry.model`.

Identity (until racks prove it with certificates): a name is unique. A hello whose attributes carry
a `public_key` different from the one stored for that name is another machine claiming the name
and is refused, whatever the stored rack's status; with no key stored yet it is the same rack.

MachineIDs: a new rack gets the lowest MachineID never allocated before (1..65535). Retired racks
keep their row and their MachineID, so a MachineID is never handed to a second rack and fluxIDs
stay unambiguous for the lifetime of the database.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from mixer.errors import (
    MachineIdsExhaustedError,
    RackConflictError,
    RackNameError,
    RackNotFoundError,
    RegistryError,
)
from mixer.migrations import apply_migrations
from mixer.registry import model
from mixer.registry.model import RackRecord, RackStatus
from rack.model.ids import MAX_MACHINE_ID, EntityId, EntityType
from rack.model.scenario import NAME_PATTERN

Clock = Callable[[], datetime]
_NAME_RE = re.compile(NAME_PATTERN)
_S = RackStatus

_FIRST_FREE_ID = """
SELECT min(candidate) FROM (
    SELECT 1 AS candidate WHERE NOT EXISTS (SELECT 1 FROM registry WHERE machine_id = 1)
    UNION ALL
    SELECT r.machine_id::INTEGER + 1 FROM registry r
    WHERE r.machine_id::INTEGER + 1 <= ?
      AND NOT EXISTS (SELECT 1 FROM registry s WHERE s.machine_id = r.machine_id::INTEGER + 1)
)
"""


@dataclass(frozen=True, slots=True)
class NamedAdoption:
    """Outcome of `adopt_named`: racks made active, racks left as they were, names not enrolled."""

    adopted: tuple[RackRecord, ...]
    unchanged: tuple[RackRecord, ...]  # already active, or suspended/retired (left alone)
    unknown: tuple[str, ...]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RackNameError(
            f"invalid rack name {name!r}: use 1..63 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )


def _json(value: Mapping[str, Any], what: str, name: str) -> str:
    try:
        return json.dumps(dict(value), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{what} of rack {name!r} are not JSON-serialisable: {exc}") from exc


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None else None


def _record(row: tuple[Any, ...]) -> RackRecord:
    eid, type_id, mid, name, status, adopted, version, attrs, stats, seen, created, updated = row
    return RackRecord(
        entity_id=int(eid),
        type_id=int(type_id),
        machine_id=int(mid),
        name=name,
        status=RackStatus(status),
        adopted=bool(adopted),
        version=version,
        attributes=json.loads(attrs),
        stats=json.loads(stats),
        last_seen=_aware(seen),
        created_at=created.replace(tzinfo=UTC),
        updated_at=updated.replace(tzinfo=UTC),
    )


def _refuse(rec: RackRecord, op: str, allowed: Iterable[RackStatus], hint: str = "") -> None:
    ok = ", ".join(sorted(s.value for s in allowed))
    raise RackConflictError(
        f"cannot {op} rack {rec.name!r}: it is {rec.status.value}; "
        f"{op} applies to racks that are {ok}{hint}"
    )


def _returning(rec: RackRecord) -> RackStatus:
    """Status of a rack coming back (offline → seen again, suspended → resumed)."""
    return _S.ACTIVE if rec.adopted else _S.PENDING


class Registry:
    """The `registry` table of the mixer's DuckDB database. Close it (or use `with`) when done."""

    def __init__(
        self,
        database: str | os.PathLike[str] | duckdb.DuckDBPyConnection,
        *,
        clock: Clock = _utc_now,
        max_machine_id: int = MAX_MACHINE_ID,
    ) -> None:
        if not 1 <= max_machine_id <= MAX_MACHINE_ID:
            raise ValueError(f"max_machine_id must be in 1..{MAX_MACHINE_ID}, got {max_machine_id}")
        if isinstance(database, duckdb.DuckDBPyConnection):
            self._conn = database.cursor()  # own connection to the caller's database
        else:
            self._conn = duckdb.connect(os.fspath(database))
        self._clock = clock
        self._max_machine_id = max_machine_id
        self._lock = threading.Lock()
        self._closed = False
        with self._lock:
            apply_migrations(self._conn, "registry", model.REGISTRY_MIGRATIONS)

    def close(self) -> None:
        """Close the registry's connection; idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queries -------------------------------------------------------------------------------

    def get(self, name: str) -> RackRecord:
        """The rack registered as `name`; RackNotFoundError if there is none."""
        with self._locked() as conn:
            return self._require(conn, name)

    def list(self, status: RackStatus | str | None = None) -> builtins.list[RackRecord]:
        """All racks (or those in `status`), ordered by MachineID."""
        with self._locked() as conn:
            if status is None:
                rows = conn.execute(f"SELECT {model.COLUMNS} FROM registry ORDER BY machine_id")
            else:
                rows = conn.execute(
                    f"SELECT {model.COLUMNS} FROM registry WHERE status = ? ORDER BY machine_id",
                    [RackStatus(status).value],
                )
            return [_record(r) for r in rows.fetchall()]

    # -- enrollment and presence ---------------------------------------------------------------

    def hello(
        self,
        name: str,
        *,
        version: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        auto_adopt: bool = False,
    ) -> RackRecord:
        """A rack announces itself. New name: allocate a MachineID, status `pending` (`active`
        with `auto_adopt`). Known name: refresh version/attributes/last_seen and keep its MachineID;
        an offline rack comes back (see the model's table); a retired one is refused."""
        _check_name(name)
        attrs = dict(attributes) if attributes is not None else None
        attrs_json = _json(attrs, "attributes", name) if attrs is not None else None
        with self._tx() as conn:
            now = self._now()
            rec = self._find(conn, name)
            if rec is None:
                return self._insert(conn, name, version, attrs_json or "{}", auto_adopt, now)
            if rec.status is _S.RETIRED:
                raise RackConflictError(
                    f"rack {name!r} was retired; rename the retired rack (`fluxrig racks "
                    f"rename {name} <new-name>`) to enroll a new one under this name"
                )
            self._check_identity(rec, attrs)
            if attrs is not None and rec.public_key is not None:
                attrs.setdefault("public_key", rec.public_key)
                attrs_json = _json(attrs, "attributes", name)
            status = _returning(rec) if rec.status is _S.OFFLINE else rec.status
            adopted = rec.adopted
            if auto_adopt and status is _S.PENDING:
                status, adopted = _S.ACTIVE, True
            changes: dict[str, Any] = {"status": status, "adopted": adopted, "last_seen": now}
            changes["version"] = version if version is not None else rec.version
            if attrs_json is not None:
                changes["attributes"] = attrs_json
            return self._update(conn, rec, now, **changes)

    def heartbeat(self, name: str, stats: Mapping[str, Any]) -> RackRecord:
        """Record a heartbeat: store `stats`, bump `last_seen`, bring an offline rack back."""
        stats_json = _json(stats, "stats", name)
        with self._tx() as conn:
            now = self._now()
            rec = self._require(conn, name)
            if rec.status is _S.RETIRED:
                raise RackConflictError(
                    f"rack {name!r} was retired and may not send heartbeats; stop that machine "
                    "or enroll it under a new name"
                )
            status = _returning(rec) if rec.status is _S.OFFLINE else rec.status
            return self._update(conn, rec, now, status=status, stats=stats_json, last_seen=now)

    def sweep(self, max_missed: int, interval: float) -> builtins.list[RackRecord]:
        """Mark active/pending racks not seen for `max_missed * interval` seconds `offline`;
        return the racks that changed."""
        if max_missed < 1 or interval <= 0:
            raise ValueError(f"need max_missed >= 1 and interval > 0, got {max_missed}, {interval}")
        with self._tx() as conn:
            now = self._now()
            cutoff = now - timedelta(seconds=max_missed * interval)
            rows = conn.execute(
                f"UPDATE registry SET status = 'offline', updated_at = ? "
                f"WHERE status IN ('active', 'pending') AND (last_seen IS NULL OR last_seen < ?) "
                f"RETURNING {model.COLUMNS}",
                [now, cutoff],
            ).fetchall()
            return sorted((_record(r) for r in rows), key=lambda r: r.machine_id)

    # -- operator actions ----------------------------------------------------------------------

    def adopt(self, name: str) -> RackRecord:
        """pending|offline → active (no-op when already active)."""
        with self._tx() as conn:
            return self._adopt(conn, self._require(conn, name))

    def adopt_named(self, names: Iterable[str]) -> NamedAdoption:
        """Adoption by a scenario naming racks: adopt those pending/offline, leave active,
        suspended and retired ones alone, and report names that never enrolled."""
        adopted: builtins.list[RackRecord] = []
        unchanged: builtins.list[RackRecord] = []
        unknown: builtins.list[str] = []
        with self._tx() as conn:
            for name in dict.fromkeys(names):
                rec = self._find(conn, name)
                if rec is None:
                    unknown.append(name)
                elif rec.status in (_S.PENDING, _S.OFFLINE):
                    adopted.append(self._adopt(conn, rec))
                else:
                    unchanged.append(rec)
        return NamedAdoption(tuple(adopted), tuple(unchanged), tuple(unknown))

    def suspend(self, name: str) -> RackRecord:
        """active|offline → suspended (no-op when suspended). Heartbeats keep it suspended."""
        with self._tx() as conn:
            rec = self._require(conn, name)
            if rec.status not in model.SUSPENDABLE:
                _refuse(rec, "suspend", model.SUSPENDABLE, "; adopt it first")
            if rec.status is _S.SUSPENDED:
                return rec
            return self._update(conn, rec, self._now(), status=_S.SUSPENDED)

    def resume(self, name: str) -> RackRecord:
        """suspended → active (pending if it was never adopted); no-op when active."""
        with self._tx() as conn:
            rec = self._require(conn, name)
            if rec.status not in model.RESUMABLE:
                _refuse(rec, "resume", model.RESUMABLE)
            if rec.status is _S.ACTIVE:
                return rec
            return self._update(conn, rec, self._now(), status=_returning(rec))

    def retire(self, name: str) -> RackRecord:
        """Any status → retired, for good. The row and its MachineID stay reserved."""
        with self._tx() as conn:
            rec = self._require(conn, name)
            if rec.status is _S.RETIRED:
                return rec
            return self._update(conn, rec, self._now(), status=_S.RETIRED)

    def rename(self, old: str, new: str) -> RackRecord:
        """Rename a rack, keeping its MachineID and status; `new` must be free. The rack itself
        must then announce `new`: a hello under the old name would enroll a new rack."""
        _check_name(new)
        with self._tx() as conn:
            rec = self._require(conn, old)
            if old == new:
                return rec
            taken = self._find(conn, new)
            if taken is not None:
                raise RackConflictError(
                    f"cannot rename rack {old!r} to {new!r}: that name is taken by MachineID "
                    f"{taken.machine_id} ({taken.status.value}); pick another name"
                )
            return self._update(conn, rec, self._now(), name=new)

    # -- internals -----------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            if self._closed:
                raise RegistryError("the registry is closed")
            yield self._conn

    @contextmanager
    def _tx(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._locked() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the registry clock must return timezone-aware datetimes")
        return now.astimezone(UTC).replace(tzinfo=None)

    @staticmethod
    def _find(conn: duckdb.DuckDBPyConnection, name: str) -> RackRecord | None:
        row = conn.execute(
            f"SELECT {model.COLUMNS} FROM registry WHERE name = ?", [name]
        ).fetchone()
        return _record(row) if row is not None else None

    def _require(self, conn: duckdb.DuckDBPyConnection, name: str) -> RackRecord:
        rec = self._find(conn, name)
        if rec is None:
            raise RackNotFoundError(f"no rack named {name!r} is registered")
        return rec

    @staticmethod
    def _check_identity(rec: RackRecord, attrs: Mapping[str, Any] | None) -> None:
        claimed = attrs.get("public_key") if attrs is not None else None
        if claimed is not None and rec.public_key is not None and str(claimed) != rec.public_key:
            raise RackConflictError(
                f"rack name {rec.name!r} is already taken by another machine (MachineID "
                f"{rec.machine_id}, different public key); give this rack another name, or retire "
                "and rename the old record if the machine was reinstalled"
            )

    def _adopt(self, conn: duckdb.DuckDBPyConnection, rec: RackRecord) -> RackRecord:
        if rec.status not in model.ADOPTABLE:
            hint = "; resume it instead" if rec.status is _S.SUSPENDED else ""
            _refuse(rec, "adopt", model.ADOPTABLE, hint)
        if rec.status is _S.ACTIVE:
            return rec
        return self._update(conn, rec, self._now(), status=_S.ACTIVE, adopted=True)

    def _insert(
        self,
        conn: duckdb.DuckDBPyConnection,
        name: str,
        version: str | None,
        attrs_json: str,
        adopt: bool,
        now: datetime,
    ) -> RackRecord:
        row = conn.execute(_FIRST_FREE_ID, [self._max_machine_id]).fetchone()
        if row is None or row[0] is None:
            raise MachineIdsExhaustedError(
                f"cannot enroll rack {name!r}: all MachineIDs 1..{self._max_machine_id} are "
                "allocated (retired racks keep theirs); use another mixer database/cluster"
            )
        machine_id = int(row[0])
        status = _S.ACTIVE if adopt else _S.PENDING
        conn.execute(
            f"INSERT INTO registry ({model.COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?::JSON, '{}'::JSON, ?, ?, ?)",
            [
                int(EntityId(EntityType.RACK, machine_id)),
                int(EntityType.RACK),
                machine_id,
                name,
                status.value,
                adopt,
                version,
                attrs_json,
                now,
                now,
                now,
            ],
        )
        return self._require(conn, name)

    def _update(
        self, conn: duckdb.DuckDBPyConnection, rec: RackRecord, now: datetime, **changes: Any
    ) -> RackRecord:
        # Column names come from this module only, never from callers' data.
        changes["updated_at"] = now
        sets = ", ".join(
            f"{col} = ?::JSON" if col in ("attributes", "stats") else f"{col} = ?"
            for col in changes
        )
        values = [v.value if isinstance(v, RackStatus) else v for v in changes.values()]
        row = conn.execute(
            f"UPDATE registry SET {sets} WHERE entity_id = ? RETURNING {model.COLUMNS}",
            [*values, rec.entity_id],
        ).fetchone()
        assert row is not None
        return _record(row)
