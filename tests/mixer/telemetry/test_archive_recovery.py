"""An hour moves to Parquet exactly once whatever its COMMIT does: a COMMIT that raises after
committing keeps the file, one that did not commit leaves the rows live (moved at the next
run), a fatal error reopens the database and the move is settled at once, and the temporary
file of a crash is settled at the next start. Real DuckDB, real Parquet files; failures are
injected at the archive's COMMIT (as `test_store_pressure` does at the writer's)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mixer.telemetry import TelemetryHub, archive
from tests.mixer.telemetry.conftest import logs_request, settings, spans_request, until
from tests.mixer.telemetry.test_archive import at, live_count, partitions, parts

OOM = "Out of Memory Error: injected"
FATAL = "FATAL Error: injected"


@asynccontextmanager
async def started(tmp_path: Path, **overrides: Any) -> AsyncIterator[TelemetryHub]:
    async with TelemetryHub(
        settings(archive_grace=0, **overrides), tmp_path, clock=lambda: at(12)
    ) as hub:
        yield hub


def failing_commit(monkeypatch: pytest.MonkeyPatch, error: Exception, committed: bool) -> None:
    """The archive's first COMMIT raises `error`, after committing when `committed`."""
    real, calls = archive._commit, [0]

    def commit(conn: Any) -> None:
        calls[0] += 1
        if calls[0] == 1 and not committed:
            raise error
        real(conn)
        if calls[0] == 1:
            raise error

    monkeypatch.setattr(archive, "_commit", commit)


async def ingest_spans(hub: TelemetryHub, *starts: Any) -> None:
    await hub.ingest("traces", spans_request(*starts).SerializeToString(), "protobuf")
    await hub.flush()


async def span_starts(hub: TelemetryHub) -> list[str]:
    """Every span the query path finds (live and archived), oldest first."""
    rows = await hub.query.sql("SELECT strftime(ts_start, '%H:%M') AS t FROM spans ORDER BY 1")
    return [row["t"] for row in rows]


def temporaries(root: Path) -> list[Path]:
    return list((root / "telemetry" / "archive").rglob("*.tmp"))


# --- a COMMIT that raises -------------------------------------------------------------------------


@pytest.mark.parametrize("committed", [True, False], ids=["after-commit", "at-commit"])
async def test_a_commit_that_raises_is_settled_from_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    committed: bool,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="fluxrig.mixer.telemetry")
    failing_commit(monkeypatch, duckdb.OutOfMemoryException(OOM), committed)
    async with started(tmp_path) as hub:
        await hub.ingest("logs", logs_request(at(10, 1)).SerializeToString(), "protobuf")
        await ingest_spans(hub, at(10, 5), at(10, 40), at(11, 10))

        written = await hub.archive_now()  # the spans of hour 10 come first

        spans = partitions(parts(tmp_path, "spans"))
        if committed:  # the rows had left the live table: the file is kept
            assert len(written) == 3
            assert spans == ["date=2026-03-01/hour=10", "date=2026-03-01/hour=11"]
            assert await live_count(hub, "spans") == 0
        else:  # still live: no file, the hour moves at the next run
            assert len(written) == 2
            assert spans == ["date=2026-03-01/hour=11"]
            assert await live_count(hub, "spans") == 2
        assert temporaries(tmp_path) == []
        assert await span_starts(hub) == ["10:05", "10:40", "11:10"]  # each once

        assert len(await hub.archive_now()) == (0 if committed else 1)
        assert partitions(parts(tmp_path, "spans")) == ["date=2026-03-01/hour=10",
                                                        "date=2026-03-01/hour=11"]  # fmt: skip
        assert await live_count(hub, "spans") == 0
        assert await span_starts(hub) == ["10:05", "10:40", "11:10"]
        assert len(await hub.query.logs()) == 1
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if "archive" in r.getMessage()]
    warnings = [message for level, message in logged if level >= logging.WARNING]
    if committed:
        assert warnings == []
    else:  # once, with the reason; then that it recovered
        assert warnings == [
            f"telemetry archive: cannot archive spans of 2026-03-01 10:00 ({OOM}); the rows "
            "stay where they are and the next run tries again"
        ]
        assert any(m.startswith("telemetry archive recovered: 1 steps") for _, m in logged)


