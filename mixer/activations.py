"""The orchestrator's memory in DuckDB: every activation, and what each rack was pushed and applied.

    log = ActivationLog(db)                     # own cursor on the mixer's database; migrations run
    act = log.begin("echo:1.0.0", "sha256:…", "echo", previous=None)
    log.pushed("edge-1", act.id, "sha256:…")
    log.acked("edge-1", act.id, ok=True, error=None)
    log.finish(act.id, "active")                # the previous active one becomes `superseded`
    log.active()                                # what a restarted mixer resumes

Tables (component `orchestrator` of `mixer.migrations`):

- `activations`: one row per request. `state`: `activating` (racks are applying it), `active`
  (the scenario the fleet runs: at most one row), `superseded` (was active), `failed` (a rack
  could not apply it: the fleet went back to the previous one), `rejected` (pre-flight refused
  it: nothing was pushed).
- `deployments`: one row per push (append-only): `pushed` → `applied` | `failed`, with the
  rack's error and when it answered. The provenance view takes, per rack, the newest applied row
  (what runs there, since when) and the newest row of any state (did the last push apply?); a
  push waiting for its answer never hides what the rack runs.

Blocking (DuckDB): call it in a thread. A lock serialises the calls of one `ActivationLog`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import duckdb

from mixer.errors import MixerError
from mixer.migrations import Migration, apply_migrations

__all__ = [
    "ActivationLog",
    "ActivationRecord",
    "ActivationState",
    "DeploymentState",
    "RackProvenance",
]

ActivationState = Literal["activating", "active", "superseded", "failed", "rejected"]
DeploymentState = Literal["pushed", "applied", "failed"]

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "activations and deployments",
        (
            "CREATE SEQUENCE activation_ids START 1",
            "CREATE SEQUENCE deployment_ids START 1",
            """CREATE TABLE activations (
                id           BIGINT PRIMARY KEY DEFAULT nextval('activation_ids'),
                ref          TEXT,
                digest       TEXT NOT NULL,
                scenario     TEXT NOT NULL,
                state        TEXT NOT NULL,
                requested_at TIMESTAMP NOT NULL,
                finished_at  TIMESTAMP,
                error        TEXT,
                previous     BIGINT
            )""",
            """CREATE TABLE deployments (
                id         BIGINT PRIMARY KEY DEFAULT nextval('deployment_ids'),
                rack       TEXT NOT NULL,
                activation BIGINT NOT NULL,
                digest     TEXT,
                state      TEXT NOT NULL,
                pushed_at  TIMESTAMP NOT NULL,
                acked_at   TIMESTAMP,
                error      TEXT,
                report     TEXT
            )""",
            "CREATE INDEX deployments_rack ON deployments (rack, activation)",
        ),
    ),
)

_ACTIVATION_COLUMNS = "id, ref, digest, scenario, state, requested_at, finished_at, error, previous"


@dataclass(frozen=True, slots=True)
class ActivationRecord:
    """One activation request and how it ended. Times are timezone-aware (UTC)."""

    id: int
    ref: str | None
    digest: str
    scenario: str
    state: ActivationState
    requested_at: datetime
    finished_at: datetime | None
    error: str | None
    previous: int | None


@dataclass(frozen=True, slots=True)
class RackProvenance:
    """Which scenario runs on a rack, since when, and whether the newest push applied.

    `digest`/`ref`/`activation`/`since`: the scenario the rack last applied (None: nothing yet).
    `last_*`: the newest push to the rack, whatever its outcome (`pushed` = no answer yet)."""

    rack: str
    digest: str | None
    ref: str | None
    activation: int | None
    since: datetime | None
    last_activation: int
    last_digest: str | None
    last_state: DeploymentState
    last_error: str | None
    pushed_at: datetime


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None else None


def _activation(row: tuple[Any, ...]) -> ActivationRecord:
    id_, ref, digest, scenario, state, requested, finished, error, previous = row
    return ActivationRecord(
        id=int(id_),
        ref=ref,
        digest=digest,
        scenario=scenario,
        state=state,
        requested_at=_utc(requested) or datetime.now(UTC),
        finished_at=_utc(finished),
        error=error,
        previous=previous,
    )


class ActivationLog:
    """The `activations` and `deployments` tables; `close()` is idempotent."""

    def __init__(
        self,
        database: duckdb.DuckDBPyConnection,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._conn = database.cursor()
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        with self._lock:
            apply_migrations(self._conn, "orchestrator", MIGRATIONS)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    # -- activations --------------------------------------------------------------------------

    def begin(
        self, ref: str | None, digest: str, scenario: str, *, previous: int | None
    ) -> ActivationRecord:
        """Record a new activation in state `activating`."""
        with self._locked() as conn:
            row = conn.execute(
                "INSERT INTO activations (ref, digest, scenario, state, requested_at, previous) "
                f"VALUES (?, ?, ?, 'activating', ?, ?) RETURNING {_ACTIVATION_COLUMNS}",
                [ref, digest, scenario, self._now(), previous],
            ).fetchone()
        assert row is not None
        return _activation(row)

    def reject(self, ref: str | None, digest: str, scenario: str, error: str) -> ActivationRecord:
        """Record an activation that pre-flight refused (nothing was pushed)."""
        now = self._now()
        with self._locked() as conn:
            row = conn.execute(
                "INSERT INTO activations (ref, digest, scenario, state, requested_at, "
                "finished_at, error) VALUES (?, ?, ?, 'rejected', ?, ?, ?) "
                f"RETURNING {_ACTIVATION_COLUMNS}",
                [ref, digest, scenario, now, now, error],
            ).fetchone()
        assert row is not None
        return _activation(row)

    def finish(
        self, id_: int, state: Literal["active", "failed"], error: str | None = None
    ) -> ActivationRecord:
        """End an activation; `active` supersedes the previously active one (one transaction)."""
        now = self._now()
        with self._locked() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                if state == "active":
                    conn.execute(
                        "UPDATE activations SET state = 'superseded' "
                        "WHERE state = 'active' AND id <> ?",
                        [id_],
                    )
                row = conn.execute(
                    "UPDATE activations SET state = ?, finished_at = ?, error = ? WHERE id = ? "
                    f"RETURNING {_ACTIVATION_COLUMNS}",
                    [state, now, error, id_],
                ).fetchone()
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        if row is None:
            raise MixerError(f"activation {id_} does not exist")
        return _activation(row)

    def abandon_unfinished(self) -> int:
        """At start: activations left `activating` by a stopped mixer become `failed`."""
        with self._locked() as conn:
            rows = conn.execute(
                "UPDATE activations SET state = 'failed', finished_at = ?, "
                "error = 'the mixer stopped before every rack answered' "
                "WHERE state = 'activating' RETURNING id",
                [self._now()],
            ).fetchall()
        return len(rows)

    def active(self) -> ActivationRecord | None:
        with self._locked() as conn:
            row = conn.execute(
                f"SELECT {_ACTIVATION_COLUMNS} FROM activations WHERE state = 'active' "
                "ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return _activation(row) if row else None

    def get(self, id_: int) -> ActivationRecord | None:
        with self._locked() as conn:
            row = conn.execute(
                f"SELECT {_ACTIVATION_COLUMNS} FROM activations WHERE id = ?", [id_]
            ).fetchone()
        return _activation(row) if row else None

    def history(self, limit: int = 50) -> list[ActivationRecord]:
        """The newest activations first."""
        with self._locked() as conn:
            rows = conn.execute(
                f"SELECT {_ACTIVATION_COLUMNS} FROM activations ORDER BY id DESC LIMIT ?",
                [limit],
            ).fetchall()
        return [_activation(r) for r in rows]

    # -- deployments --------------------------------------------------------------------------

    def pushed(self, rack: str, activation: int, digest: str | None) -> None:
        """A push went out: a new `pushed` row."""
        with self._locked() as conn:
            conn.execute(
                "INSERT INTO deployments (rack, activation, digest, state, pushed_at) "
                "VALUES (?, ?, ?, 'pushed', ?)",
                [rack, activation, digest, self._now()],
            )

    def acked(
        self,
        rack: str,
        activation: int,
        digest: str | None,
        *,
        ok: bool,
        error: str | None = None,
        report: str | None = None,
    ) -> None:
        """The rack answered: its unanswered pushes of `activation` take the answer (a row is
        added when none waits, e.g. the push was recorded by a mixer that has since restarted)."""
        now = self._now()
        state = "applied" if ok else "failed"
        with self._locked() as conn:
            rows = conn.execute(
                "UPDATE deployments SET digest = ?, state = ?, acked_at = ?, error = ?, "
                "report = ? WHERE rack = ? AND activation = ? AND state = 'pushed' RETURNING id",
                [digest, state, now, error, report, rack, activation],
            ).fetchall()
            if not rows:
                conn.execute(
                    "INSERT INTO deployments (rack, activation, digest, state, pushed_at, "
                    "acked_at, error, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [rack, activation, digest, state, now, now, error, report],
                )

    def provenance(self, rack: str | None = None) -> list[RackProvenance]:
        """Per rack (sorted by name): what it runs since when, and its newest push."""
        where, args = ("WHERE rack = ?", [rack]) if rack is not None else ("", [])
        with self._locked() as conn:
            rows = conn.execute(
                f"""
                WITH latest AS (
                    SELECT * FROM deployments {where}
                    QUALIFY row_number() OVER (PARTITION BY rack ORDER BY id DESC) = 1
                ), running AS (
                    SELECT * FROM deployments WHERE state = 'applied'
                    QUALIFY row_number() OVER (PARTITION BY rack ORDER BY acked_at DESC,
                                               id DESC) = 1
                )
                SELECT l.rack, r.digest, a.ref, r.activation, r.acked_at,
                       l.activation, l.digest, l.state, l.error, l.pushed_at
                FROM latest l
                LEFT JOIN running r ON r.rack = l.rack
                LEFT JOIN activations a ON a.id = r.activation
                ORDER BY l.rack
                """,
                args,
            ).fetchall()
        return [
            RackProvenance(
                rack=r[0],
                digest=r[1],
                ref=r[2],
                activation=r[3],
                since=_utc(r[4]),
                last_activation=int(r[5]),
                last_digest=r[6],
                last_state=r[7],
                last_error=r[8],
                pushed_at=_utc(r[9]) or datetime.now(UTC),
            )
            for r in rows
        ]

    # -- internals ----------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            if self._closed:
                raise MixerError("the activation log is closed")
            yield self._conn

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC).replace(tzinfo=None)
