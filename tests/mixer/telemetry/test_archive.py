"""Closed hours move to hourly Parquet partitions, queries still see every row, retention deletes
only whole partitions older than the limit. The clock is injected: rows carry chosen times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from mixer.telemetry import TelemetryHub
from tests.mixer.telemetry.conftest import (
    PROTOBUF,
    gauge_request,
    logs_request,
    settings,
    spans_request,
    until,
    url,
)

DAY = datetime(2026, 3, 1, tzinfo=UTC)


def at(hour: int, minute: int = 0, day: datetime = DAY) -> datetime:
    return day + timedelta(hours=hour, minutes=minute)


def parts(root: Path, table: str) -> list[str]:
    """`date=…/hour=…/part-….parquet` of every archived file of `table`."""
    base = root / "telemetry" / "archive" / table
    return sorted(str(p.relative_to(base)) for p in base.glob("*/*/*.parquet"))


def partitions(files: list[str]) -> list[str]:
    return sorted({f.rsplit("/", 1)[0] for f in files})


async def live_count(hub: TelemetryHub, table: str) -> int:
    rows = await hub.query.sql(f"SELECT count(*) AS n FROM {hub.store.catalog}.main.{table}")
    return int(rows[0]["n"])


async def send(hub: TelemetryHub, http: aiohttp.ClientSession, signal: str, body: bytes) -> None:
    async with http.post(url(hub, signal), data=body, headers=PROTOBUF) as response:
        assert response.status == 200


async def test_archive_moves_closed_hours_and_queries_see_both(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with TelemetryHub(settings(archive_grace=300), tmp_path) as hub:
        starts = [at(10, 5), at(10, 40), at(11, 10), at(12, 30)]
        await send(hub, http, "traces", spans_request(*starts).SerializeToString())
        await send(hub, http, "metrics", gauge_request(at(10, 1), at(12, 1)).SerializeToString())
        await send(hub, http, "logs", logs_request(at(11, 59), at(12, 0)).SerializeToString())
        await hub.flush()

        written = await hub.archive_now(now=at(12, 3))  # hour 11 closed < 5 min ago: not yet
        assert [p.parent.name for p in written] == ["hour=10", "hour=10"]  # spans, metrics
        assert partitions(parts(tmp_path, "spans")) == ["date=2026-03-01/hour=10"]
        assert parts(tmp_path, "logs") == []

        written = await hub.archive_now(now=at(12, 45))
        assert partitions(parts(tmp_path, "spans")) == ["date=2026-03-01/hour=10",
                                                        "date=2026-03-01/hour=11"]  # fmt: skip
        assert partitions(parts(tmp_path, "logs")) == ["date=2026-03-01/hour=11"]
        assert await live_count(hub, "spans") == 1  # hour 12 is still open
        assert await live_count(hub, "metric_points") == 1
        assert await live_count(hub, "logs") == 1

        spans = await hub.query.spans(trace_id=bytes(range(1, 17)).hex())
        assert [s["ts_start"][11:16] for s in spans] == ["10:05", "10:40", "11:10", "12:30"]
        assert {s["rack"] for s in spans} == {"edge-1"}
        assert {s["gear"] for s in spans} == {"decode"}
        assert spans[0]["attributes"] == {"fluxrig.gear": "decode"}  # JSON survives Parquet
        assert len(await hub.query.metrics(name="fluxrig.queue.depth")) == 2
        assert [r["body"] for r in await hub.query.logs()] == ["line 1", "line 0"]
        (total,) = await hub.query.sql("SELECT count(*) AS n FROM spans")
        assert total == {"n": 4}
        since = await hub.query.spans(since=at(10, 30), until=at(12))
        assert [s["ts_start"][11:16] for s in since] == ["11:10", "10:40"]  # newest first

        # a late row for an archived hour: a second part file in the same partition
        await send(hub, http, "traces", spans_request(at(10, 50)).SerializeToString())
        await hub.flush()
        await hub.archive_now(now=at(12, 45))
        hour_10 = [f for f in parts(tmp_path, "spans") if "hour=10" in f]
        assert len(hour_10) == 2
        assert len(await hub.query.spans()) == 5
        leftovers = list((tmp_path / "telemetry" / "archive").rglob("*.tmp"))
        assert leftovers == []


async def test_retention_deletes_only_partitions_older_than_the_limit(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    now = at(12)
    old, recent = now - timedelta(days=10), now - timedelta(days=1)
    async with TelemetryHub(settings(retention_hours=7 * 24), tmp_path) as hub:
        await send(hub, http, "traces", spans_request(old, recent).SerializeToString())
        await hub.flush()
        await hub.archive_now(now=now)
        assert partitions(parts(tmp_path, "spans")) == ["date=2026-02-19/hour=12",
                                                        "date=2026-02-28/hour=12"]  # fmt: skip
        stranger = tmp_path / "telemetry" / "archive" / "spans" / "README.txt"
        stranger.write_text("not a partition")
        edge = now - timedelta(hours=7 * 24 + 1)  # ended exactly at the limit: deleted
        inside = now - timedelta(hours=7 * 24)  # ends an hour after the limit: kept
        await send(hub, http, "traces", spans_request(edge, inside).SerializeToString())
        await hub.flush()
        await hub.archive_now(now=now)

        removed = await hub.apply_retention(now=now)

        assert sorted(p.relative_to(p.parents[1]).as_posix() for p in removed) == [
            "date=2026-02-19/hour=12",
            "date=2026-02-22/hour=11",
        ]
        assert partitions(parts(tmp_path, "spans")) == ["date=2026-02-22/hour=12",
                                                        "date=2026-02-28/hour=12"]  # fmt: skip
        assert not (tmp_path / "telemetry/archive/spans/date=2026-02-19").exists()  # emptied
        assert stranger.read_text() == "not a partition"
        assert len(await hub.query.spans()) == 2
        assert await hub.apply_retention(now=now) == []


async def test_the_archiver_runs_by_itself(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    config = settings(archive_interval=0.05, archive_grace=0)
    async with TelemetryHub(config, tmp_path, clock=lambda: at(12)) as hub:
        await send(hub, http, "traces", spans_request(at(10, 5)).SerializeToString())
        await until(lambda: len(parts(tmp_path, "spans")) == 1)
        assert len(await hub.query.spans()) == 1


async def test_temporary_files_of_a_crash_are_removed_at_start(tmp_path: Path) -> None:
    partition = tmp_path / "telemetry" / "archive" / "spans" / "date=2026-03-01" / "hour=10"
    partition.mkdir(parents=True)
    (partition / ".part-dead.parquet.tmp").write_bytes(b"half written")
    async with TelemetryHub(settings(), tmp_path) as hub:
        assert list(partition.iterdir()) == []
        assert await hub.query.spans() == []
