"""`Archiver`: closed hours move from the live tables to hourly Parquet partitions; retention.

    <state_dir>/telemetry/archive/<table>/date=YYYY-MM-DD/hour=HH/part-<uuid>.parquet

`archive(conn, now)` (on the writer thread, which holds the only writing connection) moves every
hour of a live table that ended at least `grace` before `now`, exactly once:

1. `COPY ... (FORMAT parquet)` of the hour's rows to `.part-<uuid>.parquet.tmp` in the partition
   (hidden from the queries, whose glob is `part-*.parquet`), synced with its directory;
2. under the exclusive side of the store's lock (a query sees the rows either live or archived,
   never both, never neither): the rows are deleted in a transaction (exactly as many as were
   copied, else nothing is), COMMIT, and the file is renamed to `part-<uuid>.parquet`.

A COMMIT that raises may have committed (measured with DuckDB 2.0, `mixer.telemetry.recovery`),
so its error is not trusted: the temporary file is settled from the database (`settle`). If
every row of the file is still in the live table (counted right after the COMMIT; compared with
`INTERSECT ALL` later, so rows that arrived since for the same hour do not confuse it) the
DELETE did not land: the file is removed and the hour moves at a later run. Otherwise it
landed: the file is renamed into place. A fatal error (the database invalidated) leaves the
file undecided and is raised: the store reopens the database as for a failed write and, in the
periodic run, runs it again at once. Every run settles the temporary files first and moves
nothing while one is left; at start, before the store opens the database, `settle_leftovers`
settles those a crash left (a file that cannot be read was cut short before any row was
deleted: removed). Any other failure leaves the hour's rows live; it is logged once per episode
(a warning at the first, an info line once a run succeeds again) and retried at the next run.
Rows arriving later for an archived hour go to another part file of the same partition at the
next run.

`retain(now)`: deletes whole partitions (hour directories) that ended more than `retention`
before `now`, and date directories left empty; nothing else (files it does not recognise
stay). Both run every `archive_interval` on the writer thread, and on demand
(`TelemetryHub.archive_now(now=...)`, `apply_retention(now=...)`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from mixer.telemetry.errors import TelemetryError
from mixer.telemetry.recovery import Failure, classify, reason
from mixer.telemetry.schema import TABLES, Table
from mixer.telemetry.store import DATABASE_FILE, SharedLock

__all__ = ["HOUR", "Archiver", "Move", "has_parquet", "parquet_glob", "partition_dir"]

log = logging.getLogger("fluxrig.mixer.telemetry")

HOUR = timedelta(hours=1)
_DATE = re.compile(r"date=(\d{4}-\d{2}-\d{2})")
_HOUR = re.compile(r"hour=(\d{2})")
_TEMP_SUFFIX = ".parquet.tmp"
_TABLES = {table.name: table for table in TABLES}


def partition_dir(root: Path, table: str, hour: datetime) -> Path:
    """The directory of `table`'s partition of the hour starting at `hour` (UTC)."""
    return root / table / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}"


def parquet_glob(root: Path, table: str) -> str:
    """The glob of every archived part file of `table` (never the temporary files)."""
    return str(root / table / "date=*" / "hour=*" / "part-*.parquet")


def has_parquet(root: Path, table: str) -> bool:
    return any((root / table).glob("date=*/hour=*/part-*.parquet"))


