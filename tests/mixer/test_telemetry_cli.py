"""`fluxrig telemetry query | metrics | logs | trace` against the assembled mixer, holding what the
real OpenTelemetry SDK exported to it. The CLI's blocking urllib calls run in a thread so the
mixer keeps serving in the test's event loop."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mixer.app import Mixer
from rack.cli import main
from rack.telemetry_cli import tree
from tests.mixer.documents import TOKEN
from tests.mixer.telemetry_feed import FLUX_A, READ, Fed, clean_environment, fed_mixer
from tests.mixer.telemetry_feed import settings as mixer_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_environment(monkeypatch)


class Cli:
    """`fluxrig ...` with the mixer's URL and a token; returns (code, out, err)."""

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.url, self.capsys = url, capsys

    async def __call__(self, *argv: str, token: str | None = READ) -> tuple[int, str, str]:
        args = [*argv, "--api-url", self.url]
        if token is not None:
            args += ["--api-token", token]
        self.capsys.readouterr()
        code = await asyncio.to_thread(main, args)
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[tuple[Mixer, Fed]]:
    async with fed_mixer(tmp_path) as started:
        yield started


@pytest.fixture
def cli(fed: tuple[Mixer, Fed], capsys: pytest.CaptureFixture[str]) -> Cli:
    mixer, _ = fed
    assert mixer.api_url is not None
    return Cli(mixer.api_url, capsys)


def lines(out: str) -> list[list[str]]:
    """The output's lines, split on runs of two or more spaces (the table's gutters)."""
    return [re.split(r" {2,}", line.rstrip()) for line in out.splitlines() if line.strip()]


def cut(out: str, header: str) -> list[list[str]]:
    """The table under `header` (its first word), cut at the header's column starts."""
    text = out.splitlines()
    first = next(i for i, line in enumerate(text) if line.startswith(header))
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", text[first])]
    rows = []
    for line in text[first:]:
        if not line.strip():
            break
        rows.append([line[a:b].rstrip() for a, b in zip(starts, [*starts[1:], None], strict=True)])
    return rows


async def test_telemetry_query_prints_a_table_or_json(cli: Cli) -> None:
    text = "SELECT gear, count(*) AS n FROM spans GROUP BY gear ORDER BY gear"
    code, out, err = await cli("telemetry", "query", text)
    assert code == 0, err
    assert lines(out) == [["gear", "n"], ["audit", "1"], ["decode", "2"], ["pos-in", "2"],
                          ["route", "1"], ["(4 rows)"]]  # fmt: skip
    code, out, _ = await cli("telemetry", "query", text, "--limit", "2", "--json")
    assert code == 0
    answer = json.loads(out)
    assert (len(answer["rows"]), answer["truncated"]) == (2, True)
    code, out, _ = await cli("telemetry", "query", "SELECT NULL AS nothing, [1, 2] AS list")
    assert lines(out) == [["nothing", "list"], ["NULL", "[1,2]"], ["(1 row)"]]


async def test_metrics_and_logs_print_aligned_tables(cli: Cli) -> None:
    code, out, err = await cli("metrics", "--rack", "edge-1", "--name", "fluxrig.gear.messages",
                               "--since", "15m")  # fmt: skip
    assert code == 0, err
    header, row = lines(out)
    assert header == ["TIME", "RACK", "GEAR", "NAME", "KIND", "UNIT", "VALUE"]
    assert row[1:] == ["edge-1", "decode", "fluxrig.gear.messages", "sum", "{message}", "3"]
    assert out.splitlines()[0].index("RACK") == out.splitlines()[1].index("edge-1")  # aligned
    code, out, _ = await cli("metrics", "--gear", "decode", "--name", "fluxrig.gear.latency")
    assert lines(out)[1][-1] == "count=3 sum=130 min=3 max=120"
    code, out, _ = await cli("metrics", "--since", "2999-01-01T00:00:00Z")
    assert out == "no metric points match\n"
    code, out, _ = await cli("metrics", "--rack", "edge-2", "--json")
    assert sorted(p["name"] for p in json.loads(out)["points"]) == [
        "fluxrig.gear.errors", "fluxrig.gear.messages"]  # fmt: skip

    code, out, err = await cli("logs", "--min-severity", "error")
    assert code == 0, err
    header, row = lines(out)
    assert header == ["TIME", "SEVERITY", "RACK", "GEAR", "BODY"]
    assert row[1:] == ["ERROR", "edge-1", "decode", "field 39 missing"]
    code, out, _ = await cli("logs", "--rack", "edge-2", "--since", "1h")
    assert [r[1:] for r in lines(out)[1:]] == [["WARN", "edge-2", "pos-in", "slow peer"]]
    code, out, _ = await cli("logs", "--gear", "route", "--json")
    assert [r["body"] for r in json.loads(out)["logs"]] == ["routed to visa"]


