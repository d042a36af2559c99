"""`Archiver`: closed hours move from the live tables to hourly Parquet partitions; retention.

    <state_dir>/telemetry/archive/<table>/date=YYYY-MM-DD/hour=HH/part-<uuid>.parquet

`archive(conn, now)` (on the writer thread, which holds the only writing connection): every hour
of a live table that ended at least `grace` before `now` is written with DuckDB's
`COPY ... (FORMAT parquet)` to a hidden temporary file, synced, then — under the exclusive side
of the store's lock, so a query sees the rows either live or archived, never both — the rows
are deleted in a transaction, the file is renamed to its final name, and the transaction
commits (if anything fails the rows stay live and no file is left). Rows arriving later for an
archived hour go to another part file of the same partition at the next run.

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
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mixer.telemetry.errors import TelemetryError
from mixer.telemetry.schema import TABLES, Table
from mixer.telemetry.store import SharedLock

__all__ = ["HOUR", "Archiver", "has_parquet", "parquet_glob", "partition_dir"]

log = logging.getLogger("fluxrig.mixer.telemetry")

HOUR = timedelta(hours=1)
_DATE = re.compile(r"date=(\d{4}-\d{2}-\d{2})")
_HOUR = re.compile(r"hour=(\d{2})")
_TEMP_SUFFIX = ".parquet.tmp"


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

    def run(self, conn: Any) -> None:
        """The periodic run (writer thread): archive, then retention, at the clock's now."""
        now = self.clock()
        written = self.archive(conn, now)
        removed = self.retain(now)
        if written or removed:
            log.info("telemetry archive: %d part files written, %d partitions removed",
                     len(written), len(removed))  # fmt: skip

    # -- archive ----------------------------------------------------------------------------------

    def archive(self, conn: Any, now: datetime) -> list[Path]:
        """Move every hour that closed `grace` before `now` to Parquet; the files written."""
        cutoff = _hour_floor(utc_naive(now) - self.grace)
        written: list[Path] = []
        for table in TABLES:
            hours = conn.execute(
                f"SELECT DISTINCT date_trunc('hour', {table.time}) AS h FROM {table.name} "
                f"WHERE {table.time} < ? ORDER BY h",
                [cutoff],
            ).fetchall()
            for (hour,) in hours:
                try:
                    path = self._archive_hour(conn, table, hour)
                except Exception:  # this hour stays live (retried next run); the others move
                    log.exception("cannot archive %s of %s; its rows stay live", table.name, hour)
                    continue
                if path is not None:
                    written.append(path)
        return written

    def _archive_hour(self, conn: Any, table: Table, hour: datetime) -> Path | None:
        directory = partition_dir(self.root, table.name, hour)
        directory.mkdir(parents=True, exist_ok=True)
        name = f"part-{uuid.uuid4().hex}"
        temp, final = directory / f".{name}{_TEMP_SUFFIX}", directory / f"{name}.parquet"
        where = f"{table.time} >= {_literal(hour)} AND {table.time} < {_literal(hour + HOUR)}"
        try:
            row = conn.execute(
                f"COPY (SELECT * FROM {table.name} WHERE {where}) TO {_quote(temp)} "
                "(FORMAT parquet, COMPRESSION zstd)"
            ).fetchone()
            copied = int(row[0]) if row else 0
            if copied == 0:
                temp.unlink(missing_ok=True)
                return None
            _fsync(temp)
            with self.lock.exclusive():
                self._swap(conn, table, where, temp, final, copied)
        finally:
            temp.unlink(missing_ok=True)
        _fsync_dir(directory)
        return final

    def _swap(
        self, conn: Any, table: Table, where: str, temp: Path, final: Path, copied: int
    ) -> None:
        """Delete the archived rows and put the file in place, both or neither."""
        conn.execute("BEGIN TRANSACTION")
        try:
            row = conn.execute(f"DELETE FROM {table.name} WHERE {where}").fetchone()
            deleted = int(row[0]) if row else 0
            if deleted != copied:
                raise TelemetryError(
                    f"archiving {table.name} ({where}): {copied} rows written to Parquet but "
                    f"{deleted} would be deleted; the rows stay in the live table"
                )
            temp.rename(final)
            try:
                conn.execute("COMMIT")
            except BaseException:
                final.unlink(missing_ok=True)
                raise
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise

    def remove_leftovers(self) -> int:
        """Delete temporary files a crash left behind (at start, before the writer runs)."""
        count = 0
        for temp in self.root.glob(f"*/date=*/hour=*/.part-*{_TEMP_SUFFIX}"):
            temp.unlink(missing_ok=True)
            count += 1
        return count

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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform/file system syncs directories
        _fsync(path)
