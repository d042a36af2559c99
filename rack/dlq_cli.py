"""`fluxrig dlq list|replay|purge`: inspect and act on a scenario's dead-letter stream."""

from __future__ import annotations

import argparse
from pathlib import Path

from rack.errors import FluxError, ScenarioError
from rack.runtime.standard import resolve_nats_url
from rack.settings import RackSettings
from rack.wires.jetstream import JetStreamLink


def nats_url(args: argparse.Namespace) -> str:
    """--nats-url, else FLUXRIG_NATS_URL, else the URL a rack recorded in its state dir."""
    return resolve_nats_url(args.nats_url, Path(args.state_dir or RackSettings().state_dir))


def scenario_name(text: str) -> str:
    """A scenario name, or a scenario file (its name is read from it)."""
    path = Path(text)
    if not path.is_file():
        return text
    from rack.gear.registry import GearRegistry
    from rack.preflight import preflight_file

    try:
        return preflight_file(path, GearRegistry.discover()).name
    except ScenarioError as exc:
        raise FluxError(f"cannot read the scenario name from {path}: {exc.summary}") from exc


async def run_dlq(args: argparse.Namespace) -> int:
    link = await JetStreamLink.connect(
        nats_url(args), rack="cli", scenario=scenario_name(args.scenario), connect_timeout=5
    )
    async with link:
        if args.action == "list":
            letters = await link.dlq_list(limit=args.limit)
            if not letters:
                print(f"dead-letter stream of '{link.scenario}' is empty")
                return 0
            print(f"{'SEQ':>6}  {'TIME (UTC)':19}  {'TRIES':>5}  {'WIRE':30}  REASON")
            for d in letters:
                when = d.time.strftime("%Y-%m-%d %H:%M:%S")
                print(f"{d.seq:>6}  {when:19}  {d.deliveries:>5}  {d.wire:30}  {d.reason}")
            return 0
        if args.action == "replay":
            if args.seq is None and not args.all:
                raise FluxError("name a message (--seq N, from `fluxrig dlq list`) or pass --all")
            count = await link.dlq_replay(args.seq)
            print(f"replayed {count} message(s) to their original wires")
            return 0 if count or args.all else 1
        count = await link.dlq_purge()
        print(f"purged {count} message(s) from the dead-letter stream of '{link.scenario}'")
        return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = sub.add_parser("dlq", help="dead-lettered messages of standard wires")
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("list", "list dead-lettered messages with their reason, wire and delivery count"),
        ("replay", "send dead-lettered messages back to their original wire"),
        ("purge", "delete every dead-lettered message"),
    ):
        p = actions.add_parser(name, help=text)
        p.add_argument("scenario", help="scenario name, or the scenario file")
        p.add_argument("--nats-url", help="NATS of the rack (default: <state-dir>/nats.url)")
        p.add_argument("--state-dir", type=Path, help="the rack's state dir")
        if name == "list":
            p.add_argument("--limit", type=int, default=100)
        if name == "replay":
            p.add_argument("--seq", type=int, help="the DLQ sequence number to replay")
            p.add_argument("--all", action="store_true", help="replay every message")
