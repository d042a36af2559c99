"""The bounds of a telemetry query: `query_timeout` interrupts a runaway query in DuckDB (its
thread and its share of the store's lock are freed), `max_concurrent_queries` refuses one more,
`query_memory_limit` / `query_spill_limit` fail a hungry query cleanly; REST and gRPC answer each
with its code. Real DuckDB, real hub, real mixer; no sleeps: the tests wait on conditions."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from fluxrig.v1 import telemetry_pb2, telemetry_pb2_grpc
from pydantic import ValidationError

from mixer.api.grpc.status import ERROR_CODE_KEY
from mixer.app import Mixer
from mixer.telemetry import TelemetryClosedError, TelemetryHub, TelemetryQueryError
from mixer.telemetry.config import TelemetrySection
from mixer.telemetry.errors import TelemetryQueryTimeoutError, TooManyTelemetryQueriesError
from mixer.telemetry.store import SharedLock
from tests.mixer.telemetry.conftest import BOUND, settings, spans_request, until
from tests.mixer.telemetry_feed import READ, clean_environment
from tests.mixer.telemetry_feed import settings as mixer_settings

TIMEOUT = 0.5  # query_timeout of the tests that wait for it
MARGIN = 3.0  # seconds a stopped query may take to end after its timeout (a loaded machine)
RUNAWAY = [
    "SELECT count(*) AS n FROM range(10000000000000)",  # ten trillion rows
    "SELECT count(*) AS n FROM range(10000000) a, range(10000000) b WHERE a.range + b.range < 0",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT max(n) AS n FROM r",
]
RUNAWAY_SQL = RUNAWAY[0]
HUNGRY = [  # more than 32MiB that cannot spill, and a sort that must spill (and may not)
    "SELECT list(range) AS l FROM range(100000000)",
    "SELECT range FROM range(50000000) ORDER BY random()",
]


@asynccontextmanager
async def started(tmp_path: Path, **overrides: Any) -> AsyncIterator[TelemetryHub]:
    async with TelemetryHub(settings(**overrides), tmp_path / "state") as hub:
        yield hub


@contextmanager
def archiving(lock: SharedLock) -> Iterator[None]:
    """Hold the exclusive side of the store's lock (as an archive move does) on another thread:
    a query then waits for it, holding its slot, until the block ends."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock.exclusive():
            held.set()
            release.wait()

    thread = threading.Thread(target=hold, name="test-archive")
    thread.start()
    try:
        assert held.wait(BOUND)
        yield
    finally:
        release.set()
        thread.join(BOUND)


# --- the timeout --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", RUNAWAY, ids=["range", "cross-join", "recursive"])
async def test_a_runaway_query_is_stopped_after_the_timeout(tmp_path: Path, text: str) -> None:
    async with started(tmp_path, query_timeout=TIMEOUT, max_concurrent_queries=1) as hub:
        start = time.monotonic()
        with pytest.raises(TelemetryQueryTimeoutError) as stopped:
            await hub.query.sql(text)
        took = time.monotonic() - start
        assert TIMEOUT <= took < TIMEOUT + MARGIN
        message = str(stopped.value)
        assert "longer than 0.5s" in message
        assert "[telemetry] query_timeout" in message
        # the one thread is free again: the next query runs at once, canned ones too
        assert hub.query.busy == 0
        assert await hub.query.sql("SELECT 42 AS n") == [{"n": 42}]
        assert await hub.query.spans() == []


