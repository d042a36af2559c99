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
It may use `query_memory_limit` of memory, `query_spill_limit` of disk for what does not fit
(`telemetry.duckdb.tmp`) and `query_threads` threads (DuckDB's `memory_limit`,
`max_temp_directory_size`, `threads`: one budget for the whole database, writer included).

A query can therefore starve the writer of memory, and a COMMIT, ROLLBACK or checkpoint that
cannot allocate invalidates the database. No accepted row is lost to that (details and
measurements in `mixer.telemetry.recovery`): a write that fails for a transient reason is kept
and retried with a back-off (50 ms to 2 s; from the `EXCLUSIVE_AFTER`-th retry on under the
exclusive side of `lock`, once the running queries ended, which `query_timeout` bounds), one
transaction per table and batch, counted so that a retry is exactly once; new exports queue in
the bounded intake meanwhile (the receivers answer 503 when it is full). When the database is
invalidated the writer interrupts the queries on it, closes both connections under the
exclusive side of `lock`, and opens the file again (same settings, migrations re-run), retrying
with the back-off until it can; a query it interrupted fails with `TelemetryBusyError` (503:
retry it), and so does a query that meets the failed database first (it tells the writer, which
may be idle), and so does `maintenance` (which then runs again at once: `archive`). Rows that
fail because of their own data are dropped, request by request (logged, counted in `failed`).

DuckDB's automatic checkpoints are off: the writer checkpoints when no query runs (why, and what
it measurably changed: `recovery.checkpoint_due`).
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
from mixer.telemetry.errors import TelemetryBusyError, TelemetryClosedError, TelemetryError
from mixer.telemetry.flatten import Row, log_rows, span_rows
from mixer.telemetry.flatten_metrics import metric_rows
from mixer.telemetry.intake import Intake, Job
from mixer.telemetry.payload import SIGNALS, Export, Signal
from mixer.telemetry.recovery import (
    DataFault,
    Failure,
    GiveUp,
    Pending,
    Retrier,
    checkpoint_due,
    classify,
    fatal_cause,
    reason,
)
from mixer.telemetry.schema import MIGRATIONS, TABLES, Table

__all__ = ["ARCHIVE_DIR", "DATABASE_FILE", "SharedLock", "TelemetryStore"]

log = logging.getLogger("fluxrig.mixer.telemetry")

