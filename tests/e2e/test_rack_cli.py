"""`fluxrig run` as a real process: real sockets, real signals, real files."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.rackproc import RackProcess

ECHO = """
meta: {{name: echo-test, version: 1.0.0}}
gears:
  - name: gw
    type: io_tcp
    config: {{mode: server, bind: "127.0.0.1:{port}", framing: delimiter{extra}}}
{more}
wires:
  - {{from: gw.out, to: gw.in, transport: memory}}
"""


def echo_yaml(port: int = 0, extra: str = "", more: str = "") -> str:
    return ECHO.format(port=port, extra=extra, more=more)


@pytest.fixture
async def echo_rack(tmp_path: Path) -> AsyncIterator[tuple[RackProcess, int]]:
    path = tmp_path / "echo.yaml"
    path.write_text(echo_yaml())
    rack = await RackProcess(path, "--no-watch").start()
    try:
        port = await rack.ready()
        yield rack, port
    finally:
        await rack.close()


async def _client(port: int, n: int, tag: str) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(f"{tag}-{i}\n".encode() for i in range(n)))
        await writer.drain()
        return [await reader.readline() for _ in range(n)]
    finally:
        writer.close()
        await writer.wait_closed()


async def test_echo_is_correct_under_50_concurrent_clients(
    echo_rack: tuple[RackProcess, int],
) -> None:
    _, port = echo_rack
    results = await asyncio.gather(*(_client(port, 200, f"c{c}") for c in range(50)))
    for c, replies in enumerate(results):
        assert replies == [f"c{c}-{i}\n".encode() for i in range(200)]


async def test_sigterm_drains_and_loses_no_accepted_message(tmp_path: Path) -> None:
    path = tmp_path / "echo.yaml"
    path.write_text(echo_yaml())
    rack = await RackProcess(path, "--no-watch", "--queue-depth", "100000").start()
    try:
        port = await rack.ready()
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        for i, (_, writer) in enumerate(conns):
            writer.write(b"".join(b"m%d-%d\n" % (i, j) for j in range(20_000)))
        first = await conns[0][0].readline()  # traffic is flowing: now stop the rack mid-stream
        rack.signal(signal.SIGTERM)
        received = 1
        for reader, writer in conns:
            while await reader.readline():
                received += 1
            writer.close()
        assert first == b"m0-0\n"
        assert await rack.wait() == 0
        accepted = await rack.wait_for(r"gear 'gw' final stats: .*\bout=(\d+)")
        assert received == int(accepted.group(1)) > 0  # every accepted frame was answered
        assert "draining" in rack.log()
    finally:
        await rack.close()


async def test_reload_keeps_an_unchanged_gear_connection_open(tmp_path: Path) -> None:
    path = tmp_path / "echo.yaml"
    path.write_text(echo_yaml(more="  - {name: aside, type: log, config: {level: debug}}"))
    rack = await RackProcess(path, "--no-watch").start()
    try:
        port = await rack.ready()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"before\n")
        assert await reader.readline() == b"before\n"

        mark = len(rack.lines)
        path.write_text(echo_yaml(more="  - {name: aside, type: log, config: {level: info}}"))
        rack.signal(signal.SIGHUP)
        applied = await rack.wait_for(r"scenario 'echo-test' applied \((.*)\)", start=mark)
        assert "restarted: aside" in applied.group(1)
        assert "unchanged: gw" in applied.group(1)
        writer.write(b"after\n")  # same TCP connection, still served
        assert await reader.readline() == b"after\n"

        mark = len(rack.lines)
        path.write_text("gears: [{name: gw, type: io_tcp, config: {mode: sideways}}]\nwires: 7\n")
        rack.signal(signal.SIGHUP)
        rejected = await rack.wait_for(r"new scenario rejected, keeping 'echo-test'", start=mark)
        assert rejected
        await rack.wait_for(r"gears\[0\]\.config\.mode", start=mark)
        writer.write(b"still\n")
        assert await reader.readline() == b"still\n"

        mark = len(rack.lines)
        path.write_text(echo_yaml(extra=", max_connections: 7"))
        rack.signal(signal.SIGHUP)
        applied = await rack.wait_for(r"scenario 'echo-test' applied \((.*)\)", start=mark)
        assert "restarted: gw" in applied.group(1)
        assert "stopped: aside" in applied.group(1)
        assert await reader.read() == b""  # a changed gear restarts: its connections close
        writer.close()
    finally:
        await rack.close()


async def test_file_change_triggers_reload(tmp_path: Path) -> None:
    path = tmp_path / "echo.yaml"
    path.write_text(echo_yaml())
    rack = await RackProcess(path, env={"FLUXRIG_WATCH_INTERVAL": "0.05"}).start()
    try:
        await rack.ready()
        mark = len(rack.lines)
        path.write_text(echo_yaml(more="  - {name: extra, type: sink}"))
        applied = await rack.wait_for(r"scenario 'echo-test' applied \((.*)\)", start=mark)
        assert "started: extra" in applied.group(1)
    finally:
        await rack.close()


async def test_port_in_use_fails_start_with_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        path = tmp_path / "echo.yaml"
        path.write_text(echo_yaml(port=taken.getsockname()[1]))
        rack = await RackProcess(path, "--no-watch", env={"FLUXRIG_START_TIMEOUT": "1"}).start()
        try:
            assert await rack.wait() == 1
            assert "gear 'gw' (io_tcp) did not start" in rack.log()
            assert "in use" in rack.log().lower()
        finally:
            await rack.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rack.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_scenario_validate_reports_every_problem_with_its_path(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(echo_yaml())
    ok = _cli("scenario", "validate", str(good))
    assert ok.returncode == 0, ok.stderr
    assert "scenario 'echo-test' is valid: 1 gears, 1 wires (1 memory, 0 standard)" in ok.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: broken\n"
        "gears:\n"
        "  - {name: gw, type: io_tcp, config: {mode: server, bind: ':9000', framng: x}}\n"
        "  - {name: gw, type: codec_json, config: {direction: decode}}\n"
        "  - {name: mystery, type: no_such_gear}\n"
        "wires:\n"
        "  - {from: gw.out, to: nowhere.in, transport: memory}\n"
        "  - {from: gw.nope, to: gw.in, transport: carrier-pigeon}\n"
    )
    res = _cli("scenario", "validate", str(bad))
    assert res.returncode == 1
    err = res.stderr
    assert "gears[0].config" in err
    assert "framng" in err
    assert "gears[1].name" in err
    assert "duplicate" in err.lower()
    assert "gears[2].type" in err
    assert "no_such_gear" in err
    assert "wires[0].to" in err
    assert "nowhere" in err
    assert "wires[1].transport" in err
    assert "(line " in err


def test_validate_accepts_the_seed_toml_form(tmp_path: Path) -> None:
    toml = tmp_path / "fluxrig.toml"
    toml.write_text(
        '[gears.ingress_gateway]\nspec = "io_tcp"\n'
        'config = { mode = "server", bind = "0.0.0.0:8000" }\n'
        '[gears.logic_processor]\nspec = "log"\n'
        '[bus.routes.ingress_gateway]\ntargets = ["logic_processor"]\ntransport = "memory"\n'
    )
    res = _cli("scenario", "validate", str(toml))
    assert res.returncode == 0, res.stderr
    assert "2 gears, 1 wires (1 memory" in res.stdout


def test_gears_catalogue_commands() -> None:
    listed = _cli("gears", "list")
    assert listed.returncode == 0
    for name in ("io_tcp", "generator", "sink", "log", "logic", "codec_json"):
        assert f"\n{name} " in listed.stdout
    doc = _cli("gears", "doc", "io_tcp")
    assert doc.returncode == 0
    assert "# `io_tcp`" in doc.stdout
    assert "max_frame_bytes" in doc.stdout
    unknown = _cli("gears", "doc", "nope")
    assert unknown.returncode == 1
    assert "unknown gear type 'nope'; known:" in unknown.stderr


def test_missing_scenario_file_is_a_clear_error(tmp_path: Path) -> None:
    res = _cli("run", str(tmp_path / "absent.yaml"))
    assert res.returncode == 1
    assert "absent.yaml" in res.stderr
    assert "Traceback" not in res.stderr


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_shipped_examples_are_valid(example: str) -> None:
    res = _cli("scenario", "validate", str(EXAMPLES / example))
    assert res.returncode == 0, res.stderr


async def test_json_example_maps_fields_and_rejects_bad_input(tmp_path: Path) -> None:
    text = (EXAMPLES / "json_enrich.yaml").read_text().replace("127.0.0.1:9001", "127.0.0.1:0")
    path = tmp_path / "json.yaml"
    path.write_text(text)
    rack = await RackProcess(path, "--no-watch").start()
    try:
        port = await rack.ready()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b'{"amount": 1200, "qty": 2}\n{"amount": 3, "qty": 2}\nnot json\n')
        replies = {await reader.readline() for _ in range(3)}
        writer.close()
        assert replies == {
            b'{"amount":1200,"qty":2,"total":2400,"status":"review","peer":"127.0.0.1"}\n',
            b'{"amount":3,"qty":2,"total":6,"status":"ok","peer":"127.0.0.1"}\n',
            b'{"error":"GearError: invalid JSON: Expecting value at char 0"}\n',
        }
    finally:
        await rack.close()


async def test_run_the_seed_toml_form_with_its_rack_settings(tmp_path: Path) -> None:
    toml = tmp_path / "fluxrig.toml"
    toml.write_text(
        '[rack]\nname = "edge-7"\nlog_level = "DEBUG"\n'
        '[gears.gw]\nspec = "io_tcp"\nconfig = { mode = "server", bind = "127.0.0.1:0" }\n'
        '[bus.routes.gw]\ntargets = ["gw.in"]\ntransport = "memory"\n'
    )
    rack = await RackProcess(toml, "--no-watch").start()
    try:
        port = await rack.ready()
        assert "rack 'edge-7' ready" in rack.log()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"toml\n")
        assert await reader.readline() == b"toml\n"
        writer.close()
        assert " DEBUG " in rack.log()
    finally:
        await rack.close()


async def test_out_of_file_descriptors_backs_off_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "echo.yaml"
    # Peers that closed look half-closed (a FIN is a FIN): their sockets are kept for replies
    # until idle_timeout, so a short one frees the descriptors quickly after the flood.
    path.write_text(echo_yaml(extra=", idle_timeout: 1"))
    rack = await RackProcess(path, "--no-watch", max_fds=64).start()
    clients: list[socket.socket] = []
    try:
        port = await rack.ready()
        for _ in range(120):  # more connections than the rack has descriptors left
            c = socket.create_connection(("127.0.0.1", port))
            clients.append(c)
        failed = await rack.wait_for(r"accept failed: .*Too many open files.*retrying in")
        assert failed
        for c in clients:
            c.close()
        clients.clear()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"after\n")
        async with asyncio.timeout(15):
            assert await reader.readline() == b"after\n"  # recovered: accepts and serves again
        writer.close()
        assert rack.proc is not None
        assert rack.proc.returncode is None
    finally:
        for c in clients:
            c.close()
        await rack.close()
