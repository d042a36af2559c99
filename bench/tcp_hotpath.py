"""TCP hot path: the rack's echo scenario against bare echo servers measured in the same run.

    python bench/tcp_hotpath.py [--messages 20000] [--pipelined 400000] [--size 100]

Each server runs in its own process (uvloop); one client process measures:
  * sequential round trip: one connection, send one 100-byte frame, wait for its echo; p50/p99
  * pipelined throughput: 4 connections streaming frames, replies counted; messages/s
Servers: `bare`  — uvloop asyncio.Protocol echo (writes back whatever it reads: the floor);
         `readline` — naive asyncio streams echo (`await reader.readline()` per line);
         `rack`  — `fluxrig run` on examples-style echo scenario (io_tcp gw.out → gw.in).
Targets (issue 2): rack p50 ≤ 1.5× bare p50; rack pipelined ≥ readline pipelined.
The rack runs as configured by the environment (FLUXRIG_*, OTEL_*); bench/telemetry_overhead.py
compares it with telemetry off and on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

ECHO_SCENARIO = """
meta: {name: bench-echo}
gears:
  - name: gw
    type: io_tcp
    config: {mode: server, bind: "127.0.0.1:0", framing: delimiter, max_frame_bytes: 65536}
wires:
  - {from: gw.out, to: gw.in, transport: memory}
"""


# -- baseline servers (run in a child process) -----------------------------------------------


class _BareEcho(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def _readline_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        writer.write(line)
        await writer.drain()
    writer.close()


async def _serve(kind: str) -> None:
    loop = asyncio.get_running_loop()
    if kind == "bare":
        server = await loop.create_server(_BareEcho, "127.0.0.1", 0)
    else:
        server = await asyncio.start_server(_readline_echo, "127.0.0.1", 0)
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


# -- client ----------------------------------------------------------------------------------


class _Counter(asyncio.Protocol):
    def __init__(self, expect: int, done: asyncio.Future[None]) -> None:
        self.expect, self.done, self.count = expect, done, 0

    def data_received(self, data: bytes) -> None:
        self.count += data.count(b"\n")
        if self.count >= self.expect and not self.done.done():
            self.done.set_result(None)


async def round_trips(port: int, n: int, size: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    frame = b"x" * (size - 1) + b"\n"
    samples = []
    for _ in range(200):  # warm up
        writer.write(frame)
        await reader.readline()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        writer.write(frame)
        await reader.readline()
        samples.append((time.perf_counter_ns() - t0) / 1000)
    writer.close()
    await writer.wait_closed()
    return samples


async def pipelined(port: int, total: int, size: int, conns: int = 4) -> float:
    loop = asyncio.get_running_loop()
    per = total // conns
    frame = b"x" * (size - 1) + b"\n"
    chunk = frame * 500
    done = [loop.create_future() for _ in range(conns)]
    transports = []
    for fut in done:
        transport, _ = await loop.create_connection(
            lambda f=fut: _Counter(per, f), "127.0.0.1", port
        )
        transports.append(transport)
    t0 = time.perf_counter()
    for _ in range(per // 500):
        for transport in transports:
            transport.write(chunk)
        await asyncio.sleep(0)
        while any(t.get_write_buffer_size() > 4 << 20 for t in transports):  # noqa: ASYNC110 - the client's own flow control, not synchronisation
            await asyncio.sleep(0.0005)
    await asyncio.wait_for(asyncio.gather(*done), timeout=120)
    elapsed = time.perf_counter() - t0
    for transport in transports:
        transport.close()
    return per * conns / elapsed


# -- orchestration ---------------------------------------------------------------------------


def start(cmd: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "listening on" in line:
            port = int(line.rsplit(":", 1)[1].split()[0])
            if "fluxrig" not in " ".join(cmd):
                return proc, port
        if "ready" in line and "rack" in line:
            return proc, port
    raise RuntimeError(f"server {cmd} exited: {proc.wait()}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--pipelined", type=int, default=400_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--serve", choices=["bare", "readline"])
    args = ap.parse_args()
    if args.serve:
        uvloop.run(_serve(args.serve))
        return

    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "echo.yaml"
        scenario.write_text(ECHO_SCENARIO)
        servers = {
            "bare": [sys.executable, __file__, "--serve", "bare"],
            "readline": [sys.executable, __file__, "--serve", "readline"],
            "rack": [sys.executable, "-m", "rack.cli", "run", str(scenario), "--no-watch",
                     "--log-level", "INFO"],
        }  # fmt: skip
        results: dict[str, dict[str, float]] = {}
        for name, cmd in servers.items():
            proc, port = start(cmd)
            try:
                samples = uvloop.run(round_trips(port, args.messages, args.size))
                q = statistics.quantiles(samples, n=100)
                rate = uvloop.run(pipelined(port, args.pipelined, args.size))
                results[name] = {"p50": q[49], "p99": q[98], "rate": rate}
            finally:
                proc.terminate()
                proc.wait()
    bare, readline, rack = results["bare"], results["readline"], results["rack"]
    print(
        f"TCP hot path, {args.size}-byte frames, cpus={os.cpu_count()}, uvloop {uvloop.__version__}"
    )
    print(f"{'':28}{'bare':>12}{'readline':>12}{'rack':>12}{'rack/bare':>11}{'rack/readl':>11}")
    for key, label, unit in (("p50", "round trip p50", "µs"), ("p99", "round trip p99", "µs")):
        print(
            f"{label + ' (' + unit + ')':28}{bare[key]:12.1f}{readline[key]:12.1f}{rack[key]:12.1f}"
            f"{rack[key] / bare[key]:10.2f}x{rack[key] / readline[key]:10.2f}x"
        )
    print(
        f"{'pipelined 4 conns (msg/s)':28}{bare['rate']:12,.0f}{readline['rate']:12,.0f}"
        f"{rack['rate']:12,.0f}{rack['rate'] / bare['rate']:10.2f}x"
        f"{rack['rate'] / readline['rate']:10.2f}x"
    )
    p50_ok = rack["p50"] <= 1.5 * bare["p50"]
    tput_ok = rack["rate"] >= readline["rate"]
    print(f"target p50 ≤ 1.5× bare: {'met' if p50_ok else 'NOT met'}; "
          f"throughput ≥ readline: {'met' if tput_ok else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