DATABASE_FILE = "telemetry.duckdb"
ARCHIVE_DIR = "archive"
POKE_EVERY = 0.05  # seconds between two interrupts of the queries on a failed database
REOPEN_LOG_EVERY = 30  # failed reopens between two log lines (the first one is logged)
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

    @property
    def readers(self) -> int:
        """Readers holding the shared side now."""
        return self._readers

    @property
    def writing(self) -> bool:
        """A writer holds the exclusive side, or waits for the readers to leave."""
        return self._writer

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
    def exclusive(self, poke: Callable[[], object] | None = None) -> Iterator[None]:
        """The exclusive side; `poke()` is called every POKE_EVERY seconds while readers are
        still in (to interrupt them)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._writer = True
            while self._readers:
                if poke is not None:
                    poke()
                self._cond.wait(POKE_EVERY if poke is not None else None)
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
        self.checkpoints = 0  # CHECKPOINTs run by the writer
        self.reopened = 0  # times the database was reopened after a fatal error
        self.maintenance = maintenance  # set before open(): run every archive_interval
        self._conn: Connection | None = None
        self._reader: Connection | None = None
        self._reader_lock = threading.Lock()  # guards _reader, _cursors, _epoch
        self._cursors: set[Connection] = set()  # handed out by reading(), not closed yet
        self._epoch = 0  # +1 every time the database fails fatally
        self._fatal = ""  # why it failed the last time
        self._retrying = Retrier(self.intake, connection=lambda: self._conn or self._reopen(),
                                 exclusive=self.lock.exclusive, recover=self._recover)  # fmt: skip
        self._reopen_failures = 0
        self._thread: threading.Thread | None = None

    @property
    def retried(self) -> int:
        """Failed write attempts (each retried, or given up at close)."""
        return self._retrying.retried

    # -- lifecycle (blocking) ---------------------------------------------------------------------

    def open(self) -> None:
        """Create the directories, open and migrate the database, start the writer thread."""
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        self._conn, self._reader = self._connect()
        self._thread = threading.Thread(target=self._run, name="telemetry-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Write everything queued, stop the writer, close the database; idempotent.

        A write that still fails is retried for CLOSE_GRACE seconds, then its rows are lost
        (logged, counted in `failed`)."""
        self._retrying.closing_at = self._retrying.closing_at or time.monotonic()
        self.intake.close()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        self._retrying.close()
        with self.lock.exclusive(), self._reader_lock:
            self._close_connections()

    def _connect(self) -> tuple[Connection, Connection]:
        """The database file opened, migrated, confined and bounded; with its reader."""
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
            self._bound(conn)
            conn.execute("SET checkpoint_threshold = '1000TB'")  # the writer checkpoints
            row = conn.execute("SELECT current_database()").fetchone()
            self.catalog = str(row[0]) if row else self.catalog
            return conn, conn.cursor()
        except BaseException:
            conn.close()
            raise

    def _close_connections(self) -> None:
        """Close both connections (holding `lock` exclusively and `_reader_lock`)."""
        reader, self._reader = self._reader, None
        conn, self._conn = self._conn, None
        for connection in (reader, conn):
            if connection is not None:
                with contextlib.suppress(duckdb.Error):  # an invalidated database may refuse
                    connection.close()

    def _confine(self, conn: Connection) -> None:
        """Only the archive directory is reachable from SQL (reading or writing)."""
        row = conn.execute("SELECT current_setting('enable_external_access')").fetchone()
        if row is not None and row[0] in (False, "false"):
            return  # already confined (the same database opened again in this process)
        allowed = str(self.archive_dir.resolve()).replace("'", "''") + "/"
        conn.execute(f"SET allowed_directories = ['{allowed}']")
        conn.execute("SET enable_external_access = false")

    def _bound(self, conn: Connection) -> None:
        """The memory, spill disk and threads the database may use (`[telemetry] query_*`)."""
        cfg = self.settings
        statements = {
            "query_memory_limit": f"SET memory_limit = '{int(cfg.query_memory_limit)}B'",
            "query_spill_limit": f"SET max_temp_directory_size = '{int(cfg.query_spill_limit)}B'",
        }
        if cfg.query_threads is not None:
            statements["query_threads"] = f"SET threads = {cfg.query_threads}"
        for key, statement in statements.items():
            try:
                conn.execute(statement)
            except duckdb.Error as exc:
                raise TelemetryError(
                    f"[telemetry] {key} cannot be applied to the telemetry database: {exc}"
                ) from exc

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
        """A fresh cursor for one read, under the shared side of `lock`; closed afterwards.

        TelemetryBusyError when the database failed and is not reopened yet, or failed while
        the cursor was in use (whatever the read raised then is its cause)."""
        with self.lock.shared():
            with self._reader_lock:
                if self._reader is None:
                    raise self._unavailable()
                try:
                    cursor = self._reader.cursor()
                except duckdb.Error as exc:
                    raise self._failed_read(exc) from exc
                self._cursors.add(cursor)
                epoch = self._epoch
            try:
                yield cursor
            except Exception as exc:
                if self._epoch != epoch or fatal_cause(exc) is not None:
                    raise self._failed_read(exc) from exc
                raise
            finally:
                with self._reader_lock:
                    self._cursors.discard(cursor)
                with contextlib.suppress(duckdb.Error):
                    cursor.close()

    def _failed_read(self, exc: BaseException) -> TelemetryBusyError:
        """A read met a failed database: have the (maybe idle) writer reopen it; retry."""
        fatal = fatal_cause(exc)
        with contextlib.suppress(TelemetryError):  # closing: nothing to reopen
            self.intake.submit(_probe)  # fails on an invalidated database: the writer recovers
        why = reason(fatal) if fatal is not None else self._fatal
        return TelemetryBusyError(
            f"the telemetry database failed while the query ran ({why}) and is reopened; "
            "retry the query"
        )

    def _unavailable(self) -> TelemetryError:
        if self._retrying.closing_at is not None:
            return TelemetryClosedError("the telemetry store is closed")
        return TelemetryBusyError(
            f"the telemetry database failed ({self._fatal}) and is being reopened; retry shortly"
        )

    # -- the writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        interval = self.settings.archive_interval
        wake = time.monotonic() + interval
        while True:
            batch = self.intake.take(wake)
            if batch.exports:
                self._write(batch.exports)
            if batch.jobs:
                self._run_jobs(batch.jobs)
            if batch.closing:
                return
            if time.monotonic() >= wake:
                self._maintain()
                wake = time.monotonic() + interval

    def _run_jobs(self, jobs: list[Job]) -> None:
        for job in jobs:
            try:
                conn = self._retrying(lambda conn, _: conn)  # reopened first if it must be
            except TelemetryError as exc:
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(exc)
                continue
            job.run(conn)
            if not job.future.cancelled():
                self._check(job.future.exception())

    def _maintain(self) -> None:
        """Run `maintenance`; after a fatal error reopen the database (as for a write) and run
        it once more at once: it settles an archive move the error cut short."""
        for again in (True, False):
            if self.maintenance is None:
                return
            try:
                self.maintenance(self._retrying(lambda conn, _: conn))
                return
            except Exception as exc:  # the writer thread must survive: the next run tries again
                if again and classify(exc) is Failure.FATAL:
                    self._recover(exc)  # logged there
                    continue
                log.exception("telemetry archive/retention run failed; retrying in %gs",
                              self.settings.archive_interval)  # fmt: skip
                self._check(exc)
                return

    def _check(self, exc: BaseException | None) -> None:
        """After a job or maintenance failed: reopen the database if `exc` invalidated it."""
        if exc is not None and classify(exc) is Failure.FATAL:
            self._recover(exc)

    def _write(self, exports: list[Export]) -> None:
        try:
            by_table: dict[str, list[tuple[Export, list[Row]]]] = {t.name: [] for t in TABLES}
            for export in exports:
                by_table[SIGNALS[export.signal].table.name].append((export, self._rows(export)))
            for table in TABLES:
                self._insert_table(table, by_table[table.name])
            self._checkpoint()
        except Exception:  # a bug: the writer thread must survive it
            rows = sum(export.rows for export in exports)
            log.exception("telemetry writer failed; up to %d rows lost", rows)
            self.failed += rows
        finally:
            self.intake.release(exports)

    def _checkpoint(self) -> None:
        """CHECKPOINT under the exclusive side of `lock` when it is due; a failure is logged and
        tried again after the next batch."""
        conn = self._conn
        if conn is None or not checkpoint_due(self.path, self.lock.readers):
            return
        try:
            with self.lock.exclusive():
                conn.execute("CHECKPOINT")
        except Exception as exc:
            log.warning("telemetry checkpoint failed (%s); trying again after the next batch",
                        reason(exc))  # fmt: skip
            self._check(exc)
        else:
            self.checkpoints += 1

    def _rows(self, export: Export) -> list[Row]:
        try:
            return _FLATTEN[export.signal](export.message, export.received_ns)
        except Exception:
            log.exception("cannot flatten an OTLP %s request; %d rows lost",
                          export.signal, export.rows)  # fmt: skip
            self.failed += export.rows
            return []

    def _insert_table(self, table: Table, items: list[tuple[Export, list[Row]]]) -> None:
        rows = [row for _, chunk in items for row in chunk]
        if not rows:
            return
        try:
            self._insert_once(table, rows)
        except DataFault as exc:
            log.warning("batch insert into %s failed (%s); inserting request by request",
                        table.name, reason(exc))  # fmt: skip
            self._insert_each(table, items)
        except GiveUp as exc:
            log.error("%d rows lost: %s", len(rows), exc)
            self.failed += len(rows)

    def _insert_each(self, table: Table, items: list[tuple[Export, list[Row]]]) -> None:
        """After a batch failed because of its data: every request on its own, dropping only
        the failing ones."""
        for _, chunk in items:
            if not chunk:
                continue
            try:
                self._insert_once(table, chunk)
            except (DataFault, GiveUp) as exc:
                log.error("%d rows lost: cannot insert into %s: %s", len(chunk), table.name,
                          reason(exc))  # fmt: skip
                self.failed += len(chunk)

    def _insert_once(self, table: Table, rows: list[Row]) -> None:
        """`rows` into `table` in one transaction, retried until they are in it exactly once;
        DataFault when they cannot be (their own fault), GiveUp when closing."""
        self._retrying(Pending(table, rows, self.settings.batch_rows).attempt)
        self.written[table.name] += len(rows)

    def _recover(self, exc: BaseException) -> None:
        """The database failed fatally: interrupt the reads on it until none is left, close
        both connections and open the file again (or leave that to the next attempt when it
        fails)."""
        if self._conn is None:
            return  # not open: the next attempt opens it
        log.error("the telemetry database failed (%s); reopening it", reason(exc))
        with self._reader_lock:
            self._epoch += 1  # reads in progress fail with TelemetryBusyError
            self._fatal = reason(exc)
        with contextlib.suppress(Exception):  # logged; the next attempt opens it again
            self._reopen(poke=self._interrupt_reads)

    def _interrupt_reads(self) -> None:
        """Interrupt the reads' statements (again and again: DuckDB forgets between two)."""
        with self._reader_lock:
            for cursor in self._cursors:
                with contextlib.suppress(duckdb.Error):
                    cursor.interrupt()

    def _reopen(self, poke: Callable[[], object] | None = None) -> Connection:
        """Close what is open and connect again, under the exclusive side of `lock`."""
        with self.lock.exclusive(poke):
            with self._reader_lock:
                self._close_connections()
            try:
                conn, reader = self._connect()
            except Exception as exc:
                self._reopen_failures += 1
                if self._reopen_failures % REOPEN_LOG_EVERY == 1:
                    log.error("cannot reopen the telemetry database (%s; %d failed attempts); "
                              "retrying with back-off, nothing is stored meanwhile",
                              reason(exc), self._reopen_failures)  # fmt: skip
                raise
            with self._reader_lock:
                self._conn, self._reader = conn, reader
        self.reopened += 1
        self._reopen_failures = 0
        log.warning("telemetry database %s reopened", self.path)
        return conn


def _probe(conn: Connection) -> None:
    conn.execute("SELECT 1").fetchall()
