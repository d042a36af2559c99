"""`fluxrig tail` through the mixer's REST API: the real CLI (a subprocess, and in process for
its refusals) against a real Mixer and a managed rack behind its Snake."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from rack.cli import main
from rack.errors import FluxError
from rack.tail_cli import through_api
from tests.mixer.documents import TOKEN
from tests.mixer.fleet import clean_environment, until
from tests.mixer.tapping import RACK, READ, WIRE, Fleet, fleet

ROOT = Path(__file__).parent.parent.parent


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_environment(monkeypatch, tmp_path)


async def fluxrig(f: Fleet, *argv: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXRIG_")}
    env |= {"FLUXRIG_API_URL": f.url, "FLUXRIG_API_TOKEN": TOKEN}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rack.cli", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip


async def test_tail_through_the_api_shows_the_wire_until_its_limit(tmp_path: Path) -> None:
    async with fleet(tmp_path) as f:
        proc = await fluxrig(f, "tail", WIRE, "--rack", RACK, "--limit", "3")
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
        assert proc.returncode == 0, err
        lines = out.decode().splitlines()
        assert len(lines) == 3
        for line in lines:
            _ts, wire, flux_id, preview = line.split("  ", 3)
            assert (wire, flux_id.isdigit(), preview.startswith("message ")) == (WIRE, True, True)
        text = err.decode()
        assert f"tapping {WIRE} on rack '{RACK}' through the mixer" in text
        assert "tap ended (limit reached): 3 message(s) shown; 0 dropped by the rack" in text
        await until(lambda: not f.taps)


async def test_tail_json_with_a_filter_and_ctrl_c(tmp_path: Path) -> None:
    async with fleet(tmp_path) as f:
        proc = await fluxrig(
            f, "tail", "gen.out", "--rack", RACK, "--json", "--filter", "raw.endsWith('1')"
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(30):
                records = [json.loads(await proc.stdout.readline()) for _ in range(3)]
            assert all(r["type"] == "msg" and r["raw"].endswith("1") for r in records), records
            assert len(f.taps) == 1
            proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(10):
                _, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, err
        assert b"tap ended (stopped)" in err, err
        await until(lambda: not f.taps)  # the stream closed, the mixer stopped the tap


async def test_tail_through_the_api_says_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with fleet(tmp_path) as f:

        async def refused(*argv: str) -> str:
            base = ["tail", "--api-url", f.url, "--api-token", TOKEN]
            code = await asyncio.to_thread(main, [*base, *argv])
            assert code == 1
            err = capsys.readouterr().err
            assert err.startswith("fluxrig: "), err
            assert "\n  - query" not in err  # the message names it: no details that repeat it
            return err

        err = await refused("gen.out→x.in", "--rack", RACK)
        assert err.count("\n") == 1, err  # one line
        assert f"fluxrig: rack '{RACK}' refused the tap: no wire 'gen.out→x.in'" in err
        assert f"known: {WIRE}" in err
        err = await refused(WIRE, "--rack", RACK, "--filter", "data.x >")
        assert "refused the tap: filter does not compile" in err
        assert "no rack named 'nobody'" in await refused(WIRE, "--rack", "nobody")
        assert "give --rack NAME" in await refused(WIRE)
        err = await refused(WIRE, "--rack", RACK, "--api-token", READ)
        assert "is for the admin token only" in err
        assert not f.taps


def test_which_way_to_the_rack(monkeypatch: pytest.MonkeyPatch) -> None:
    def args(**given: str) -> argparse.Namespace:
        none = dict.fromkeys(("api_url", "api_token", "api_ca", "nats_url", "state_dir"))
        return argparse.Namespace(**(none | given))

    assert not through_api(args())
    assert through_api(args(api_url="http://mixer:8090"))
    assert through_api(args(api_token="t" * 20))  # the API at its default URL
    with pytest.raises(FluxError, match="give one or the other"):
        through_api(args(api_token="t" * 20, nats_url="nats://127.0.0.1:4222"))
    monkeypatch.setenv("FLUXRIG_API_URL", "http://mixer:8090")
    assert through_api(args())
    assert not through_api(args(nats_url="nats://127.0.0.1:4222"))  # an explicit flag wins
    assert not through_api(args(state_dir="st"))
