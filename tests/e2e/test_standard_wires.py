"""Standard (JetStream) wires through `fluxrig run`: real nats-server, real kill -9, real CLI."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import nats

from rack.model.fluxmsg import FluxMsg
from rack.model.ids import FluxIdGenerator
from rack.natsd import NatsServer, NatsServerConfig
from tests.e2e.rackproc import RackProcess

INGEST = """
name: ingest
gears:
  - {{name: ingress, type: io_tcp, config: {{mode: server, bind: "127.0.0.1:0"}}}}
  - {{name: check, type: logic, config: {{map: {{data.ratio: "data.amount / data.parts"}}}}}}
  - {{name: record, type: sink, config: {{path: "{path}"}}}}
wires:
  - {{from: ingress.out, to: check.in, max_deliver: 2, backoff: [0.05], ack_wait: 2}}
  - {{from: check.out, to: record.in, transport: memory}}
"""


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def wait_lines(path: Path, count: int, timeout: float = 30.0) -> list[str]:
    async with asyncio.timeout(timeout):
        while len(set(lines(path))) < count:  # noqa: ASYNC110 - the file is written by another process
            await asyncio.sleep(0.02)
    return lines(path)


async def publish(url: str, msgs: list[FluxMsg]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        futures = [
            await js.publish_async(
                "flux.msg.ingest.ingress.out", m.encode(), headers={"Nats-Msg-Id": str(m.id)}
            )
            for m in msgs
        ]
        await asyncio.gather(*futures)
    finally:
        await nc.close()


IDS = FluxIdGenerator(machine_id=9)  # one generator: ids are unique across calls


def make_msgs(n: int, *, parts: int = 1) -> list[FluxMsg]:
    return [FluxMsg(IDS.next_id(), data={"amount": i, "parts": parts}) for i in range(n)]


async def test_kill_9_mid_stream_loses_nothing(tmp_path: Path, nats_server: NatsServer) -> None:
    record = tmp_path / "processed.txt"
    scenario = tmp_path / "ingest.yaml"
    scenario.write_text(INGEST.format(path=record))
    args = ("--no-watch", "--nats-url", nats_server.url)
    rack = await RackProcess(scenario, *args).start()
    try:
        await rack.ready()  # the stream exists now
        msgs = make_msgs(10_000)
        # Kill while the stream is still being fed (a fast rack would otherwise finish a
        # pre-published batch before the kill); JetStream keeps what the publisher stores.
        feeding = asyncio.create_task(publish(nats_server.url, msgs))
        await wait_lines(record, 1_000)
        rack.signal(signal.SIGKILL)
        assert await rack.wait() == -signal.SIGKILL
        await feeding
        before = len(set(lines(record)))
        assert before < 10_000, "the rack finished before it could be killed mid-stream"

        rack = await RackProcess(scenario, *args).start()
        await rack.ready()
        done = await wait_lines(record, 10_000)
        assert set(done) == {str(m.id) for m in msgs}  # every message processed at least once
    finally:
        await rack.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rack.cli", *args], capture_output=True, text=True, timeout=60
    )


async def test_poison_message_is_dead_lettered_then_replayed(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    record = tmp_path / "processed.txt"
    scenario = tmp_path / "ingest.yaml"
    scenario.write_text(INGEST.format(path=record))
    rack = await RackProcess(scenario, "--no-watch", "--nats-url", nats_server.url).start()
    try:
        await rack.ready()
        good, poison = make_msgs(3), make_msgs(1, parts=0)  # amount / 0 fails in `check`
        await publish(nats_server.url, [*good[:2], *poison, good[2]])
        await wait_lines(record, 3)
        await rack.wait_for(r"dead-letter", timeout=15)

        listed = _cli("dlq", "list", "ingest", "--nats-url", nats_server.url)
        assert listed.returncode == 0, listed.stderr
        assert "ingress.out → check.in" in listed.stdout
        assert "division by zero" in listed.stdout.lower()
        row = next(line for line in listed.stdout.splitlines() if "check.in" in line)
        seq, tries = row.split()[0], row.split()[3]
        assert tries == "2"  # max_deliver

        fixed = INGEST.format(path=record).replace("data.amount / data.parts", "data.amount")
        scenario.write_text(fixed)
        mark = len(rack.lines)
        rack.signal(signal.SIGHUP)
        await rack.wait_for(r"scenario 'ingest' applied", start=mark)

        replayed = _cli("dlq", "replay", str(scenario), "--seq", seq, "--nats-url", nats_server.url)
        assert replayed.returncode == 0, replayed.stderr
        assert "replayed 1 message" in replayed.stdout
        done = await wait_lines(record, 4)
        assert str(poison[0].id) in done
        empty = _cli("dlq", "list", "ingest", "--nats-url", nats_server.url)
        assert "is empty" in empty.stdout
    finally:
        await rack.close()


GENERATE = """
name: gen
gears:
  - {{name: gen, type: generator, config: {{count: 50, rate: 0}}}}
  - {{name: record, type: sink, config: {{path: "{path}"}}}}
wires:
  - {{from: gen.out, to: record.in}}
"""


async def test_embedded_server_restart_keeps_the_stream(tmp_path: Path) -> None:
    record = tmp_path / "processed.txt"
    scenario = tmp_path / "gen.yaml"
    scenario.write_text(GENERATE.format(path=record))
    env = {"FLUXRIG_STATE_DIR": str(tmp_path / "state"), "FLUXRIG_NATS_PORT": "0"}
    for run in (1, 2):
        rack = await RackProcess(scenario, "--no-watch", env=env).start()
        try:
            await rack.wait_for(r"rack '.*' ready")
            await wait_lines(record, 50 * run)
            rack.signal(signal.SIGTERM)
            assert await rack.wait() == 0
            assert "embedded nats-server ready on nats://127.0.0.1:" in rack.log()
        finally:
            await rack.close()
    done = lines(record)
    assert len(done) == len(set(done)) == 100  # acked messages are not redelivered after restart

    store = NatsServerConfig(
        port=0,
        store_dir=tmp_path / "state" / "jetstream",
        server_name="standalone",
        domain="standalone",
    )
    async with NatsServer(store) as server:
        nc = await nats.connect(server.url)
        try:
            info = await nc.jetstream().stream_info("FLUX_GEN")
            # The stream and its durable consumer survived both restarts of the embedded server:
            # sequences continued (1..50, then 51..100); with interest retention every acked
            # message is removed, so none is left unprocessed.
            assert info.state.last_seq == 100
            assert info.state.consumer_count == 1
            assert info.state.messages == 0
        finally:
            await nc.close()


async def test_clear_error_when_nats_server_cannot_start(tmp_path: Path) -> None:
    scenario = tmp_path / "gen.yaml"
    scenario.write_text(GENERATE.format(path=tmp_path / "x.txt"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"FLUXRIG_STATE_DIR": str(tmp_path / "s1"), "FLUXRIG_NATS_PORT": str(port)}
        rack = await RackProcess(scenario, "--no-watch", env=env).start()
        assert await rack.wait() == 1
        assert "address already in use" in rack.log()
        assert "Traceback" not in rack.log()

    (tmp_path / "plain-file").write_text("")
    env = {"FLUXRIG_STATE_DIR": str(tmp_path / "plain-file" / "state"), "FLUXRIG_NATS_PORT": "0"}
    rack = await RackProcess(scenario, "--no-watch", env=env).start()
    assert await rack.wait() == 1
    assert "store" in rack.log()
    assert "Traceback" not in rack.log()
