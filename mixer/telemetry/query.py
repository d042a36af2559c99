"""`TelemetryQuery`: one query path over the live tables and the Parquet archive.

    query = hub.query
    await query.spans(trace_id="4bf9…")                       # a trace, oldest span first
    await query.metrics(rack="edge-1", name="fluxrig.gear.messages", since=an_hour_ago)
    await query.logs(gear="decode", min_severity=17)          # newest first
    await query.sql("SELECT gear, count(*) AS n FROM spans GROUP BY gear", limit=100)

Inside every query the names `spans`, `metric_points` and `logs` are views (temporary, of that
query's own cursor) over the live table `UNION ALL BY NAME` its archived part files
(`read_parquet(..., union_by_name = true, hive_partitioning = false)`, left out while there are
none), so a row is found wherever it lives. The store's lock keeps archive moves and retention
out while a query runs (no row twice, none missing).

`sql` runs one SELECT (or WITH … SELECT, FROM …, DESCRIBE, SUMMARIZE) in a read-only
transaction; anything else is refused with `TelemetryQueryError`. The database can reach no
file outside the archive (`TelemetryStore`). Results are lists of JSON-able dicts: times as ISO
8601 UTC strings, JSON columns parsed, NaN/±infinity as strings.

Every query, SQL or canned, runs on a thread of the query's own pool (never the event loop's
default executor), bounded by `[telemetry]`:

- `max_concurrent_queries` threads: one more query is refused at once with
  `TooManyTelemetryQueriesError` (it does not queue);
- `query_timeout` seconds from the call (waiting for an archive move included): then the query
  is interrupted in DuckDB (`interrupt()` on its cursor), which frees its thread and its share
  of the store's lock, and the caller gets `TelemetryQueryTimeoutError`; a caller cancelled
  before (a client that went away) interrupts its query the same way;
- `query_memory_limit` / `query_spill_limit` (set on the database by the store): a query that
  needs more fails with a `TelemetryQueryError` saying so.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import duckdb

from mixer.telemetry.archive import has_parquet, parquet_glob, utc_naive
from mixer.telemetry.errors import (
    TelemetryClosedError,
    TelemetryError,
    TelemetryQueryError,
    TelemetryQueryTimeoutError,
    TooManyTelemetryQueriesError,
)
from mixer.telemetry.flatten import finite
from mixer.telemetry.schema import LOGS, METRIC_POINTS, SPANS, TABLES, Table
from mixer.telemetry.store import TelemetryStore

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Record", "TelemetryQuery"]

DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000
REINTERRUPT = 0.05  # seconds between two interrupts of a query that was stopped
Record = dict[str, Any]
Filter = tuple[str, str, Any]  # column, operator, value


class TelemetryQuery:
    """Queries over a `TelemetryStore`; see the module doc."""

    def __init__(self, store: TelemetryStore, *, max_limit: int = MAX_LIMIT) -> None:
        self._store = store
        self.max_limit = max_limit
        self.timeout = store.settings.query_timeout
        self.max_concurrent = store.settings.max_concurrent_queries
        self._pool = ThreadPoolExecutor(self.max_concurrent, thread_name_prefix="telemetry-query")
        self._slots_lock = threading.Lock()
        self._busy = 0  # queries holding a slot: waiting for, or running on, a pool thread
        self._active: dict[_Running, asyncio.Future[list[Record]]] = {}
        self._closed = False

    @property
    def busy(self) -> int:
        """Queries running (or about to) on the pool's threads; at most `max_concurrent`."""
        return self._busy

    @property
    def stopping(self) -> int:
        """Queries stopped (timed out, caller gone, closing) whose thread has not ended yet."""
        return sum(1 for running in self._active if running.stopped is not None)

    async def aclose(self) -> None:
        """Refuse new queries, interrupt the running ones and wait for their threads; idempotent."""
        self._closed = True
        active = list(self._active.items())
        for running, waiting in active:
            running.stop("closed", waiting)
        if active:
            await asyncio.wait([waiting for _, waiting in active])
        self._pool.shutdown(wait=False)

    async def sql(self, text: str, limit: int = DEFAULT_LIMIT) -> list[Record]:
        """The first `limit` rows of one read-only statement."""
        statement = _read_only(text)
        return await self._bounded(statement, [], self._limit(limit))

    async def spans(
        self,
        *,
        trace_id: str | None = None,
        flux_id: str | None = None,
        rack: str | None = None,
        gear: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[Record]:
        """Spans; of one trace or fluxMsg oldest first, otherwise newest first."""
        filters = _equal(trace_id=trace_id and trace_id.lower(), flux_id=flux_id, rack=rack,
                         gear=gear)  # fmt: skip
        ascending = trace_id is not None or flux_id is not None
        return await self._select(SPANS, filters, since, until, limit, ascending=ascending)

    async def metrics(
        self,
        *,
        rack: str | None = None,
        gear: str | None = None,
        name: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[Record]:
        """Metric data points, newest first."""
        filters = _equal(rack=rack, gear=gear, name=name)
        return await self._select(METRIC_POINTS, filters, since, until, limit)

    async def logs(
        self,
        *,
        rack: str | None = None,
        gear: str | None = None,
        trace_id: str | None = None,
        min_severity: int | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[Record]:
        """Log records, newest first; `min_severity` is an OTLP severity number (17 = ERROR)."""
        filters = _equal(rack=rack, gear=gear, trace_id=trace_id and trace_id.lower())
        if min_severity is not None:
            filters.append(("severity_number", ">=", min_severity))
        return await self._select(LOGS, filters, since, until, limit)

    # -- internals --------------------------------------------------------------------------------

    async def _select(
        self,
        table: Table,
        filters: list[Filter],
        since: dt.datetime | None,
        until: dt.datetime | None,
        limit: int,
        *,
        ascending: bool = False,
    ) -> list[Record]:
        if since is not None:
            filters.append((table.time, ">=", utc_naive(since)))
        if until is not None:
            filters.append((table.time, "<", utc_naive(until)))
        where = " AND ".join(f"{column} {op} ?" for column, op, _ in filters) or "true"
        order = "ASC" if ascending else "DESC"
        text = f"SELECT * FROM {table.name} WHERE {where} ORDER BY {table.time} {order}"
        limit = self._limit(limit)
        params = [value for _, _, value in filters]
        return await self._bounded(f"{text} LIMIT {limit}", params, limit)

    async def _bounded(self, text: str, params: Sequence[Any], limit: int) -> list[Record]:
        """`_run` on a thread of the query pool, refused when every slot is taken, interrupted
        after `timeout` (and when the caller is cancelled)."""
        if self._closed:
            raise TelemetryClosedError("the telemetry hub is closed; no more queries")
        self._take_slot()
        running = _Running()
        try:
            future = self._pool.submit(self._run, text, params, limit, running)
        except BaseException:
            self._free_slot()
            raise
        future.add_done_callback(self._free_slot)  # done or cancelled: the thread is free
        waiting = asyncio.wrap_future(future)
        waiting.add_done_callback(_retrieve)
        self._active[running] = waiting
        waiting.add_done_callback(lambda _: self._active.pop(running, None))
        running.arm(self.timeout, waiting)
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            running.stop("cancelled", waiting)  # the caller went away: free the thread too
            raise
        except TelemetryQueryError as exc:
            if running.stopped == "timeout":
                raise TelemetryQueryTimeoutError(
                    f"the telemetry query ran longer than {self.timeout:g}s and was stopped "
                    "([telemetry] query_timeout); narrow it (a shorter since/until window, "
                    "fewer rows scanned or joined) or raise query_timeout"
                ) from exc
            if running.stopped == "closed":
                raise TelemetryClosedError("the telemetry hub closed while the query ran") from exc
            raise

    def _run(self, text: str, params: Sequence[Any], limit: int, running: _Running) -> list[Record]:
        """Blocking, on a pool thread: `text` over the union views, in a read-only transaction."""
        store = self._store
        running.check()  # stopped while waiting for the thread
        with store.reading() as cursor:  # may wait for an archive move: the timeout counts
            running.attach(cursor)
            try:
                for table in TABLES:
                    running.check()
                    cursor.execute(_view(store, table))
                running.check()
                cursor.execute("BEGIN TRANSACTION READ ONLY")
                try:
                    running.check()
                    result = cursor.execute(text, list(params))
                    description = result.description or []
                    rows = result.fetchmany(limit)
                finally:
                    cursor.execute("ROLLBACK")
            except duckdb.OutOfMemoryException as exc:
                raise TelemetryQueryError(self._out_of_memory(exc)) from exc
            except duckdb.FatalException as exc:  # not the query's fault: 500, logged
                raise TelemetryError(
                    f"the telemetry database failed (it is being reopened; retry the query): {exc}"
                ) from exc
            except duckdb.Error as exc:
                raise TelemetryQueryError(f"telemetry query failed: {exc}") from exc
            finally:
                running.detach()
        columns = [(d[0], str(d[1]) == "JSON") for d in description]
        return [_record(columns, row) for row in rows]

    def _out_of_memory(self, exc: duckdb.Error) -> str:
        cfg = self._store.settings
        first = str(exc).split("\n", 1)[0]  # DuckDB's advice (SET threads …) is not for API users
        return (
            f"telemetry query failed: {first} — the telemetry database may use "
            f"{cfg.query_memory_limit.human_readable()} of memory ([telemetry] "
            f"query_memory_limit) and {cfg.query_spill_limit.human_readable()} of disk to spill "
            "(query_spill_limit); narrow the query (fewer rows, columns or groups) or raise them"
        )

    def _take_slot(self) -> None:
        with self._slots_lock:
            if self._busy >= self.max_concurrent:
                raise TooManyTelemetryQueriesError(
                    f"{self._busy} telemetry queries are running, the most allowed at once "
                    f"([telemetry] max_concurrent_queries = {self.max_concurrent}); retry when "
                    "one has finished, or raise max_concurrent_queries"
                )
            self._busy += 1

    def _free_slot(self, _: object = None) -> None:
        with self._slots_lock:
            self._busy -= 1

    def _limit(self, limit: int) -> int:
        if not 1 <= limit <= self.max_limit:
            raise TelemetryQueryError(f"limit must be 1..{self.max_limit}, got {limit}")
        return limit


class _Running:
    """One query on its pool thread: the cursor to interrupt, and why it was stopped, if it was.

    DuckDB forgets an interrupt that arrives between two statements (the next one starts
    clean), so the thread checks `stopped` before each statement and a stopped query is
    interrupted again every `REINTERRUPT` seconds until its thread is done."""

    __slots__ = ("_cursor", "_lock", "_timer", "stopped")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.stopped: str | None = None  # "timeout", "cancelled" or "closed"

    # -- the pool thread --------------------------------------------------------------------------

    def attach(self, cursor: duckdb.DuckDBPyConnection) -> None:
        with self._lock:
            self._cursor = cursor

    def detach(self) -> None:
        with self._lock:
            self._cursor = None

    def check(self) -> None:
        if self.stopped is not None:
            raise TelemetryQueryError(f"telemetry query stopped ({self.stopped})")

    # -- the event loop ---------------------------------------------------------------------------

    def arm(self, timeout: float, waiting: asyncio.Future[Any]) -> None:
        """Stop the query after `timeout` seconds; forget the timer once it is done."""
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(timeout, self.stop, "timeout", waiting)
        waiting.add_done_callback(lambda _: self._disarm())

    def stop(self, why: str, waiting: asyncio.Future[Any]) -> None:
        """Interrupt the query now, and again every REINTERRUPT seconds until it is done."""
        if waiting.done():
            return
        with self._lock:
            self.stopped = self.stopped or why
            if self._cursor is not None:
                self._cursor.interrupt()
        self._disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(REINTERRUPT, self.stop, why, waiting)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark the outcome of a query nobody awaits any more (its caller was cancelled) as seen."""
    if not future.cancelled():
        future.exception()


def _read_only(text: str) -> str:
    """`text` when it is exactly one SELECT-like statement, else TelemetryQueryError."""
    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error as exc:
        raise TelemetryQueryError(f"the query does not parse: {exc}") from exc
    if len(statements) != 1:
        raise TelemetryQueryError(f"send exactly one statement per query, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise TelemetryQueryError(
            f"only read queries (SELECT, WITH … SELECT) are allowed, not {kind.name}"
        )
    return text


def _view(store: TelemetryStore, table: Table) -> str:
    catalog = store.catalog.replace('"', '""')
    body = f'SELECT * FROM "{catalog}".main.{table.name}'
    if has_parquet(store.archive_dir, table.name):
        glob = parquet_glob(store.archive_dir, table.name).replace("'", "''")
        body += (
            f" UNION ALL BY NAME SELECT * FROM read_parquet('{glob}', union_by_name = true, "
            "hive_partitioning = false)"
        )
    return f"CREATE OR REPLACE TEMP VIEW {table.name} AS {body}"


def _equal(**columns: str | None) -> list[Filter]:
    return [(column, "=", value) for column, value in columns.items() if value is not None]


def _record(columns: list[tuple[str, bool]], row: tuple[Any, ...]) -> Record:
    """One result row as a dict; JSON columns parsed."""
    return {
        name: _jsonable(value, is_json) for (name, is_json), value in zip(columns, row, strict=True)
    }


def _jsonable(value: Any, parse_json: bool = False) -> Any:
    """A query result value as JSON-able Python."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return json.loads(value) if parse_json else value
    if isinstance(value, float):
        return finite(value)
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return moment.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
