"""The telemetry writer under a hostile read query: DuckDB's memory limit is shared by queries and
inserts, so a query holding the memory makes inserts (and COMMITs, checkpoints) fail. No accepted
row is lost: a failing batch is retried (exactly once), a database invalidated by a fatal error
is reopened, a batch failing because of its own data is dropped request by request, and the hub
keeps answering meanwhile. Real DuckDB and a real hub; a failure is injected only where a real
one cannot be made deterministic. No sleeps: the tests wait on conditions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from mixer.telemetry import TelemetryBusyError, TelemetryHub, TelemetryQueryError, recovery
from mixer.telemetry.recovery import EXCLUSIVE_AFTER
from mixer.telemetry.schema import SPANS
from mixer.telemetry.store import TelemetryStore
from tests.mixer.telemetry.conftest import BOUND, PROTOBUF, settings, spans_request, until, url

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TIGHT = {"query_memory_limit": "32MiB", "query_spill_limit": "0"}  # nothing spills: memory stays
GEAR = SPANS.column_names.index("gear")
HOGS = (1_000_000, 200_000, 40_000, 8_000, 1_500)  # rows per held sort, largest first


@asynccontextmanager
async def started(tmp_path: Path, **overrides: Any) -> AsyncIterator[TelemetryHub]:
    async with TelemetryHub(settings(**overrides), tmp_path / "state") as hub:
        yield hub


@contextmanager
def hogging(store: TelemetryStore) -> Iterator[duckdb.DuckDBPyConnection]:
    """Fill the database's memory as a hungry query does: sorted results held by read cursors
    (spilling is off), under the shared side of the store's lock; freed at the end."""
    with store.reading() as cursor:
        held: list[duckdb.DuckDBPyConnection] = []
        try:
            for rows in HOGS:
                while True:
                    hog = cursor.cursor()
                    try:
                        hog.execute(f"SELECT range FROM range({rows}) ORDER BY range DESC")
                        hog.fetchone()
                    except duckdb.OutOfMemoryException:
                        hog.close()
                        break
                    held.append(hog)
            yield cursor
        finally:
            for hog in held:
                with contextlib.suppress(duckdb.Error):  # the database may have failed
                    hog.close()


async def ingest(hub: TelemetryHub, count: int, spans: int, gear: str = "decode") -> None:
    body = spans_request(*[NOW] * spans, gear=gear).SerializeToString()
    for _ in range(count):
        await hub.ingest("traces", body, "protobuf")


async def stored(hub: TelemetryHub) -> int:
    (row,) = await hub.query.sql("SELECT count(*) AS n FROM spans")
    return int(row["n"])


def waiting_for_the_query(store: TelemetryStore) -> bool:
    """The writer failed until it escalated: it waits for the query to end (exclusive side)."""
    return store.retried >= EXCLUSIVE_AFTER and store.lock.writing


# --- memory pressure ------------------------------------------------------------------------------


async def test_inserts_wait_for_a_query_holding_the_memory_and_none_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fluxrig.mixer.telemetry")
    async with started(tmp_path, **TIGHT) as hub:
        store = hub.store
        with hogging(store):
            assert store.lock.readers == 1
            await ingest(hub, 20, 50)  # accepted: queued
            await until(lambda: waiting_for_the_query(store))
            assert store.written["spans"] == 0  # nothing fits while the query holds the memory
        await hub.flush()
        assert (store.written["spans"], store.failed) == (1000, 0)
        assert await stored(hub) == 1000  # each row once
        await ingest(hub, 2, 50)  # and the store keeps working
        await hub.flush()
        assert await stored(hub) == 1100
    failing = [r for r in caplog.records if r.getMessage().startswith("telemetry writes are fail")]
    recovered = [r for r in caplog.records if r.getMessage().startswith("telemetry writes recov")]
    assert [r.levelno for r in failing + recovered] == [logging.WARNING, logging.INFO]
    assert "Out of Memory Error" in failing[0].getMessage()  # the reason, once per episode
    assert "1 batches waited" in recovered[0].getMessage()


async def test_hungry_queries_on_the_query_path_lose_no_row(tmp_path: Path) -> None:
    """Two queries at a time fill 64MiB through `TelemetryQuery` (and fail), again and again,
    while exports arrive, until the writer has had to retry: every row is stored once."""
    limits = {"query_memory_limit": "64MiB", "query_spill_limit": "128MiB",
              "max_concurrent_queries": 2}  # fmt: skip
    async with started(tmp_path, **limits) as hub:
        store, done = hub.store, asyncio.Event()

        async def hungry() -> None:
            while not done.is_set():
                with contextlib.suppress(TelemetryQueryError, TelemetryBusyError):
                    await hub.query.sql("SELECT list(range) AS l FROM range(100000000)")

        async with asyncio.timeout(BOUND), asyncio.TaskGroup() as group:
            for _ in range(2):
                group.create_task(hungry())
            sent = 0
            while store.retried == 0:  # until a write failed under the queries' pressure
                await ingest(hub, 5, 50)
                sent += 250
                await hub.flush()
            done.set()
        await hub.flush()
        assert (store.written["spans"], store.failed) == (sent, 0)
        assert await stored(hub) == sent


