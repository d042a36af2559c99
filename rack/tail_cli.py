"""`fluxrig tail WIRE`: the messages crossing a wire, live (a bounded tap: `rack.tap`).

    fluxrig tail gen.out→sink.in --rack NAME [--filter EXPR] [--limit N] [--rate N] [--json]
                 [--api-url URL [--api-token T] [--api-ca FILE] | --nats-url URL | --state-dir DIR]

Two ways to the rack, the same output:

- through the mixer's REST API (`GET /api/v1/racks/{name}/tap`, the admin token), when an API
  URL is given (`--api-url`, else FLUXRIG_API_URL): the operator's way to a managed rack; the
  mixer opens the tap over its hub (`ApiClient.stream` of `GET /racks/{name}/tap`, NDJSON);
- straight to the rack's NATS (`--nats-url`, else FLUXRIG_NATS_URL, else `<state dir>/nats.url`):
  a standalone rack, or on the rack's machine (`rack.tap.client`).

An explicit `--nats-url`/`--state-dir` wins over FLUXRIG_API_URL (and may not be mixed with the
`--api-*` options); of the two variables, FLUXRIG_API_URL wins. Either way one line per message
(or the JSON records) goes to stdout; the opening, the filter's first failure and the summary to
stderr. The tap stops on Ctrl-C or after
`--limit` messages; the rack drops what its tap queue cannot hold, and the mixer, or this command,
what the reader cannot take: all counted, and the wire itself is never slowed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import nats
import nats.errors
from nats.aio.client import Client

from rack.api_client import DEFAULT_API_URL, URL_ENV, ApiClient, segment
from rack.errors import ApiError, FluxError
from rack.runtime.standard import resolve_nats_url
from rack.tap.client import SILENT, TapClient, TapCounts, TapUnanswered
from rack.tap.protocol import TapError, TapRequest, shown_url

__all__ = ["add_parser", "cmd_tail", "main", "run_tail", "tail_via_api"]

ANSWER_TIMEOUT = 5.0  # seconds for the rack to answer the opening request
API_TIMEOUT = 15.0  # seconds for the mixer's answer, then between two lines of its stream
LOCAL_PENDING = 1024  # records waiting for the terminal; past that they are dropped here
PREVIEW = 160
CLEAN_ENDS = ("limit reached", "stopped")  # exit 0; any other end of the tap exits 1
NO_NATS = (
    "a standalone rack with only memory wires has no NATS, hence no taps: run it with "
    "--nats-url, or give its scenario a standard wire"
)
_ESCAPES = {c: f"\\x{c:02x}" for c in range(32)} | {10: "\\n", 13: "\\r", 9: "\\t"}


def through_api(args: argparse.Namespace) -> bool:
    """--api-url (or --api-token/--api-ca), or FLUXRIG_API_URL unless --nats-url/--state-dir
    say where the rack's NATS is."""
    api_flags = bool(args.api_url or args.api_token or args.api_ca)
    nats_flags = bool(args.nats_url or args.state_dir)
    if api_flags and nats_flags:
        raise FluxError(
            "--api-url/--api-token/--api-ca tap through the mixer's API, --nats-url/--state-dir on "
            "the rack's NATS: give one or the other"
        )
    return api_flags or (not nats_flags and bool(os.environ.get(URL_ENV)))


def nats_url(args: argparse.Namespace) -> str:
    """--nats-url, else FLUXRIG_NATS_URL, else `<state dir>/nats.url` (written by the rack)."""
    state_dir = Path(args.state_dir or _settings().state_dir)
    advice = (f" ({NO_NATS}); for a rack managed by a mixer, tap through its API: --api-url "
              f"(or {URL_ENV}) and --rack")  # fmt: skip
    return resolve_nats_url(args.nats_url, state_dir, advice)


def _settings() -> Any:
    from rack.settings import RackSettings

    return RackSettings()


class Printer:
    """What `fluxrig tail` prints, whichever way the records come."""

    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
        self.json = bool(args.json)
        self.out = out
        self.err = err
        self.shown = 0
        self.dropped = 0  # by the rack, as the records said
        self.filter_errors = 0

    def show(self, body: dict[str, Any]) -> bool:
        """Print a record; False when the reader went away (a closed pipe)."""
        self.shown += 1
        self.dropped = max(self.dropped, int(body.get("dropped_so_far", 0)))
        line = json.dumps(body, ensure_ascii=False) if self.json else _line(body)
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except BrokenPipeError:
            with contextlib.suppress(OSError):  # no second error when Python flushes at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.out.fileno())
            return False
        return True

    def state(self, filter_errors: int, filter_error: str) -> None:
        """The tap's state: say the filter's first failure."""
        if filter_errors > self.filter_errors and not self.filter_errors:
            self.say(f"the filter failed on a message: {filter_error}")
        self.filter_errors = max(self.filter_errors, filter_errors)

    def summary(self, ended: str | None, counts: TapCounts, here: str) -> None:
        text = f"{self.shown} message(s) shown"
        if ended is not None:
            text = f"tap ended ({ended}): {text}"
        dropped = max(self.dropped, counts.dropped)
        text += f"; {dropped} dropped by the rack"
        if dropped:
            text += " (the viewer or --rate could not keep up; the wire was not slowed)"
        if counts.local_dropped:
            text += f"; {counts.local_dropped} dropped {here}"
        if counts.filter_errors:
            text += f"; the filter failed on {counts.filter_errors}: {counts.filter_error}"
        self.say(text)

    def say(self, text: str) -> None:
        print(text, file=self.err, flush=True)


