"""How the telemetry writer survives a database under pressure: what a failure means, how long
to wait before trying again, how a retried batch is written exactly once, how it is logged.

DuckDB's `memory_limit` is one budget for the whole database: a read query that fills it makes
the writer's statements fail (`OutOfMemoryException`, on BEGIN, INSERT, COMMIT or ROLLBACK),
and a COMMIT, ROLLBACK or checkpoint that cannot allocate invalidates the database ("database
has been invalidated", `FatalException`) until it is opened again. Measured with DuckDB 2.0
(64MiB, a `list()` over 10^8 rows on two reader cursors): a COMMIT that raised had often
committed anyway, and so had a FATAL "COMMIT succeeded and is durable, but the autocheckpoint
failed". So the writer never trusts an error from COMMIT: every attempt counts the table's rows
first (`Pending.landed`), and a retry that finds its rows there stops.

A failure is one of (`classify`):

- `Failure.FATAL`: the database is unusable (invalidated, an internal error, a closed
  connection): the store reopens it, then retries;
- `Failure.TRANSIENT`: memory, disk, an aborted transaction, a failed reopen: retry the same
  rows after `backoff(tries)` (50 ms doubling to 2 s);
- `Failure.DATA`: the rows themselves (a conversion or constraint error; or no memory for them
  although no query runs): retrying cannot help; the store inserts request by request and drops
  only the requests that fail (logged, counted).

`Episode` logs a run of failures twice: a warning when it starts (with the reason), and an info
line once writes have succeeded for `QUIET` seconds (how long, how many batches waited and for
how long, attempts, reopens) — a query that keeps the writer short of memory for minutes gives
two lines, not two per batch.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from mixer.telemetry.errors import TelemetryClosedError, TelemetryError
from mixer.telemetry.flatten import Row
from mixer.telemetry.intake import Intake
from mixer.telemetry.schema import Table

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MOST",
    "CHECKPOINT_WAL",
    "CHECKPOINT_WAL_MOST",
    "CLOSE_GRACE",
    "EXCLUSIVE_AFTER",
    "INVALIDATED",
    "QUIET",
    "DataFault",
    "Episode",
    "Failure",
    "GiveUp",
    "Pending",
    "Retrier",
    "backoff",
    "checkpoint_due",
    "classify",
    "fatal_cause",
    "invalidated",
    "reason",
]

log = logging.getLogger("fluxrig.mixer.telemetry")
T = TypeVar("T")

BACKOFF_FIRST = 0.05  # seconds before the first retry; doubled every retry
BACKOFF_MOST = 2.0  # seconds between two retries at most
EXCLUSIVE_AFTER = 4  # failed attempts (~0.75 s) before a retry waits for the queries to end
QUIET = 5.0  # seconds of successful writes that end an episode
CLOSE_GRACE = 10.0  # seconds a failing write is still retried once the store is closing
INVALIDATED = "database has been invalidated"
CHECKPOINT_WAL = 16 << 20  # bytes of WAL that call for a checkpoint (DuckDB's default threshold)
CHECKPOINT_WAL_MOST = 4 * CHECKPOINT_WAL  # ... that make the checkpoint wait for the queries


class Failure(enum.Enum):
    DATA = "data"
    TRANSIENT = "transient"
    FATAL = "fatal"


class DataFault(TelemetryError):
    """Rows that cannot be inserted because of what they hold (raised with the cause)."""


class GiveUp(TelemetryClosedError):
    """The store is closing and a write still fails after its grace period."""


def invalidated(exc: BaseException) -> bool:
    """Whether `exc` says the database is invalidated (DuckDB does so on both kinds)."""
    fatal = isinstance(exc, duckdb.FatalException | duckdb.InternalException)
    return fatal or (isinstance(exc, duckdb.Error) and INVALIDATED in str(exc))


def fatal_cause(exc: BaseException | None) -> BaseException | None:
    """The error in `exc`'s chain (its causes and contexts) that invalidated the database."""
    for _ in range(8):
        if exc is None or invalidated(exc):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def classify(exc: BaseException) -> Failure:
    """What a failure of the writer's statements means (see the module doc)."""
    if invalidated(exc) or isinstance(exc, duckdb.ConnectionException):
        return Failure.FATAL
    if isinstance(exc, duckdb.OperationalError | duckdb.InterruptException):
        return Failure.TRANSIENT  # out of memory, I/O, an aborted or failed transaction
    if isinstance(exc, TelemetryError):
        return Failure.TRANSIENT  # the database could not be reopened (yet)
    return Failure.DATA  # conversion, constraint, or a value Python cannot hand to DuckDB