# --- fatal errors ---------------------------------------------------------------------------------


async def test_a_database_invalidated_by_a_failed_checkpoint_is_reopened(tmp_path: Path) -> None:
    """A real fatal error: a CHECKPOINT that finds no memory invalidates the database."""
    async with started(tmp_path, **TIGHT) as hub:
        store = hub.store
        await ingest(hub, 4, 50)
        await hub.flush()
        busy: TelemetryBusyError | None = None
        try:
            with hogging(store) as cursor:
                with pytest.raises(duckdb.FatalException, match="Failed to create checkpoint"):
                    await store.call(lambda conn: conn.execute("CHECKPOINT"))
                await ingest(hub, 2, 50)  # accepted while the database is down
                await until(lambda: store.lock.writing)  # the writer waits to reopen it
                cursor.execute("SELECT count(*) FROM spans")  # the query in flight fails...
        except TelemetryBusyError as exc:  # ... with 503: retry
            busy = exc
        assert busy is not None
        assert re.search(r"failed while the query ran \(FATAL Error: .+\) .* retry", str(busy))
        await until(lambda: store.reopened == 1)
        await hub.flush()
        assert await stored(hub) == 300  # nothing committed was lost, nothing queued either
        (limits,) = await hub.query.sql(
            "SELECT current_setting('memory_limit') AS memory, "
            "current_setting('enable_external_access') AS external"
        )
        assert limits == {"memory": "32.0 MiB", "external": False}  # reopened the same way
        await ingest(hub, 1, 50)
        await hub.flush()
        assert (await stored(hub), store.failed) == (350, 0)


async def test_a_read_that_meets_a_failed_database_gets_it_reopened(tmp_path: Path) -> None:
    """The writer is idle when a read invalidates the database (here a CHECKPOINT on a read
    cursor with no memory left): the read is answered 503 and the writer reopens it."""
    async with started(tmp_path, **TIGHT) as hub:
        store = hub.store
        await ingest(hub, 2, 50)
        await hub.flush()
        busy: TelemetryBusyError | None = None
        try:
            with hogging(store) as cursor:
                cursor.execute("CHECKPOINT")
        except TelemetryBusyError as exc:
            busy = exc
        assert busy is not None
        assert isinstance(busy.__cause__, duckdb.FatalException)
        await until(lambda: store.reopened == 1)
        assert await stored(hub) == 100


async def test_a_query_running_when_the_database_fails_is_interrupted(tmp_path: Path) -> None:
    """The writer does not wait for a long query to end before it reopens the database: it
    interrupts it, and the query's caller gets 503 (retry); the next query runs."""
    async with started(tmp_path, query_timeout=600) as hub:
        runaway = asyncio.ensure_future(
            hub.query.sql("SELECT count(*) AS n FROM range(10000000000000)")
        )
        await until(lambda: hub.query.busy == 1 and hub.store.lock.readers == 1)

        def fail(conn: Any) -> None:
            raise duckdb.FatalException("FATAL Error: injected")

        with pytest.raises(duckdb.FatalException):
            await hub.store.call(fail)
        async with asyncio.timeout(BOUND):  # not 600 s
            with pytest.raises(TelemetryBusyError, match=r"\(FATAL Error: injected\).*retry"):
                await runaway
        await until(lambda: hub.store.reopened == 1)
        assert await hub.query.sql("SELECT 42 AS n") == [{"n": 42}]


async def test_an_insert_failing_fatally_is_retried_after_reopening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database fails during an insert, and cannot be reopened the first two times."""
    async with started(tmp_path) as hub:
        store = hub.store
        real_insert, real_connect = recovery._insert, store._connect
        failures = {"insert": 1, "connect": 2}

        def insert(conn: Any, table: Any, rows: Any) -> None:
            if failures["insert"]:
                failures["insert"] -= 1
                raise duckdb.FatalException("FATAL Error: injected")
            real_insert(conn, table, rows)

        def connect() -> Any:
            if failures["connect"]:
                failures["connect"] -= 1
                raise duckdb.IOException("IO Error: injected: cannot open")
            return real_connect()

        monkeypatch.setattr(recovery, "_insert", insert)
        monkeypatch.setattr(store, "_connect", connect)
        await ingest(hub, 3, 50)
        async with asyncio.timeout(BOUND):
            await hub.flush()
        assert failures == {"insert": 0, "connect": 0}
        assert (store.reopened, store.retried) == (1, 2)  # the insert, the second reopen
        assert (await stored(hub), store.failed) == (150, 0)


# --- exactly once ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["after-commit", "at-commit", "mid-batch"])
async def test_a_retried_batch_is_written_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A COMMIT that raises although it committed (seen under real pressure), one that did not
    commit, and an insert failing after earlier statements of the same transaction."""
    real_insert, real_commit = recovery._insert, recovery._commit
    calls = {"insert": 0, "commit": 0}
    oom = duckdb.OutOfMemoryException("Out of Memory Error: injected")

    def insert(conn: Any, table: Any, rows: Any) -> None:
        calls["insert"] += 1
        if where == "mid-batch" and calls["insert"] == 3:
            raise oom
        real_insert(conn, table, rows)

    def commit(conn: Any) -> None:
        calls["commit"] += 1
        if where == "at-commit" and calls["commit"] == 1:
            raise oom
        real_commit(conn)
        if where == "after-commit" and calls["commit"] == 1:
            raise oom

    monkeypatch.setattr(recovery, "_insert", insert)
    monkeypatch.setattr(recovery, "_commit", commit)
    async with started(tmp_path, batch_rows=10, flush_interval=600) as hub:
        await ingest(hub, 1, 50)  # 5 INSERT statements of 10 rows in one transaction
        await hub.flush()
        assert (await stored(hub), hub.store.written["spans"], hub.store.retried) == (50, 50, 1)
    assert calls["commit"] == {"after-commit": 1, "at-commit": 2, "mid-batch": 1}[where]