def _line(body: dict[str, Any]) -> str:
    """`2025-06-01 13:37:59.596123  gen.out → sink.in  4242  message 1 {"n": 1}`"""
    ts = str(body.get("ts", "")).replace("T", " ").rstrip("Z")
    raw = str(body.get("raw", ""))
    if body.get("raw_encoding") == "base64":
        raw = f"<{body.get('raw_size', '?')} bytes, not UTF-8>"
    preview = raw.translate(_ESCAPES)
    data = body.get("data")
    if data is not None:
        preview = f"{preview} {json.dumps(data, ensure_ascii=False)}".strip()
    if len(preview) > PREVIEW:
        preview = preview[: PREVIEW - 1] + "…"
    return f"{ts}  {body.get('wire', '')}  {body.get('flux_id', '')}  {preview}"


# -- straight to the rack's NATS -------------------------------------------------------------------


async def run_tail(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Tap on the rack's NATS (`nats_url(args)`)."""
    url = nats_url(args)
    printer = Printer(args, out or sys.stdout, err or sys.stderr)
    rack: str = args.rack or _settings().name
    tap: TapClient | None = None

    async def on_error(exc: Exception) -> None:
        if tap is not None and isinstance(exc, nats.errors.SlowConsumerError):
            tap.counts.local_dropped += 1

    nc = await _connect(url, on_error)
    tap = TapClient(nc, rack, _request(args), pending=LOCAL_PENDING, answer_timeout=ANSWER_TIMEOUT)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    try:
        for sig in signals:
            loop.add_signal_handler(sig, tap.interrupt, "stopped")
        return await _follow(tap, printer, url)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await tap.aclose()
        await nc.close()


async def _connect(url: str, on_error: Any) -> Client:
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            return await nats.connect(
                url, name="fluxrig tail", connect_timeout=2, reconnect_time_wait=0.5,
                max_reconnect_attempts=3, error_cb=on_error,
            )  # fmt: skip
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise FluxError(
            f"cannot reach NATS at {shown_url(url)} ({str(exc) or 'no answer'}): is the rack "
            "running?"
        ) from None


def _request(args: argparse.Namespace) -> TapRequest:
    return TapRequest(
        wire=args.wire, filter=args.filter or None, limit=args.limit, rate=args.rate,
        lease=args.lease,
    )  # fmt: skip


async def _follow(tap: TapClient, printer: Printer, url: str) -> int:
    rack = tap.rack
    try:
        state = await tap.open()
    except TapError as exc:
        raise FluxError(f"rack '{rack}' refused the tap: {exc}") from None
    except TapUnanswered as exc:
        if tap.counts.ended == "stopped":
            raise FluxError("interrupted before the rack answered") from None
        raise FluxError(
            f"no answer from a rack named '{rack}' on {shown_url(url)} {exc.how}: check --rack "
            f"(the rack's name) and that it runs; {NO_NATS}"
        ) from None
    printer.say(f"tapping {state['wire']} on rack '{rack}' (Ctrl-C to stop)")
    async with asyncio.TaskGroup() as tg:
        tg.create_task(tap.keep_alive())
        while (event := await tap.next()) is not None:
            if event.kind != "msg":
                printer.state(tap.counts.filter_errors, tap.counts.filter_error)
            elif not printer.show(event.body()):
                tap.interrupt("stopped")
    await tap.aclose()  # the final counts
    ended = tap.counts.ended
    if ended == SILENT:
        printer.say(f"rack '{rack}' stopped answering; its tap has expired")
    elif ended is not None and ended.startswith("gone: "):
        printer.say(f"rack '{rack}': {ended.removeprefix('gone: ')}")
    printer.summary(ended, tap.counts, "here (the terminal could not keep up)")
    return 0 if ended in CLEAN_ENDS else 1


# -- through the mixer's REST API ------------------------------------------------------------------


def tail_via_api(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Tap through the mixer's REST API (blocking; Ctrl-C closes the stream, the mixer then
    stops the tap)."""
    rack = args.rack
    if not rack:
        raise FluxError("through the mixer's API, give --rack NAME: which of its racks to tap")
    api = ApiClient.resolve(args.api_url, args.api_token, API_TIMEOUT, api_ca=args.api_ca)
    params = {
        "wire": args.wire,
        "filter": args.filter or None,
        "limit": str(args.limit) if args.limit else None,
        "rate": f"{args.rate:g}",
    }
    printer = Printer(args, out or sys.stdout, err or sys.stderr)
    counts, ended = TapCounts(), None
    with (
        _sigterm_interrupts(),
        _one_line(),
        api.stream(f"/racks/{segment(rack)}/tap", params) as lines,
    ):
        try:
            ended = _follow_lines(lines, printer, counts, rack)
        except KeyboardInterrupt:
            ended = "stopped"
    if ended is None:
        printer.say("the mixer ended the stream without its last line (did it stop?)")
    printer.summary(ended, counts, "by the mixer (this command could not keep up)")
    return 0 if ended in CLEAN_ENDS else 1


def _follow_lines(
    lines: Iterator[dict[str, Any]], printer: Printer, counts: TapCounts, rack: str
) -> str | None:
    """Print the stream; the reason it ended (None: it ended without its last line)."""
    for body in lines:
        kind = body.get("type")
        if kind == "msg":
            if not printer.show(body):
                return "stopped"
            continue
        if kind not in ("tap", "end"):
            continue
        if not counts.wire:
            counts.wire = str(body.get("wire", ""))
            printer.say(
                f"tapping {counts.wire} on rack '{rack}' through the mixer (Ctrl-C to stop)"
            )
        counts.dropped = max(counts.dropped, int(body.get("dropped", 0)))
        counts.local_dropped = int(body.get("dropped_by_mixer", 0))
        counts.filter_errors = int(body.get("filter_errors", 0))
        counts.filter_error = str(body.get("filter_error", ""))
        printer.state(counts.filter_errors, counts.filter_error)
        if kind == "end":
            return str(body.get("reason", "ended"))
    return None


@contextlib.contextmanager
def _one_line() -> Iterator[None]:
    """The mixer's refusal as one line: its message names the wire, filter or rack (`details`
    only repeat which parameter)."""
    try:
        yield
    except ApiError as exc:
        raise FluxError(exc.message) from None


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends the stream like Ctrl-C (in the main thread, where signals arrive)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the command -----------------------------------------------------------------------------------


def cmd_tail(args: argparse.Namespace) -> int:
    if through_api(args):
        return tail_via_api(args)
    from rack.cli import run_async

    return run_async(run_tail(args))


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tail = sub.add_parser(
        "tail",
        help="the messages crossing a wire, live (a bounded tap that never slows the wire)",
        description="Stream the messages crossing a wire of a running rack, through the mixer's "
        "API (--api-url, FLUXRIG_API_URL) or the rack's NATS (--nats-url, --state-dir). The rack "
        "drops what this viewer cannot take (and counts it) instead of slowing the wire.",
    )
    tail.add_argument(
        "wire", help="'gen.out→sink.in' (or 'gen.out -> sink.in'); 'gen.out': every wire from it"
    )
    tail.add_argument(
        "--rack", help="the rack's name (default on its NATS: its `name` setting; required "
        "through the mixer's API)",
    )  # fmt: skip
    tail.add_argument(
        "--filter",
        metavar="EXPR",
        help="CEL condition over data, meta, raw (text), flux_id, ref_id, ts, gear, port, wire; "
        "e.g. \"meta['kind'] == 'card' && data.amount > 100\"",
    )
    tail.add_argument("--limit", type=_positive_int, metavar="N", help="stop after N messages")
    tail.add_argument(
        "--rate",
        type=float,
        default=500.0,
        metavar="N",
        help="at most N messages per second from the rack (default 500); the rest is dropped",
    )
    tail.add_argument(
        "--lease", type=float, default=10.0, metavar="S", help=argparse.SUPPRESS
    )  # seconds the rack keeps the tap without a renew (renewed every third of it; NATS only)
    tail.add_argument("--json", action="store_true", help="one JSON record per line")
    where = tail.add_mutually_exclusive_group()
    where.add_argument(
        "--api-url",
        help=f"tap through the mixer's REST API (else {URL_ENV}; e.g. {DEFAULT_API_URL})",
    )
    where.add_argument("--nats-url", help="tap on the rack's own NATS (else FLUXRIG_NATS_URL)")
    where.add_argument("--state-dir", type=Path, help="the rack's state dir (holds nats.url)")
    tail.add_argument("--api-token", help="the API's admin token (else FLUXRIG_API_TOKEN)")
    tail.add_argument(
        "--api-ca", help="CA file for an https API, e.g. the mixer's pki/ca.crt (FLUXRIG_API_CA)"
    )
    tail.set_defaults(func=cmd_tail)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m rack.tail_cli WIRE ...` (the same as `fluxrig tail WIRE ...`)."""
    parser = argparse.ArgumentParser(prog="fluxrig")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["tail", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args))
    except FluxError as exc:
        print(f"fluxrig: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