# --- a fatal error --------------------------------------------------------------------------------


@pytest.mark.parametrize("committed", [True, False], ids=["after-commit", "at-commit"])
async def test_a_fatal_error_in_the_periodic_run_reopens_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    committed: bool,
) -> None:  # fmt: skip
    """The run that failed fatally leaves its file undecided; the store reopens the database
    and runs the archive again at once, which settles it first; later runs work."""
    failing_commit(monkeypatch, duckdb.FatalException(FATAL), committed)
    async with started(tmp_path, archive_interval=0.05) as hub:
        await ingest_spans(hub, at(10, 5), at(10, 40))
        await until(lambda: hub.store.reopened == 1 and len(parts(tmp_path, "spans")) == 1)
        assert temporaries(tmp_path) == []
        assert await live_count(hub, "spans") == 0
        assert await span_starts(hub) == ["10:05", "10:40"]

        await ingest_spans(hub, at(11, 5))
        await until(lambda: len(parts(tmp_path, "spans")) == 2)
        assert await span_starts(hub) == ["10:05", "10:40", "11:05"]
        assert await live_count(hub, "spans") == 0
        assert hub.store.reopened == 1
    failed = [r for r in caplog.records if r.getMessage().startswith("the telemetry database fa")]
    assert [r.getMessage() for r in failed] == [f"the telemetry database failed ({FATAL}); "
                                                "reopening it"]  # fmt: skip


async def test_a_fatal_error_in_archive_now_is_settled_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing_commit(monkeypatch, duckdb.FatalException(FATAL), committed=True)
    async with started(tmp_path) as hub:
        await ingest_spans(hub, at(10, 5), at(10, 40))
        with pytest.raises(duckdb.FatalException, match="injected"):
            await hub.archive_now()
        await until(lambda: hub.store.reopened == 1)
        assert len(temporaries(tmp_path)) == 1  # undecided until the database answers

        (kept,) = await hub.archive_now()

        assert kept.name.startswith("part-")
        assert kept.exists()
        assert temporaries(tmp_path) == []
        assert await span_starts(hub) == ["10:05", "10:40"]
        assert await live_count(hub, "spans") == 0


# --- a crash in the middle of a move --------------------------------------------------------------


@pytest.mark.parametrize(
    ("deleted", "late"),
    [(True, False), (False, False), (True, True), (False, True)],
    ids=["deleted", "live", "deleted-then-late", "live-then-late"],
)
async def test_the_temporary_file_of_a_crash_is_settled_at_start(
    tmp_path: Path, deleted: bool, late: bool
) -> None:
    """A crash after the COPY (the rows are live) or after the COMMIT of the DELETE (they are
    gone); rows of the same hour may have arrived later, one of them sent again (identical)."""
    partition = tmp_path / "telemetry" / "archive" / "spans" / "date=2026-03-01" / "hour=10"
    temp = partition / ".part-0123456789abcdef.parquet.tmp"
    where = (
        "ts_start >= TIMESTAMP '2026-03-01 10:00:00' AND ts_start < TIMESTAMP '2026-03-01 11:00:00'"
    )

    def crash(conn: Any) -> None:
        conn.execute(f"COPY (SELECT * FROM spans WHERE {where}) TO '{temp}' (FORMAT parquet)")
        if deleted:
            conn.execute(f"DELETE FROM spans WHERE {where}")

    async with started(tmp_path) as hub:
        await ingest_spans(hub, at(10, 5), at(10, 40), at(11, 10))
        partition.mkdir(parents=True)
        await hub.store.call(crash)
        if late:
            await ingest_spans(hub, at(10, 5), at(10, 50))  # the first one again
        assert len(await span_starts(hub)) == 1 + 2 * late + 2 * (not deleted)  # never the temp
    expected = sorted(["10:05", "10:40", "11:10"] + ["10:05", "10:50"] * late)

    async with started(tmp_path) as hub:
        assert not temp.exists()
        archived = ["part-0123456789abcdef.parquet"] if deleted else []
        assert [p.name for p in partition.iterdir()] == archived
        assert await span_starts(hub) == expected  # none lost, none twice
        await hub.archive_now()
        assert await span_starts(hub) == expected
        assert await live_count(hub, "spans") == 0
