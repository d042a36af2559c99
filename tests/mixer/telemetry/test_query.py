"""The query path: read-only SQL only, no file outside the archive, limits, filters, JSON-able
results."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mixer.telemetry import TelemetryHub, TelemetryQueryError
from tests.mixer.telemetry.conftest import gauge_request, spans_request

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def ingest(hub: TelemetryHub, signal: str, body: bytes) -> None:
    await hub.ingest(signal, body, "protobuf")  # type: ignore[arg-type]
    await hub.flush()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("INSERT INTO spans (name) VALUES ('x')", "are allowed, not INSERT"),
        ("DELETE FROM logs", "are allowed, not DELETE"),
        ("COPY spans TO 'out.csv'", "are allowed, not COPY"),
        ("ATTACH 'other.duckdb'", "are allowed, not ATTACH"),
        ("SET enable_external_access = true", "are allowed, not SET"),
        ("SELECT 1; DROP TABLE spans", "exactly one statement per query, got 2"),
        ("SELEC nothing", "does not parse"),
        ("", "exactly one statement per query, got 0"),
    ],
)
async def test_sql_accepts_only_one_read_statement(
    hub: TelemetryHub, text: str, named: str
) -> None:
    with pytest.raises(TelemetryQueryError, match=re.escape(named)):
        await hub.query.sql(text)
    assert await hub.query.sql("SELECT count(*) AS n FROM spans") == [{"n": 0}]  # tables intact


async def test_sql_cannot_read_files_outside_the_archive(hub: TelemetryHub, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    with pytest.raises(TelemetryQueryError, match="disabled by configuration"):
        await hub.query.sql(f"SELECT * FROM read_text('{secret}')")
    with pytest.raises(TelemetryQueryError, match="disabled by configuration"):
        await hub.query.sql(f"SELECT * FROM read_csv('{secret}')")


async def test_sql_runs_with_the_with_clause_and_a_limit(hub: TelemetryHub) -> None:
    await ingest(hub, "traces", spans_request(*[NOW] * 5).SerializeToString())
    rows = await hub.query.sql(
        "WITH g AS (SELECT gear, name FROM spans) SELECT * FROM g ORDER BY name", limit=3
    )
    assert rows == [{"gear": "decode", "name": f"span-{i}"} for i in range(3)]
    for bad in (0, 100_001):
        with pytest.raises(TelemetryQueryError, match=r"limit must be 1\.\.100000"):
            await hub.query.sql("SELECT 1", limit=bad)
    with pytest.raises(TelemetryQueryError, match=r"telemetry query failed: .*no_such_column"):
        await hub.query.sql("SELECT no_such_column FROM spans")


async def test_filters_select_rack_gear_and_name(hub: TelemetryHub) -> None:
    await ingest(hub, "metrics", gauge_request(NOW, NOW, rack="edge-1").SerializeToString())
    await ingest(hub, "metrics", gauge_request(NOW, rack="edge-2").SerializeToString())
    await ingest(hub, "traces", spans_request(NOW, gear="decode").SerializeToString())
    await ingest(hub, "traces", spans_request(NOW, gear="route").SerializeToString())
    assert len(await hub.query.metrics(rack="edge-1")) == 2
    assert len(await hub.query.metrics(rack="edge-2", name="fluxrig.queue.depth")) == 1
    assert await hub.query.metrics(name="other") == []
    assert [s["gear"] for s in await hub.query.spans(gear="route")] == ["route"]
    assert len(await hub.query.spans(rack="edge-1", limit=1)) == 1
    later = datetime(2026, 3, 1, 13, tzinfo=UTC)
    assert await hub.query.spans(since=later) == []


async def test_results_are_json_able(hub: TelemetryHub) -> None:
    request = gauge_request(NOW)
    request.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[0].as_double = float(
        "nan"
    )
    await ingest(hub, "metrics", request.SerializeToString())
    (point,) = await hub.query.metrics()
    assert point["value"] == "NaN"
    assert point["ts"] == "2026-03-01T12:00:00+00:00"
    assert point["resource"] == {"fluxrig.rack": "edge-1"}
    json.dumps(point, allow_nan=False)