def backoff(tries: int) -> float:
    """Seconds to wait after the `tries`-th failed attempt in a row (1, 2, ...)."""
    return min(BACKOFF_MOST, BACKOFF_FIRST * 2.0 ** max(0, tries - 1))


def reason(exc: BaseException) -> str:
    """DuckDB's message without its advice (SET threads …): the first line, and for an
    invalidated database the error that invalidated it."""
    lines = [line.strip() for line in str(exc).strip().splitlines()] or [type(exc).__name__]
    text = lines[0]
    if INVALIDATED in text:
        cause = next((line for line in lines if line.startswith("Original error:")), "")
        text = (text + " " + cause.rstrip('"')).strip()
    return text if len(text) <= 400 else text[:397] + "..."


def checkpoint_due(database: Path, queries: int) -> bool:
    """Whether the writer should CHECKPOINT `database` now, `queries` running.

    DuckDB's automatic checkpoint runs inside the COMMIT that passes `checkpoint_threshold`,
    whatever the queries hold then, and a checkpoint that fails invalidates the database: under
    hungry queries (64MiB, two runs of 45 s) it caused 8 of 8 and 4 of 7 reopens. So the store
    turns it off and checkpoints under the exclusive side of its lock, when no query holds
    memory: once the WAL passes CHECKPOINT_WAL if no query runs, else once it passes
    CHECKPOINT_WAL_MOST (then it waits for them). Measured the same way (three runs): no
    checkpoint failed, 4 reopens per run, all after a failed COMMIT or ROLLBACK."""
    try:
        size = database.with_name(database.name + ".wal").stat().st_size
    except OSError:
        return False  # no WAL
    return size >= (CHECKPOINT_WAL_MOST if queries else CHECKPOINT_WAL)


@dataclass(slots=True)
class Pending:
    """`rows` for `table`, retried until they are in it exactly once (`attempt`).

    `base` is the table's row count the first attempt saw before inserting; the writer is the
    only one changing the live tables, so a later attempt that counts `base + len(rows)` knows
    an earlier COMMIT landed although it reported a failure."""

    table: Table
    rows: list[Row]
    step: int  # rows per INSERT statement
    base: int | None = None
    tries: int = 0

    def attempt(self, conn: Any, exclusive: bool) -> None:
        """One try, in a transaction of its own; nothing when an earlier try had landed. A
        failure before COMMIT raises DataFault when the rows are at fault: a conversion error,
        or no memory although no query runs (`exclusive`)."""
        if self.tries:
            _rollback(conn)  # an earlier try may have left its transaction open
        self.tries += 1
        conn.execute("BEGIN TRANSACTION")
        try:
            row = conn.execute(f"SELECT count(*) FROM {self.table.name}").fetchone()
        except BaseException:
            _rollback(conn)
            raise
        if self.landed(int(row[0]) if row else 0):
            _rollback(conn)
            return
        try:
            for start in range(0, len(self.rows), self.step):
                _insert(conn, self.table, self.rows[start : start + self.step])
        except Exception as exc:
            _rollback(conn)
            memory = isinstance(exc, duckdb.OutOfMemoryException)
            if (memory and exclusive) or (not memory and classify(exc) is Failure.DATA):
                raise DataFault(f"cannot insert into {self.table.name}: {reason(exc)}") from exc
            raise
        _commit(conn)

    def landed(self, count: int) -> bool:
        """Whether the rows are in the table, given its `count` now (before inserting)."""
        rows = len(self.rows)
        if self.base is None or count == self.base:
            self.base = count
            return False
        if count == self.base + rows:
            return True
        log.error("%s holds %d rows, neither %d nor %d: changed outside the telemetry writer; "
                  "inserting the %d rows again", self.table.name, count, self.base,
                  self.base + rows, rows)  # fmt: skip
        self.base = count
        return False