async def test_a_stopped_query_lets_the_archiver_in(tmp_path: Path) -> None:
    """A runaway query holds the shared side of the store's lock; an archive move waiting for
    the exclusive side gets it once the timeout stopped the query, not when the query ends."""
    async with started(tmp_path, query_timeout=TIMEOUT * 2) as hub:
        old = datetime(2026, 3, 1, 10, 5, tzinfo=UTC)
        await hub.ingest("traces", spans_request(old).SerializeToString(), "protobuf")
        await hub.flush()
        start = time.monotonic()
        runaway = asyncio.ensure_future(hub.query.sql(RUNAWAY_SQL))
        await until(lambda: hub.store.lock.readers == 1)  # the query holds the lock
        written = await hub.archive_now(now=datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
        archived = time.monotonic() - start
        with pytest.raises(TelemetryQueryTimeoutError):
            await runaway
        assert [p.parent.name for p in written] == ["hour=10"]
        assert TIMEOUT * 2 <= archived < TIMEOUT * 2 + MARGIN
        assert len(await hub.query.spans()) == 1  # found in the archive now


async def test_the_timeout_counts_the_wait_for_the_archiver(tmp_path: Path) -> None:
    async with started(tmp_path, query_timeout=TIMEOUT, max_concurrent_queries=1) as hub:
        with archiving(hub.store.lock):
            query = asyncio.ensure_future(hub.query.spans())
            await until(lambda: hub.query.stopping == 1)  # timed out while waiting for the lock
            assert (hub.query.busy, query.done()) == (1, False)  # answered once its thread ends
        with pytest.raises(TelemetryQueryTimeoutError, match="query_timeout"):
            await query
        assert (hub.query.busy, hub.query.stopping) == (0, 0)


# --- concurrency ----------------------------------------------------------------------------------


async def test_one_query_more_than_max_concurrent_queries_is_refused(tmp_path: Path) -> None:
    async with started(tmp_path, query_timeout=600, max_concurrent_queries=2) as hub:
        runaways = [asyncio.ensure_future(hub.query.sql(RUNAWAY_SQL)) for _ in range(2)]
        try:
            await until(lambda: hub.query.busy == 2 and hub.store.lock.readers == 2)
            named = re.escape("2 telemetry queries are running, the most allowed at once "
                              "([telemetry] max_concurrent_queries = 2)")  # fmt: skip
            with pytest.raises(TooManyTelemetryQueriesError, match=named):
                await hub.query.sql("SELECT 1")
            with pytest.raises(TooManyTelemetryQueriesError, match=named):
                await hub.query.metrics()  # canned queries share the bound
            assert not any(r.done() for r in runaways)
        finally:
            for runaway in runaways:
                runaway.cancel()  # a cancelled caller interrupts its query
        for runaway in runaways:
            with pytest.raises(asyncio.CancelledError):
                await runaway
        await until(lambda: hub.query.busy == 0)  # the threads end soon after, not in 600 s
        assert hub.store.lock.readers == 0
        assert await hub.query.sql("SELECT 1 AS one") == [{"one": 1}]


async def test_closing_the_hub_interrupts_a_running_query(tmp_path: Path) -> None:
    hub = TelemetryHub(settings(query_timeout=600), tmp_path / "state")
    await hub.start()
    try:
        query = hub.query
        runaway = asyncio.ensure_future(query.sql(RUNAWAY_SQL))
        await until(lambda: hub.store.lock.readers == 1)
    finally:
        async with asyncio.timeout(BOUND):  # not 600 s: the query is interrupted first
            await hub.aclose()
    with pytest.raises(TelemetryClosedError, match="closed while the query ran"):
        await runaway
    with pytest.raises(TelemetryClosedError, match="closed"):
        await query.sql("SELECT 1")
    await query.aclose()  # idempotent


# --- memory ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", HUNGRY, ids=["list", "sort"])
async def test_a_query_over_the_memory_limit_fails_cleanly(tmp_path: Path, text: str) -> None:
    limits = {"query_memory_limit": "32MiB", "query_spill_limit": "16MiB"}
    async with started(tmp_path, **limits) as hub:
        with pytest.raises(TelemetryQueryError) as failed:
            await hub.query.sql(text)
        message = str(failed.value)
        assert message.startswith("telemetry query failed: Out of Memory Error")
        assert "32.0MiB of memory ([telemetry] query_memory_limit)" in message
        assert "16.0MiB of disk to spill (query_spill_limit)" in message
        assert "SET threads" not in message  # DuckDB's advice is not for API users
        assert await hub.query.sql("SELECT count(*) AS n FROM range(1000)") == [{"n": 1000}]
        assert hub.query.busy == 0


async def test_the_store_applies_the_limits_to_duckdb(tmp_path: Path) -> None:
    limits = {"query_memory_limit": "64MiB", "query_spill_limit": "0", "query_threads": 1}
    async with started(tmp_path, **limits) as hub:
        (row,) = await hub.query.sql(
            "SELECT current_setting('memory_limit') AS memory, current_setting('threads') AS "
            "threads, current_setting('max_temp_directory_size') AS spill"
        )
        assert row == {"memory": "64.0 MiB", "threads": 1, "spill": "0 bytes"}


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"query_timeout": 0}, "query_timeout\n  Input should be greater than 0"),
        ({"max_concurrent_queries": 0}, "max_concurrent_queries\n  Input should be greater"),
        ({"query_memory_limit": "lots"}, "'lots' is not a size: expected a number of bytes"),
        ({"query_memory_limit": "1MB"}, "976.6KiB is too little: DuckDB needs at least 32MiB"),
        ({"query_spill_limit": "-1GB"}, "query_spill_limit\n  Value error, '-1GB' is not a size"),
        ({"query_threads": 0}, "query_threads\n  Input should be greater than or equal to 1"),
    ],
)
def test_the_query_settings_refuse_bad_values(values: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(named)):
        TelemetrySection.model_validate(values)


