"""`fluxrig tail`: the CLI against a real Rack and nats-server — in process, as a subprocess
(Ctrl-C), and through a real mixer's hub with the Snake's permissions."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest

from rack.errors import FluxError
from rack.gear.registry import GearRegistry
from rack.preflight import preflight
from rack.runtime.rack import Rack
from rack.settings import RackSettings
from rack.tail_cli import add_parser, run_tail
from rack.tap.protocol import open_subject
from tests.mixer.fleet import clean_environment

GEARS = GearRegistry.discover()
RACK = "edge-t"
WIRE = "gen.out → sink.in"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_environment(monkeypatch, tmp_path)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fluxrig")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["tail", *argv])


async def tail(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run_tail(parse(*argv), out, err)
    return code, out.getvalue(), err.getvalue()


def flow(transport: str = "memory") -> Any:
    return preflight(
        {
            "name": "tailed",
            "gears": [
                {"name": "gen", "type": "generator", "config": {"rate": 1000}},
                {"name": "sink", "type": "sink"},
            ],
            "wires": [{"from": "gen.out", "to": "sink.in", "transport": transport}],
        },
        GEARS,
    )


@asynccontextmanager
async def running(settings: RackSettings, transport: str = "memory") -> AsyncIterator[Rack]:
    async with Rack(settings, name=RACK) as rack:
        await rack.apply(flow(transport))
        await rack.wait_ready(5)
        async with asyncio.timeout(10):
            await rack.taps.ready.wait()
        yield rack


async def until(check: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - polling state
            await asyncio.sleep(0.01)


async def test_tail_shows_the_messages_and_ends_on_its_limit(tmp_path: Path) -> None:
    state = tmp_path / "state"
    settings = RackSettings(state_dir=state, nats_port=0, grace_period=2)
    async with running(settings, transport="standard") as rack:  # the embedded server
        code, out, err = await tail(WIRE, "--rack", RACK, "--state-dir", str(state), "--limit", "5")
        assert code == 0, err
        lines = out.splitlines()
        assert len(lines) == 5
        for line in lines:
            _ts, wire, flux_id, preview = line.split("  ", 3)
            assert wire == WIRE
            assert flux_id.isdigit()
            assert preview.startswith("message ")
        assert f"tapping {WIRE} on rack '{RACK}'" in err
        assert "5 message(s) shown; 0 dropped by the rack" in err
        await until(lambda: not rack.taps.taps)


async def test_tail_json_with_a_filter(nats_server: Any) -> None:
    settings = RackSettings(nats_url=nats_server.url, grace_period=2)
    async with running(settings):
        code, out, err = await tail(
            "gen.out->sink.in", "--rack", RACK, "--nats-url", nats_server.url,
            "--json", "--filter", "raw.endsWith('3')", "--limit", "3",
        )  # fmt: skip
        assert code == 0, err
        records = [json.loads(line) for line in out.splitlines()]
        assert len(records) == 3
        assert all(r["type"] == "msg" and r["wire"] == WIRE for r in records)
        assert all(r["raw"].endswith("3") for r in records)


async def test_tail_says_what_is_wrong(tmp_path: Path, nats_server: Any) -> None:
    url = nats_server.url
    async with running(RackSettings(nats_url=url, grace_period=2)):
        with pytest.raises(FluxError, match=rf"refused the tap: no wire 'gen.out→x.in'.*{WIRE}"):
            await tail("gen.out→x.in", "--rack", RACK, "--nats-url", url)
        with pytest.raises(FluxError, match="refused the tap: filter does not compile"):
            await tail(WIRE, "--rack", RACK, "--nats-url", url, "--filter", "data.x >")
        with pytest.raises(FluxError, match=r"no answer from a rack named 'nobody'.*--rack"):
            await tail(WIRE, "--rack", "nobody", "--nats-url", url)
    with pytest.raises(FluxError, match="only memory wires has no NATS"):
        await tail(WIRE, "--rack", RACK, "--state-dir", str(tmp_path / "empty"))
    with pytest.raises(FluxError, match=r"cannot reach NATS at nats://127\.0\.0\.1:1 "):
        await tail(WIRE, "--nats-url", "nats://127.0.0.1:1")


async def test_ctrl_c_stops_the_tap_cleanly(nats_server: Any) -> None:
    async with running(RackSettings(nats_url=nats_server.url, grace_period=2)) as rack:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXRIG_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rack.tail_cli", "gen.out", "--rack", RACK,
            "--nats-url", nats_server.url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            cwd=Path(__file__).parent.parent,
        )  # fmt: skip
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            async with asyncio.timeout(20):
                lines = [await proc.stdout.readline() for _ in range(3)]
            assert all(b"gen.out  " in line and b"message " in line for line in lines), lines
            assert len(rack.taps.taps) == 1
            proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(10):
                _, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, err
        assert b"tap ended (stopped)" in err, err
        await until(lambda: not rack.taps.taps)


# -- through the mixer's hub ----------------------------------------------------------------------

HUBBED = """\
meta: {name: hubbed, version: 1.0.0}
racks: [{name: edge-a}]
gears:
  - {name: gen, type: generator, deploy: edge-a, config: {rate: 1000}}
  - {name: sink, type: sink, deploy: edge-a}
wires:
  - {from: gen.out, to: sink.in, transport: memory}
"""


async def test_tail_through_the_mixers_hub(tmp_path: Path) -> None:
    """A managed rack's taps live on its Snake's server; the hub lets the requests in and the
    replies and records out (`flux.ctrl.<rack>.>` / `flux.telemetry.<rack>.>`) — nothing else."""
    from mixer.app import Mixer
    from tests.mixer.fleet import managed, mixer_settings

    async with Mixer(mixer_settings(tmp_path / "m")) as mixer:
        mixer.store.put("scenario", "hubbed", "1.0.0", HUBBED.encode())
        await mixer.orchestrator.activate("hubbed:1.0.0")
        async with managed(mixer.rack_url, "edge-a", tmp_path, snake=True) as edge:
            await until(lambda: edge.running({"gen", "sink"}), 20)
            assert edge.link.via_snake
            await _hub_reaches_taps(mixer.nats_url, "edge-a")
            code, out, err = await tail(
                WIRE, "--rack", "edge-a", "--nats-url", mixer.nats_url, "--limit", "3"
            )
            assert code == 0, err
            assert len(out.splitlines()) == 3
            assert WIRE in out
            await until(lambda: not edge.rack.taps.taps)


async def _hub_reaches_taps(url: str, rack: str) -> None:
    """Wait until the hub knows the rack's tap subscription (leaf interest propagation). The
    answer comes on a `flux.telemetry.<rack>.…` subject: the hub would not let the rack answer
    on this client's `_INBOX`."""
    nc = await nats.connect(url)
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    async def got(msg: Any) -> None:
        answers.put_nowait(msg.data)

    reply = f"flux.telemetry.{rack}.tap.probe-{os.getpid()}"
    try:
        await nc.subscribe(reply, cb=got)
        async with asyncio.timeout(20):
            while True:
                await nc.publish(open_subject(rack), b"{}", reply=reply)  # a bad request
                try:
                    async with asyncio.timeout(0.5):
                        data = await answers.get()
                except TimeoutError:
                    continue
                if data:  # not the hub's empty "no responders" status
                    assert json.loads(data)["error"]["code"] == "bad_request"
                    break
        # Why the viewer names its reply subject: an answer on this client's `_INBOX` is not
        # something the hub lets the rack publish.
        with pytest.raises(nats.errors.TimeoutError):
            await nc.request(open_subject(rack), b"{}", timeout=0.5)
    finally:
        await nc.close()
