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
8601 UTC strings, JSON columns parsed, NaN/±infinity as strings. Every call runs in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import duckdb

from mixer.telemetry.archive import has_parquet, parquet_glob, utc_naive
from mixer.telemetry.errors import TelemetryQueryError
from mixer.telemetry.flatten import finite
from mixer.telemetry.schema import LOGS, METRIC_POINTS, SPANS, TABLES, Table
from mixer.telemetry.store import TelemetryStore

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Record", "TelemetryQuery"]

DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000
Record = dict[str, Any]
Filter = tuple[str, str, Any]  # column, operator, value


class TelemetryQuery:
    """Queries over a `TelemetryStore`; see the module doc."""

    def __init__(self, store: TelemetryStore, *, max_limit: int = MAX_LIMIT) -> None:
        self._store = store
        self.max_limit = max_limit

    async def sql(self, text: str, limit: int = DEFAULT_LIMIT) -> list[Record]:
        """The first `limit` rows of one read-only statement."""
        statement = _read_only(text)
        return await asyncio.to_thread(self.run, statement, [], self._limit(limit))

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
        return await asyncio.to_thread(self.run, f"{text} LIMIT {limit}", params, limit)

    def run(self, text: str, params: Sequence[Any], limit: int) -> list[Record]:
        """Blocking: `text` over the union views, in a read-only transaction."""
        store = self._store
        with store.reading() as cursor:
            try:
                for table in TABLES:
                    cursor.execute(_view(store, table))
                cursor.execute("BEGIN TRANSACTION READ ONLY")
                try:
                    result = cursor.execute(text, list(params))
                    description = result.description or []
                    rows = result.fetchmany(limit)
                finally:
                    cursor.execute("ROLLBACK")
            except duckdb.Error as exc:
                raise TelemetryQueryError(f"telemetry query failed: {exc}") from exc
        columns = [(d[0], str(d[1]) == "JSON") for d in description]
        return [_record(columns, row) for row in rows]

    def _limit(self, limit: int) -> int:
        if not 1 <= limit <= self.max_limit:
            raise TelemetryQueryError(f"limit must be 1..{self.max_limit}, got {limit}")
        return limit


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