async def test_trace_of_a_flux_id_is_a_tree(cli: Cli, fed: tuple[Mixer, Fed]) -> None:
    _, ids = fed
    code, out, err = await cli("trace", FLUX_A)
    assert code == 0, err
    text = out.splitlines()
    assert text[0].startswith(f"trace {ids.trace_a}: 4 spans, ")
    assert "rack edge-1" in text[0]
    rows = cut(out, "SPAN")
    assert rows[0] == ["SPAN", "GEAR", "RACK", "DURATION", "START", "FLUX ID", "STATUS"]
    assert [(r[0], r[1]) for r in rows[1:5]] == [
        ("pos-in", "pos-in"),
        ("├─ decode *", "decode"),  # * carries the fluxID asked for
        ("│  └─ route *", "route"),
        ("└─ audit", "audit"),
    ]
    assert rows[2][2:4] == ["edge-1", "5.000 ms"]
    assert rows[2][5:] == [FLUX_A, "unset"]
    assert text[-1] == f"* carries fluxID {FLUX_A}"

    code, out, _ = await cli("trace", ids.trace_b.upper())  # 32 hex digits: a trace id
    assert code == 0
    assert [r[0] for r in cut(out, "SPAN")[1:]] == ["pos-in", "└─ decode"]
    code, out, _ = await cli("trace", FLUX_A, "--json")
    answer = json.loads(out)
    assert answer["flux_id"] == FLUX_A
    assert [t["trace_id"] for t in answer["traces"]] == [ids.trace_a]
    assert [s["name"] for s in answer["traces"][0]["spans"]] == ["pos-in", "decode", "route",
                                                                 "audit"]  # fmt: skip


async def test_clear_errors(cli: Cli, fed: tuple[Mixer, Fed]) -> None:
    code, _, err = await cli("trace", "999")
    assert code == 1
    assert "no stored span carries fluxID '999'" in err
    code, _, err = await cli("trace", "ab" * 16)
    assert code == 1
    assert "not found: no span of trace" in err
    code, _, err = await cli("metrics", "--since", "yesterday")
    assert code == 1
    assert "since 'yesterday' is not a time" in err
    assert "query.since:" in err
    code, _, err = await cli("telemetry", "query", "DELETE FROM spans")
    assert code == 1
    assert "only read queries" in err
    code, _, err = await cli("logs", token=None)
    assert code == 1
    assert "needs an API token" in err
    code, _, err = await cli("logs", token="not-this-mixers-token")
    assert (code, "refused the API token" in err) == (1, True)
    code, out, _ = await cli("metrics", token=TOKEN)  # the admin token reads too
    assert code == 0
    assert "fluxrig.gear.messages" in out
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{free.getsockname()[1]}"
    code, _, err = await Cli(closed, cli.capsys)("metrics")
    assert code == 1
    assert "cannot reach the mixer API" in err
    with pytest.raises(SystemExit) as usage:
        main(["logs", "--min-severity", "loud"])
    assert usage.value.code == 2


async def test_disabled_telemetry_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Mixer(mixer_settings(tmp_path / "m", telemetry=False)) as mixer:
        assert mixer.api_url is not None
        code, _, err = await Cli(mixer.api_url, capsys)("telemetry", "query", "SELECT 1")
        assert code == 1
        assert "telemetry is not available" in err
        assert "[telemetry] enabled = false" in err


def test_the_tree_survives_orphans_and_cycles() -> None:
    spans = [
        {"span_id": "a", "parent_span_id": None, "name": "root"},
        {"span_id": "b", "parent_span_id": "gone", "name": "orphan"},  # its parent never came
        {"span_id": "c", "parent_span_id": "a", "name": "child"},
        {"span_id": "d", "parent_span_id": "e", "name": "loop-1"},
        {"span_id": "e", "parent_span_id": "d", "name": "loop-2"},
    ]
    assert [label for label, _ in tree(spans)] == [
        "root", "└─ child", "orphan", "loop-1", "└─ loop-2"]  # fmt: skip