def utc_naive(moment: datetime) -> datetime:
    """`moment` as the naive UTC the tables hold (naive input is taken as UTC already)."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class Move:
    """One hour of one table on its way to Parquet: its temporary file (`temp`) until the move
    is settled, then its part file (`final`)."""

    table: Table
    hour: datetime
    temp: Path

    @classmethod
    def of(cls, temp: Path) -> Move | None:
        """The move that left `temp` (`<table>/date=…/hour=…/.part-….parquet.tmp`), if any."""
        table = _TABLES.get(temp.parents[2].name)
        date, hour = _DATE.fullmatch(temp.parents[1].name), _HOUR.fullmatch(temp.parent.name)
        start = _start(date.group(1), hour.group(1)) if date and hour else None
        return None if table is None or start is None else cls(table, start, temp)

    @property
    def final(self) -> Path:
        return self.temp.with_name(self.temp.name.removeprefix(".").removesuffix(".tmp"))

    @property
    def where(self) -> str:
        column, start = self.table.time, _literal(self.hour)
        return f"{column} >= {start} AND {column} < {_literal(self.hour + HOUR)}"


class Archiver:
    """Archive and retention over one archive directory; see the module doc."""

    def __init__(
        self,
        root: Path,
        lock: SharedLock,
        *,
        grace: timedelta,
        retention: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.root = root
        self.lock = lock
        self.grace = grace
        self.retention = retention
        self.clock = clock
        self.failures = 0  # failed steps (moves, settlements, retention), logged per episode
        self._trouble: tuple[float, int] | None = None  # (since, failures then) in an episode

    def run(self, conn: Any) -> None:
        """The periodic run (writer thread): archive, then retention, at the clock's now.
        Raises only a fatal error (the store reopens the database)."""
        now = self.clock()
        written = self.archive(conn, now)
        removed: list[Path] = []
        with self._trying("delete the partitions past retention"):
            removed = self.retain(now)
        if written or removed:
            log.info("telemetry archive: %d part files written, %d partitions removed",
                     len(written), len(removed))  # fmt: skip

    # -- archive ----------------------------------------------------------------------------------

    def archive(self, conn: Any, now: datetime) -> list[Path]:
        """Move every hour that closed `grace` before `now` to Parquet; the files written.

        Raises only a fatal error; any other failure is logged and retried at the next run."""
        failures, written = self.failures, list[Path]()
        with self._trying("settle an archive move cut short"):
            written = self._settle_all(conn)
        if self.failures > failures:
            return written  # nothing moves while a temporary file is undecided
        cutoff = _hour_floor(utc_naive(now) - self.grace)
        for table in TABLES:
            hours: list[tuple[datetime]] = []
            with self._trying(f"list the closed hours of {table.name}"):
                hours = conn.execute(
                    f"SELECT DISTINCT date_trunc('hour', {table.time}) AS h FROM {table.name} "
                    f"WHERE {table.time} < ? ORDER BY h",
                    [cutoff],
                ).fetchall()
            for (hour,) in hours:
                with self._trying(f"archive {table.name} of {hour:%Y-%m-%d %H}:00"):
                    path = self._move(conn, table, hour)
                    written += [path] if path is not None else []
        if self.failures == failures:
            self._recovered()
        return written

    def _move(self, conn: Any, table: Table, hour: datetime) -> Path | None:
        directory = partition_dir(self.root, table.name, hour)
        directory.mkdir(parents=True, exist_ok=True)
        move = Move(table, hour, directory / f".part-{uuid.uuid4().hex}{_TEMP_SUFFIX}")
        copied = self._copy(conn, move)
        if copied == 0:
            return None
        with self.lock.exclusive():
            self._swap(conn, move, copied)
        _fsync_dir(directory)
        return move.final

    def _copy(self, conn: Any, move: Move) -> int:
        """The hour's rows written to the temporary file, synced; how many (no file if none)."""
        try:
            copied = _count(
                conn,
                f"COPY (SELECT * FROM {move.table.name} WHERE {move.where}) TO "
                f"{_quote(move.temp)} (FORMAT parquet, COMPRESSION zstd)",
            )
            if copied:
                _fsync(move.temp)
                _fsync_dir(move.temp.parent)  # found at start if a crash follows the DELETE
        except BaseException:
            move.temp.unlink(missing_ok=True)
            raise
        if not copied:
            move.temp.unlink(missing_ok=True)
        return copied

    def _swap(self, conn: Any, move: Move, copied: int) -> None:
        """Delete the archived rows and put the file in place, both or neither (see the
        module doc for a COMMIT that raises)."""
        try:
            conn.execute("BEGIN TRANSACTION")
            deleted = _count(conn, f"DELETE FROM {move.table.name} WHERE {move.where}")
            if deleted != copied:
                raise TelemetryError(
                    f"archiving {move.table.name} ({move.where}): {copied} rows written to "
                    f"Parquet but {deleted} would be deleted; the rows stay in the live table"
                )
        except BaseException:
            _rollback(conn)
            move.temp.unlink(missing_ok=True)
            raise
        try:
            _commit(conn)
        except Exception as exc:
            if classify(exc) is Failure.FATAL:
                raise  # the file stays: settled once the store has reopened the database
            _rollback(conn)  # a COMMIT that did not commit may leave its transaction open
            if not self.settle(conn, move, untouched=True):
                raise  # not committed: the rows are live, the hour moves at the next run
            log.debug("COMMIT of %s raised (%s) but had committed", move.final, reason(exc))
            return
        move.temp.rename(move.final)  # fails: the file stays, settled at the next run

    # -- settling ---------------------------------------------------------------------------------

    def settle(self, conn: Any, move: Move, *, untouched: bool = False) -> bool:
        """Decide `move` from the database: True when its DELETE committed (the temporary file
        is renamed into place), False when it did not (the file is removed). Raises, leaving
        the file, when the database cannot tell now. `untouched`: nothing was written to the
        live table since the COPY, so the counts decide (no rows compared)."""
        try:
            rows = _count(conn, f"SELECT count(*) FROM read_parquet({_quote(move.temp)})")
        except duckdb.Error as exc:
            if classify(exc) is not Failure.DATA:
                raise
            log.warning("telemetry archive: removing %s, which cannot be read (%s): a move cut "
                        "short before any row was deleted", move.temp, reason(exc))  # fmt: skip
            rows = 0
        if rows == 0 or self._still_live(conn, move, rows, untouched):
            move.temp.unlink(missing_ok=True)
            return False
        move.temp.rename(move.final)
        return True

    def _still_live(self, conn: Any, move: Move, rows: int, untouched: bool) -> bool:
        """Whether all `rows` of the temporary file are still in the live table."""
        name, where = move.table.name, move.where
        try:
            live = _count(conn, f"SELECT count(*) FROM {name} WHERE {where}")
        except duckdb.CatalogException:
            return False  # no live table (a database file deleted): nothing is live
        if live < rows or untouched:
            return live >= rows
        columns = ", ".join(move.table.column_names)
        both = _count(
            conn,
            f"SELECT count(*) FROM (SELECT {columns} FROM read_parquet({_quote(move.temp)}) "
            f"INTERSECT ALL SELECT {columns} FROM {name} WHERE {where})",
        )
        return both == rows

    def _settle_all(self, conn: Any) -> list[Path]:
        """Settle every temporary file (one raising stops); the part files put in place."""
        kept: list[Path] = []
        for move in self._leftovers():
            if self.settle(conn, move):
                log.warning("telemetry archive: a move cut short had deleted its rows from %s; "
                            "its file is in place: %s", move.table.name, move.final)  # fmt: skip
                kept.append(move.final)
            else:
                log.warning("telemetry archive: a move cut short left its rows in %s; its "
                            "file %s is removed", move.table.name, move.temp)  # fmt: skip
        return kept

    def _leftovers(self) -> list[Move]:
        temps = sorted(self.root.glob(f"*/date=*/hour=*/.part-*{_TEMP_SUFFIX}"))
        return [move for move in map(Move.of, temps) if move is not None]

    def settle_leftovers(self) -> int:
        """At start, before the store opens the database: settle the temporary files a crash
        left (`settle`); how many there were. Those that cannot be settled now are at the
        first archive run."""
        count = len(self._leftovers())
        if count == 0:
            return 0
        database = self.root.parent / DATABASE_FILE
        try:
            conn = duckdb.connect(str(database) if database.exists() else ":memory:")
        except duckdb.Error as exc:
            log.warning("telemetry archive: cannot open %s to settle %d moves cut short (%s); "
                        "the first archive run does", database, count, reason(exc))  # fmt: skip
            return count
        try:
            self._settle_all(conn)
        except Exception as exc:  # the store's open tells what is wrong with the database
            log.warning("telemetry archive: cannot settle the moves cut short at start (%s); "
                        "the first archive run does", reason(exc))  # fmt: skip
        finally:
            conn.close()
        return count

    # -- failures ---------------------------------------------------------------------------------

    @contextmanager
    def _trying(self, what: str) -> Iterator[None]:
        """Run the block: a fatal error is raised (the store reopens the database), any other
        is counted, logged once per episode and left to the next run."""
        try:
            yield
        except Exception as exc:
            if classify(exc) is Failure.FATAL:
                raise
            self.failures += 1
            if self._trouble is not None:
                log.debug("telemetry archive: cannot %s (%s)", what, reason(exc))
                return
            self._trouble = (time.monotonic(), self.failures - 1)
            log.warning("telemetry archive: cannot %s (%s); the rows stay where they are and "
                        "the next run tries again", what, reason(exc))  # fmt: skip

    def _recovered(self) -> None:
        trouble, self._trouble = self._trouble, None
        if trouble is not None:
            since, failures = trouble
            log.info("telemetry archive recovered: %d steps failed during %.1f s",
                     self.failures - failures, time.monotonic() - since)  # fmt: skip

    # -- retention --------------------------------------------------------------------------------

    def retain(self, now: datetime) -> list[Path]:
        """Delete the partitions that ended more than `retention` before `now`; those deleted."""
        limit = utc_naive(now) - self.retention
        expired = [path for path, hour in self._partitions() if hour + HOUR <= limit]
        if not expired:
            return []
        with self.lock.exclusive():
            for path in expired:
                shutil.rmtree(path)
        for date_dir in {path.parent for path in expired}:
            with contextlib.suppress(OSError):
                date_dir.rmdir()  # only when empty
        return expired

    def _partitions(self) -> list[tuple[Path, datetime]]:
        found: list[tuple[Path, datetime]] = []
        for table in TABLES:
            for date_dir in sorted((self.root / table.name).glob("date=*")):
                date = _DATE.fullmatch(date_dir.name)
                if date is None or not date_dir.is_dir():
                    continue
                for hour_dir in sorted(date_dir.glob("hour=*")):
                    hour = _HOUR.fullmatch(hour_dir.name)
                    start = _start(date.group(1), hour.group(1)) if hour else None
                    if start is not None and hour_dir.is_dir():
                        found.append((hour_dir, start))
        return found


def _start(date: str, hour: str) -> datetime | None:
    if int(hour) > 23:
        return None
    try:
        return datetime.strptime(date, "%Y-%m-%d") + timedelta(hours=int(hour))
    except ValueError:
        return None


def _hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _literal(moment: datetime) -> str:
    return f"TIMESTAMP '{moment:%Y-%m-%d %H:%M:%S}'"


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _count(conn: Any, statement: str) -> int:
    """The one number `statement` returns (a count, or the rows COPY or DELETE touched)."""
    row = conn.execute(statement).fetchone()
    return int(row[0]) if row else 0


def _commit(conn: Any) -> None:
    conn.execute("COMMIT")


def _rollback(conn: Any) -> None:
    with contextlib.suppress(duckdb.Error):  # none open, or the database failed: both fine
        conn.execute("ROLLBACK")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform/file system syncs directories
        _fsync(path)