def test_the_query_settings_take_sizes_with_units() -> None:
    section = TelemetrySection.model_validate({"query_memory_limit": "1GiB",
                                               "query_spill_limit": 0})  # fmt: skip
    assert (section.query_memory_limit, section.query_spill_limit) == (1 << 30, 0)
    default = TelemetrySection()
    assert (default.query_timeout, default.max_concurrent_queries) == (10.0, 4)
    assert (default.query_memory_limit, default.query_spill_limit) == (512 << 20, 1 << 30)


# --- over REST and gRPC ---------------------------------------------------------------------------


@pytest.fixture
async def bounded_mixer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Mixer]:
    """The assembled mixer, its queries bounded tightly: one at a time, TIMEOUT, 32MiB."""
    clean_environment(monkeypatch)
    telemetry = settings(query_timeout=TIMEOUT, max_concurrent_queries=1,
                         query_memory_limit="32MiB", query_spill_limit="16MiB")  # fmt: skip
    config = mixer_settings(tmp_path / "mixer").model_copy(update={"telemetry": telemetry})
    async with Mixer(config) as mixer:
        yield mixer


async def test_rest_and_grpc_answer_the_bounds_with_their_codes(bounded_mixer: Mixer) -> None:
    mixer, hub = bounded_mixer, bounded_mixer.telemetry
    assert hub is not None
    assert mixer.api_url is not None
    assert mixer.grpc_target is not None
    url = f"{mixer.api_url}/api/v1/telemetry"
    auth = {"Authorization": f"Bearer {READ}"}
    read = (("authorization", f"Bearer {READ}"),)
    async with (
        aiohttp.ClientSession(headers=auth) as http,
        grpc.aio.insecure_channel(mixer.grpc_target) as channel,
    ):
        stub = telemetry_pb2_grpc.TelemetryServiceStub(channel)

        async def rest(sql: str, status: int, code: str) -> str:
            async with http.post(f"{url}/query", json={"sql": sql}) as response:
                body = await response.json()
            assert (response.status, body["error"]["code"]) == (status, code), body
            return str(body["error"]["message"])

        async def rpc(sql: str, status: grpc.StatusCode, code: str) -> str:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.QuerySql(telemetry_pb2.QuerySqlRequest(sql=sql), metadata=read)
            assert refused.value.code() is status, refused.value.details()
            assert (ERROR_CODE_KEY, code) in tuple(refused.value.trailing_metadata() or ())
            return refused.value.details() or ""

        assert "[telemetry] query_timeout" in await rest(RUNAWAY_SQL, 400, "query_timeout")
        deadline = grpc.StatusCode.DEADLINE_EXCEEDED
        assert "[telemetry] query_timeout" in await rpc(RUNAWAY_SQL, deadline, "query_timeout")

        hungry = HUNGRY[0]
        assert "Out of Memory" in await rest(hungry, 400, "invalid_query")
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        assert "query_memory_limit" in await rpc(hungry, invalid, "invalid_query")

        with archiving(hub.store.lock):  # the one slot is held by a query waiting for the lock
            held = asyncio.ensure_future(hub.query.spans())
            await until(lambda: hub.query.busy == 1)
            busy = "max_concurrent_queries = 1"
            assert busy in await rest("SELECT 1", 503, "too_many_queries")
            unavailable = grpc.StatusCode.UNAVAILABLE
            assert busy in await rpc("SELECT 1", unavailable, "too_many_queries")
            async with http.get(f"{url}/spans") as response:
                assert response.status == 503  # canned queries share the slot
            await until(lambda: hub.query.stopping == 1)
        with pytest.raises(TelemetryQueryTimeoutError):
            await held
        async with http.post(f"{url}/query", json={"sql": "SELECT 1 AS one"}) as response:
            assert (response.status, (await response.json())["rows"]) == (200, [{"one": 1}])