@dataclass(slots=True)
class Episode:
    """A run of failed attempts, until writes have succeeded for QUIET seconds."""

    reason: str
    refused: int  # the intake's refusals when it started
    started: float = field(default_factory=time.monotonic)
    last_failure: float = field(default_factory=time.monotonic)
    attempts: int = 0
    batches: int = 0  # writes that failed at least once
    waited: float = 0.0  # seconds they waited, in total
    longest: float = 0.0
    fatal: int = 0  # failures that invalidated the database (it was reopened)
    recovered: bool = False  # the last write succeeded

    def begin(self, rows_waiting: int) -> None:
        log.warning("telemetry writes are failing (%s); retrying with back-off (%g s to %g s), "
                    "%d rows wait in the write queue meanwhile and new requests queue behind "
                    "them (refused with 503 / UNAVAILABLE when it is full)", self.reason,
                    BACKOFF_FIRST, BACKOFF_MOST, rows_waiting)  # fmt: skip

    def failed(self, first: bool) -> None:
        self.attempts += 1
        self.batches += first
        self.last_failure = time.monotonic()
        self.recovered = False

    def wrote(self, waited: float | None) -> bool:
        """A write succeeded (after waiting `waited` seconds, if it failed first); whether the
        episode is over."""
        if waited is not None:
            self.waited += waited
            self.longest = max(self.longest, waited)
        self.recovered = True
        return time.monotonic() - self.last_failure >= QUIET

    def end(self, rows_waiting: int, refused: int) -> None:
        log.info("telemetry writes recovered: %d batches waited %.1f s in total (the longest "
                 "%.1f s) during %.1f s, %d failed attempts, %d fatal (database reopened); %d "
                 "rows in the write queue now, %d requests refused meanwhile (queue full)",
                 self.batches, self.waited, self.longest, self.last_failure - self.started,
                 self.attempts, self.fatal, rows_waiting, refused - self.refused)  # fmt: skip


class Retrier:
    """Runs the writer's attempts until they succeed (`__call__`), and logs the episodes.

    An attempt gets the connection (`connection()`, which reopens the database when it is not
    open) and whether it runs under `exclusive()`: from the EXCLUSIVE_AFTER-th retry on it
    does, so no query holds memory then. A fatal failure calls `recover(exc)`; every failure
    waits `backoff(tries)`. Once `closing_at` is set, an attempt still failing CLOSE_GRACE
    seconds later raises GiveUp."""

    def __init__(
        self,
        intake: Intake,
        *,
        connection: Callable[[], Any],
        exclusive: Callable[[], AbstractContextManager[None]],
        recover: Callable[[BaseException], None],
    ) -> None:
        self.intake = intake
        self._connection, self._exclusive, self._recover = connection, exclusive, recover
        self.retried = 0  # failed attempts
        self.episode: Episode | None = None
        self.closing_at: float | None = None

    def __call__(self, attempt: Callable[[Any, bool], T]) -> T:
        """`attempt(connection, exclusive)` until it returns; DataFault as it raises it."""
        tries, since = 0, None
        while True:
            exclusive = tries >= EXCLUSIVE_AFTER
            try:
                conn = self._connection()
                with self._exclusive() if exclusive else contextlib.nullcontext():
                    result = attempt(conn, exclusive)
            except DataFault:
                raise
            except Exception as exc:
                tries += 1
                since = since or time.monotonic()
                self._failed(exc, tries)
                time.sleep(backoff(tries))
            else:
                self._wrote(since and time.monotonic() - since)
                return result

    def close(self) -> None:
        """At the end: sum up an episode that had recovered (the quiet time did not pass)."""
        episode, self.episode = self.episode, None
        if episode is not None and episode.recovered:
            episode.end(self.intake.rows, self.intake.refused)

    def _failed(self, exc: Exception, tries: int) -> None:
        self.retried += 1
        episode = self.episode
        if episode is None:
            episode = self.episode = Episode(reason(exc), self.intake.refused)
            episode.begin(self.intake.rows)
        episode.failed(first=tries == 1)
        if classify(exc) is Failure.FATAL:
            episode.fatal += 1
            self._recover(exc)
        if self.closing_at is not None and time.monotonic() - self.closing_at >= CLOSE_GRACE:
            raise GiveUp(
                f"the telemetry database still fails {CLOSE_GRACE:g}s after closing began "
                f"({reason(exc)})"
            ) from exc

    def _wrote(self, waited: float | None) -> None:
        episode = self.episode
        if episode is not None and episode.wrote(waited):
            self.episode = None
            episode.end(self.intake.rows, self.intake.refused)


def _insert(conn: Any, table: Table, rows: list[Row]) -> None:
    if rows:
        conn.execute(table.insert(), [list(column) for column in zip(*rows, strict=True)])


def _commit(conn: Any) -> None:
    conn.execute("COMMIT")


def _rollback(conn: Any) -> None:
    with contextlib.suppress(duckdb.Error):  # none open, or the database failed: both fine
        conn.execute("ROLLBACK")
