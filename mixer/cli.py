"""`fluxrig-mixer`: start the control plane and run it until SIGTERM/SIGINT.

    fluxrig-mixer [-c fluxrig-mixer.toml] [-s REF] [--state-dir DIR] [--nats-port N]
                  [--api-port N] [--grpc-port N] [--insecure] [--log-level LEVEL]

Settings: fluxrig-mixer.toml < `FLUXRIG_*` environment < these flags (see `mixer.settings`).
Exit codes: 0 after a clean stop, 1 when the mixer cannot start or fails, 2 for bad settings
or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mixer import __version__
from mixer.app import Mixer
from mixer.settings import MixerSettings, load_mixer_settings
from rack.cli import run_async
from rack.errors import FluxError, SettingsError
from rack.logs import setup_logging

log = logging.getLogger("fluxrig.mixer")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fluxrig-mixer", description="fluxrig control plane")
    add = parser.add_argument
    add("--version", action="version", version=f"fluxrig-mixer {__version__}")
    add("-c", "--config", type=Path, help="settings file (default ./fluxrig-mixer.toml)")
    add("-s", "--scenario", metavar="REF", help="startup scenario: ./file.yaml or name:tag")
    add("--state-dir", type=Path, help="state directory (database, CAS blobs, hub store)")
    add("--local-rack", metavar="NAME", help="also run a local rack NAME (standard tier)")
    add("--nats-port", type=int, help="client port of the embedded NATS hub (0 = any)")
    add("--api-port", type=int, help="REST API port (0 = any)")
    add("--grpc-port", type=int, help="gRPC API port (0 = any)")
    add("--insecure", action="store_true", help="allow running the APIs without a token")
    add("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper)
    add("--log-format", choices=["text", "json"])
    return parser


def flags_of(args: argparse.Namespace) -> dict[str, Any]:
    """The given flags as dotted settings keys (flags not given are None)."""
    return {
        "mixer.startup_scenario": args.scenario,
        "mixer.state_dir": args.state_dir,
        "mixer.local_rack": args.local_rack,
        "mixer.log_level": args.log_level,
        "mixer.log_format": args.log_format,
        "hub.port": args.nats_port,
        "api.port": args.api_port,
        "api.grpc_port": args.grpc_port,
        "api.insecure": True if args.insecure else None,
    }


async def serve(settings: MixerSettings) -> int:
    """Run the mixer until SIGTERM/SIGINT, then close everything in order; the exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Mixer(settings):
            await stop.wait()
            log.info("stop requested: closing the mixer")
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_mixer_settings(args.config, flags_of(args))
    except SettingsError as exc:
        print(f"fluxrig-mixer: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.mixer.log_level, settings.mixer.log_format)
    try:
        return run_async(serve(settings))
    except FluxError as exc:
        print(f"fluxrig-mixer: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