# --- the data's fault -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "retried"),
    [(duckdb.ConversionException, 0), (duckdb.OutOfMemoryException, 2 * EXCLUSIVE_AFTER)],
    ids=["conversion", "too-large"],
)
async def test_rows_at_fault_are_dropped_and_do_not_block_the_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: type[Exception], retried: int
) -> None:
    """A conversion error is the data's fault at once; running out of memory while no query
    runs (the exclusive retry) too: the batch is inserted request by request and only the
    failing request is dropped."""
    real_insert = recovery._insert

    def insert(conn: Any, table: Any, rows: Any) -> None:
        if any(row[GEAR] == "bad" for row in rows):
            raise error("injected")
        real_insert(conn, table, rows)

    monkeypatch.setattr(recovery, "_insert", insert)
    async with started(tmp_path, flush_interval=600) as hub:
        await ingest(hub, 2, 50)
        await ingest(hub, 1, 7, gear="bad")
        await ingest(hub, 1, 50)
        async with asyncio.timeout(BOUND):
            await hub.flush()  # one batch of the four requests
        assert (hub.store.written["spans"], hub.store.failed) == (150, 7)
        assert (await stored(hub), hub.store.retried) == (150, retried)
        await ingest(hub, 1, 50)
        await hub.flush()
        assert await stored(hub) == 200


# --- checkpoints ----------------------------------------------------------------------------------


async def test_the_writer_checkpoints_when_no_query_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB's automatic checkpoint (inside a COMMIT, whatever queries hold) is off; the
    writer checkpoints under the exclusive side of the lock, not while a query runs."""
    monkeypatch.setattr(recovery, "CHECKPOINT_WAL", 1)  # every batch calls for one
    monkeypatch.setattr(recovery, "CHECKPOINT_WAL_MOST", 1 << 40)  # never waits for queries
    async with started(tmp_path) as hub:
        store = hub.store
        (row,) = await hub.query.sql("SELECT current_setting('checkpoint_threshold') AS t")
        assert row == {"t": "909.4 TiB"}
        wal = store.path.with_name(store.path.name + ".wal")
        with store.reading():  # a query runs
            await ingest(hub, 1, 50)
            await hub.flush()
            assert (store.checkpoints, wal.stat().st_size > 0) == (0, True)
        await ingest(hub, 1, 50)
        await hub.flush()
        assert store.checkpoints == 1
        assert not wal.exists() or wal.stat().st_size == 0
        assert await stored(hub) == 100


# --- the hub meanwhile ----------------------------------------------------------------------------


async def test_the_hub_answers_while_the_writer_retries(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Receivers accept until the write queue is full, then refuse 503 / UNAVAILABLE, at once;
    the event loop is never blocked by the retries."""
    async with started(tmp_path, queue_rows=100, batch_rows=50, **TIGHT) as hub:
        store = hub.store
        body = spans_request(*[NOW] * 10).SerializeToString()
        statuses: list[int] = []
        with hogging(store):
            lag = 0.0
            last = time.monotonic()

            async def tick() -> None:
                nonlocal lag, last
                while True:
                    await asyncio.sleep(0.01)
                    now = time.monotonic()
                    lag, last = max(lag, now - last), now

            ticker = asyncio.ensure_future(tick())
            try:
                for _ in range(12):
                    async with http.post(url(hub, "traces"), data=body, headers=PROTOBUF) as r:
                        statuses.append(r.status)
                target = f"127.0.0.1:{hub.grpc_port}"
                async with grpc.aio.insecure_channel(target) as channel:
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await trace_service_pb2_grpc.TraceServiceStub(channel).Export(
                            spans_request(NOW)
                        )
                await until(lambda: waiting_for_the_query(store))
            finally:
                ticker.cancel()
            assert statuses == [200] * 10 + [503] * 2  # 100 rows queued, then full
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
            assert lag < 0.5  # the loop kept running while the writer retried
        await hub.flush()
        assert (await stored(hub), store.failed, hub.refused) == (100, 0, 3)
        async with http.post(url(hub, "traces"), data=body, headers=PROTOBUF) as response:
            assert response.status == 200  # room again
