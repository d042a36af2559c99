"""Standard (JetStream) wire: the rack's `generator → standard wire → sink` against bare nats-py.

    python bench/standard_wire.py [--messages 20000] [--latency-messages 4000] [--rate 2000]
                                  [--size 120] [--rounds 3] [--profile]

One process (uvloop), one real nats-server started here (port 0, temp JetStream store).
  * baseline — bare nats-py: a file stream (interest retention, like the rack's), pipelined
    `js.publish_async` with a `Nats-Msg-Id` header (window 1024, like an outlet) and a durable
    push consumer (`js.subscribe(durable=..., manual_ack=True, cb=...)`, max_ack_pending 1024)
    acking every message; payload as long as the rack's CBOR fluxMsg.
  * rack — an in-process `Rack` (nats_url = that server, queue_depth 1024) running
    `generator → standard wire → bench_sink`; the sink (defined here) takes
    latency = time.time_ns() - msg.path[0].ts (the generator's emit hop).
Throughput: N messages as fast as back-pressure allows, first publish (emit) to N-th receipt.
Each round runs baseline then rack; the table shows medians over the rounds.
Latency: paced publishing (generator's schedule) with the send time in the message;
receipt - send, p50/p99 (the first 5% of samples are warm-up and left out).
Targets (issue): rack throughput ≥ 80% of baseline; rack p50 ≤ 1.5× baseline p50.
`--profile` adds an uncounted rack throughput round under cProfile and prints its top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.metadata
import logging
import os
import pstats
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import uvloop
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from rack.gear import Gear, GearConfig, GearRegistry, Output
from rack.model.fluxmsg import FluxMsg
from rack.model.ids import FluxIdGenerator
from rack.natsd import NatsServer, NatsServerConfig
from rack.preflight import preflight
from rack.runtime.rack import Rack
from rack.settings import RackSettings

NATS_PY = importlib.metadata.version("nats-py")
WINDOW = 1024  # outlet window / consumer max_ack_pending in the rack: the baseline uses the same
TIMEOUT = 60.0
WARMUP = 0.05


# -- the bench sink gear ---------------------------------------------------------------------


@dataclass
class Probe:
    expect: int
    latencies: list[int] = field(default_factory=list)  # ns
    first_sent: int = 0  # time_ns of the first message's send / emit
    last_recv: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, sent: int, now: int) -> None:
        if not self.latencies:
            self.first_sent = sent
        self.latencies.append(now - sent)
        self.last_recv = now
        if len(self.latencies) == self.expect:
            self.done.set()

    def rate(self) -> float:
        return self.expect / ((self.last_recv - self.first_sent) / 1e9)

    def quantiles(self) -> tuple[float, float]:
        samples = self.latencies[int(len(self.latencies) * WARMUP) :]
        q = statistics.quantiles([s / 1000 for s in samples], n=100)
        return q[49], q[98]


PROBES: dict[str, Probe] = {}


class BenchSinkConfig(GearConfig):
    probe: str


class BenchSink(Gear[BenchSinkConfig]):
    type_name = "bench_sink"
    summary = "Records arrival time minus the first hop's emit time (benchmark only)."
    config_model = BenchSinkConfig
    outputs = ()

    async def process(self, msg: FluxMsg, port: str) -> Output:
        PROBES[self.config.probe].record(msg.path[0].ts, time.time_ns())
        return None


def scenario(name: str, probe: str, rate: float, count: int, size: int) -> dict[str, Any]:
    return {
        "name": name,
        "gears": [
            {"name": "gen", "type": "generator",
             "config": {"rate": rate, "count": count, "size": size}},
            {"name": "sink", "type": "bench_sink", "config": {"probe": probe}},
        ],
        "wires": [{"from": "gen.out", "to": "sink.in", "transport": "standard"}],
    }  # fmt: skip


def fluxmsg_size(size: int) -> int:
    """Length of the CBOR fluxMsg the generator publishes with `size` bytes of filler."""
    msg = FluxMsg(FluxIdGenerator(0).next_id(), raw=b"x" * size, src_id="gen")
    msg.add_hop("gen", "out")
    return len(msg.encode())


# -- rack ------------------------------------------------------------------------------------


async def run_rack(
    url: str, registry: GearRegistry, doc: dict[str, Any], probe: Probe, profile: bool
) -> Probe:
    PROBES[doc["gears"][1]["config"]["probe"]] = probe
    settings = RackSettings(nats_url=url, queue_depth=1024, name="bench")
    profiler = cProfile.Profile() if profile else None
    async with Rack(settings) as rack:
        await rack.apply(preflight(doc, registry))
        if profiler is not None:
            profiler.enable()
        await rack.wait_ready(timeout=10)
        await asyncio.wait_for(probe.done.wait(), TIMEOUT)
        if profiler is not None:
            profiler.disable()
        await rack.drain(grace=5)
    if profiler is not None:
        print("\ncProfile of the rack throughput phase (top 30 by tottime):")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return probe


# -- baseline --------------------------------------------------------------------------------


async def run_baseline(url: str, name: str, n: int, rate: float, length: int) -> Probe:
    """Bare nats-py: publish `n` messages (paced at `rate`, 0 = flat out), consume, ack."""
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=WINDOW)
    subject = f"bench.{name}"
    await js.add_stream(
        StreamConfig(
            name=f"BENCH_{name.upper()}",
            subjects=[subject],
            retention=RetentionPolicy.INTEREST,
            storage=StorageType.FILE,
            discard=DiscardPolicy.NEW,
            duplicate_window=120,
        )
    )
    probe = Probe(n)

    async def on_msg(msg: Msg) -> None:
        probe.record(int.from_bytes(msg.data[:8], "little"), time.time_ns())
        await msg.ack()

    sub = await js.subscribe(
        subject,
        durable=f"bench-{name}",
        manual_ack=True,
        cb=on_msg,
        config=ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT, max_ack_pending=WINDOW, ack_wait=30, max_deliver=-1
        ),
    )
    filler = b"x" * (length - 8)
    loop = asyncio.get_running_loop()
    start, i = loop.time(), 0
    while i < n:  # the generator's pacing: sleep until due, then send what is overdue
        batch = 1000
        if rate:
            elapsed = loop.time() - start
            due = int(elapsed * rate) + 1 - i
            if due <= 0:
                await asyncio.sleep(max(i / rate - elapsed, 0.001))
                continue
            batch = due
        for _ in range(min(batch, n - i)):
            ts = time.time_ns()
            await js.publish_async(
                subject, ts.to_bytes(8, "little") + filler, headers={"Nats-Msg-Id": f"{i}-{ts}"}
            )
            i += 1
        await asyncio.sleep(0)
    await asyncio.wait_for(probe.done.wait(), TIMEOUT)
    await js.publish_async_completed()
    await sub.unsubscribe()
    await nc.drain()
    return probe


# -- orchestration ---------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    registry = GearRegistry.discover()
    registry.register(BenchSink)
    length = fluxmsg_size(args.size)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fluxrig-bench-") as tmp:
        config = NatsServerConfig(port=0, store_dir=Path(tmp) / "nats")
        async with NatsServer(config) as server:
            runs: dict[str, list[Probe]] = {"bt": [], "bl": [], "rt": [], "rl": []}
            for r in range(args.rounds):
                runs["bt"].append(
                    await run_baseline(server.url, f"tput{r}", args.messages, 0, length)
                )
                runs["rt"].append(
                    await run_rack(
                        server.url,
                        registry,
                        scenario(f"bench-tput-{r}", f"tput{r}", 0, args.messages, args.size),
                        Probe(args.messages),
                        False,
                    )
                )
                runs["bl"].append(
                    await run_baseline(
                        server.url, f"lat{r}", args.latency_messages, args.rate, length
                    )
                )
                runs["rl"].append(
                    await run_rack(
                        server.url,
                        registry,
                        scenario(
                            f"bench-lat-{r}", f"lat{r}", args.rate, args.latency_messages, args.size
                        ),
                        Probe(args.latency_messages),
                        False,
                    )
                )
            if args.profile:  # an extra round, not counted: cProfile slows the rack down a lot
                await run_rack(
                    server.url,
                    registry,
                    scenario("bench-profile", "profile", 0, args.messages, args.size),
                    Probe(args.messages),
                    True,
                )
    for label, tput, lat in (("baseline", "bt", "bl"), ("rack", "rt", "rl")):
        quantiles = [p.quantiles() for p in runs[lat]]
        results[label] = {
            "rate": statistics.median(p.rate() for p in runs[tput]),
            "p50": statistics.median(q[0] for q in quantiles),
            "p99": statistics.median(q[1] for q in quantiles),
            "rates": [p.rate() for p in runs[tput]],
        }
    results["_"] = {"length": length}
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--latency-messages", type=int, default=4_000)
    ap.add_argument("--rate", type=float, default=2_000)
    ap.add_argument("--size", type=int, default=120, help="generator filler bytes")
    ap.add_argument("--rounds", type=int, default=3, help="medians over this many rounds")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    t0 = time.perf_counter()
    results = uvloop.run(bench(args))
    base, rack = results["baseline"], results["rack"]
    print(
        f"Standard wire (JetStream), {int(results['_']['length'])}-byte fluxMsg, "
        f"cpus={os.cpu_count()}, uvloop {uvloop.__version__}, nats-py {NATS_PY}; "
        f"throughput N={args.messages}, latency {args.latency_messages} msgs at "
        f"{args.rate:g} msg/s; medians of {args.rounds} rounds"
    )
    print(f"{'':28}{'baseline':>12}{'rack':>12}{'ratio':>10}")
    print(
        f"{'throughput (msg/s)':28}{base['rate']:12,.0f}{rack['rate']:12,.0f}"
        f"{rack['rate'] / base['rate']:9.2f}x"
    )
    for key, label in (("p50", "latency p50 (µs)"), ("p99", "latency p99 (µs)")):
        print(f"{label:28}{base[key]:12.1f}{rack[key]:12.1f}{rack[key] / base[key]:9.2f}x")
    for label, res in (("baseline", base), ("rack", rack)):
        print(f"  {label} throughput per round: " + ", ".join(f"{r:,.0f}" for r in res["rates"]))
    tput_ok = rack["rate"] >= 0.8 * base["rate"]
    p50_ok = rack["p50"] <= 1.5 * base["p50"]
    print(f"target rack throughput ≥ 80% of baseline: {'met' if tput_ok else 'NOT met'}; "
          f"rack p50 ≤ 1.5× baseline: {'met' if p50_ok else 'NOT met'}  "
          f"(run took {time.perf_counter() - t0:.1f}s)")  # fmt: skip


if __name__ == "__main__":
    main()
