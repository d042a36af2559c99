"""`TelemetryStore`: the DuckDB file of the telemetry hub and its one writer thread.

    store = TelemetryStore(state_dir / "telemetry", settings, maintenance=archiver.run)
    store.open()                      # blocking: connect, migrate, start the writer thread
    store.offer(export)               # from the event loop; False when the queue is full
    await store.call(fn)              # fn(connection) on the writer thread, after what was offered
    with store.reading() as cursor:   # any thread: a fresh cursor for a read-only query
        ...
    store.close()                     # blocking: write everything queued, stop, close

One connection, used by ONE thread (the writer): batched inserts (`schema.Table.insert`), the
jobs submitted with `submit`/`call`, and `maintenance` every `archive_interval` seconds. Queries
run on cursors of a separate reader connection to the same database (DuckDB MVCC: they see
committed rows and never block the writer). `lock` is shared by readers and taken exclusively
by whoever changes what a query sees across the live tables and the Parquet files (moving an
hour to Parquet, deleting partitions), so a query never counts a row twice or misses one.

The database may only touch files under the archive directory: external access is disabled
and the archive is the one allowed directory, so a query cannot read (or write) anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from mixer.migrations import apply_migrations
from mixer.telemetry.config import TelemetrySection
from mixer.telemetry.errors import TelemetryClosedError, TelemetryError
from mixer.telemetry.flatten import Row, log_rows, span_rows
from mixer.telemetry.flatten_metrics import metric_rows
from mixer.telemetry.intake import Intake
from mixer.telemetry.payload import SIGNALS, Export, Signal
from mixer.telemetry.schema import MIGRATIONS, TABLES, Table

__all__ = ["ARCHIVE_DIR", "DATABASE_FILE", "SharedLock", "TelemetryStore"]

log = logging.getLogger("fluxrig.mixer.telemetry")

DATABASE_FILE = "telemetry.duckdb"
ARCHIVE_DIR = "archive"
T = TypeVar("T")
Connection = duckdb.DuckDBPyConnection
_FLATTEN: dict[Signal, Callable[[Any, int], list[Row]]] = {
    "traces": span_rows,
    "metrics": metric_rows,
    "logs": log_rows,
}


class SharedLock:
    """Many readers or one writer (writers wait for readers in progress, and block new ones)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._writer = True
            self._cond.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class TelemetryStore:
    """The telemetry database, its write queue and writer thread; see the module doc."""

    def __init__(
        self,
        directory: Path,
        settings: TelemetrySection,
        *,
        maintenance: Callable[[Connection], object] | None = None,
    ) -> None:
        self.directory = directory = directory.resolve()  # SQL sees the archive by this path
        self.path = directory / DATABASE_FILE
        self.archive_dir = directory / ARCHIVE_DIR
        self.settings = settings
        self.lock = SharedLock()
        self.intake = Intake(
            max_rows=settings.queue_rows,
            max_bytes=settings.queue_bytes,
            batch_rows=settings.batch_rows,
            flush_interval=settings.flush_interval,
        )
        self.catalog = "telemetry"  # the database's name in SQL, set by open()
        self.written: dict[str, int] = {t.name: 0 for t in TABLES}
        self.failed = 0  # rows that could not be written (logged)
        self.maintenance = maintenance  # set before open(): run every archive_interval
        self._conn: Connection | None = None
        self._reader: Connection | None = None
        self._reader_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- lifecycle (blocking) ---------------------------------------------------------------------

    def open(self) -> None:
        """Create the directories, open and migrate the database, start the writer thread."""
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        try:
            conn = duckdb.connect(str(self.path))
        except duckdb.Error as exc:
            raise TelemetryError(
                f"cannot open the telemetry database {self.path}: {exc}; is another "
                "fluxrig-mixer running on the same state dir?"
            ) from exc
        try:
            apply_migrations(conn, "telemetry", MIGRATIONS)
            self._confine(conn)
            row = conn.execute("SELECT current_database()").fetchone()
            self.catalog = str(row[0]) if row else self.catalog
            self._reader = conn.cursor()
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._thread = threading.Thread(target=self._run, name="telemetry-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Write everything queued, stop the writer, close the database; idempotent."""
        self.intake.close()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        with self.lock.exclusive(), self._reader_lock:
            reader, self._reader = self._reader, None
            conn, self._conn = self._conn, None
            if reader is not None:
                reader.close()
            if conn is not None:
                conn.close()

    def _confine(self, conn: Connection) -> None:
        """Only the archive directory is reachable from SQL (reading or writing)."""
        row = conn.execute("SELECT current_setting('enable_external_access')").fetchone()
        if row is not None and row[0] in (False, "false"):
            return  # already confined (the same database opened again in this process)
        allowed = str(self.archive_dir.resolve()).replace("'", "''") + "/"
        conn.execute(f"SET allowed_directories = ['{allowed}']")
        conn.execute("SET enable_external_access = false")

    # -- writing ----------------------------------------------------------------------------------

    def offer(self, export: Export) -> bool:
        """Queue `export` for writing; False when the queue is full (never blocks)."""
        return self.intake.offer(export)

    def submit(self, fn: Callable[[Connection], T]) -> Any:
        """Run `fn(connection)` on the writer thread; a concurrent.futures.Future of its result."""
        if self._thread is None:
            raise TelemetryClosedError("the telemetry store is not open")
        return self.intake.submit(fn)

    async def call(self, fn: Callable[[Connection], T]) -> T:
        """`submit` and await the result (off the event loop)."""
        result: T = await asyncio.wrap_future(self.submit(fn))
        return result

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A fresh cursor for one read, under the shared side of `lock`; closed afterwards."""
        with self.lock.shared():
            with self._reader_lock:
                if self._reader is None:
                    raise TelemetryClosedError("the telemetry store is closed")
                cursor = self._reader.cursor()
            try:
                yield cursor
            finally:
                cursor.close()

    # -- the writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        conn = self._conn
        assert conn is not None
        interval = self.settings.archive_interval
        wake = time.monotonic() + interval
        while True:
            batch = self.intake.take(wake)
            if batch.exports:
                self._write(conn, batch.exports)
            for job in batch.jobs:
                job.run(conn)
            if batch.closing:
                return
            if time.monotonic() >= wake:
                self._maintain(conn)
                wake = time.monotonic() + interval

    def _maintain(self, conn: Connection) -> None:
        if self.maintenance is None:
            return
        try:
            self.maintenance(conn)
        except Exception:  # the writer thread must survive: the next run tries again
            log.exception("telemetry archive/retention run failed; retrying in %gs",
                          self.settings.archive_interval)  # fmt: skip

    def _write(self, conn: Connection, exports: list[Export]) -> None:
        try:
            by_table: dict[str, list[tuple[Export, list[Row]]]] = {t.name: [] for t in TABLES}
            for export in exports:
                by_table[SIGNALS[export.signal].table.name].append((export, self._rows(export)))
            for table in TABLES:
                self._insert_table(conn, table, by_table[table.name])
        finally:
            self.intake.release(exports)

    def _rows(self, export: Export) -> list[Row]:
        try:
            return _FLATTEN[export.signal](export.message, export.received_ns)
        except Exception:
            log.exception("cannot flatten an OTLP %s request; %d rows lost",
                          export.signal, export.rows)  # fmt: skip
            self.failed += export.rows
            return []

    def _insert_table(
        self, conn: Connection, table: Table, items: list[tuple[Export, list[Row]]]
    ) -> None:
        rows = [row for _, chunk in items for row in chunk]
        if not rows:
            return
        step = self.settings.batch_rows
        try:
            conn.execute("BEGIN TRANSACTION")
            for start in range(0, len(rows), step):
                _insert(conn, table, rows[start : start + step])
            conn.execute("COMMIT")
        except Exception as exc:  # duckdb.Error, or a value it cannot convert
            with contextlib.suppress(duckdb.Error):
                conn.execute("ROLLBACK")
            log.warning("batch insert into %s failed (%s); inserting request by request",
                        table.name, exc)  # fmt: skip
            self._insert_each(conn, table, items)
        else:
            self.written[table.name] += len(rows)

    def _insert_each(
        self, conn: Connection, table: Table, items: list[tuple[Export, list[Row]]]
    ) -> None:
        """After a failed batch: every request on its own, dropping only the failing ones."""
        for _, chunk in items:
            try:
                _insert(conn, table, chunk)
            except Exception as exc:
                log.error("%d rows lost: cannot insert into %s: %s", len(chunk), table.name, exc)
                self.failed += len(chunk)
            else:
                self.written[table.name] += len(chunk)


def _insert(conn: Connection, table: Table, rows: list[Row]) -> None:
    if rows:
        conn.execute(table.insert(), [list(column) for column in zip(*rows, strict=True)])
