"""`fluxrig tail WIRE`: the messages crossing a wire, live (a bounded tap: `rack.tap`).

    fluxrig tail gen.out→sink.in [--rack NAME] [--filter EXPR] [--limit N] [--rate N] [--json]
                                 [--nats-url URL | --state-dir DIR]

Opens a tap on the rack (`flux.ctrl.<rack>.tap`), prints one line per message (or the JSON
records), renews the tap's lease while it runs and stops the tap on Ctrl-C or after `--limit`
messages. The rack drops what its tap queue cannot hold and this command drops what the terminal
cannot take: both are counted, and the wire itself is never slowed. Every subject it uses is
one the mixer's hub lets a rack use, so `--nats-url` may be the hub (with credentials allowed
`flux.ctrl.<rack>.>` and `flux.telemetry.<rack>.>`) as well as the rack's own NATS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from rack.errors import FluxError
from rack.runtime.standard import read_nats_url
from rack.tap.protocol import (
    data_subject,
    encode,
    open_subject,
    renew_subject,
    shown_url,
    stop_subject,
)

__all__ = ["add_parser", "cmd_tail", "main", "run_tail"]

ANSWER_TIMEOUT = 5.0  # seconds for the rack to answer the opening request
LOCAL_PENDING = 1024  # records waiting for the terminal; past that they are dropped here
PREVIEW = 160
NO_NATS = (
    "a standalone rack with only memory wires has no NATS, hence no taps: run it with "
    "--nats-url, or give its scenario a standard wire"
)
_STOP = object()
_ESCAPES = {c: f"\\x{c:02x}" for c in range(32)} | {10: "\\n", 13: "\\r", 9: "\\t"}


@dataclass
class Session:
    """What the viewer saw of its tap."""

    shown: int = 0
    dropped: int = 0  # by the rack: its tap queue was full (this viewer or --rate too slow)
    local_dropped: int = 0  # here: the terminal could not keep up
    filter_errors: int = 0
    filter_error: str = ""
    ended: str | None = None


def nats_url(args: argparse.Namespace) -> str:
    """--nats-url, else FLUXRIG_NATS_URL, else `<state dir>/nats.url` (written by the rack)."""
    if args.nats_url:
        return str(args.nats_url)
    if env := os.environ.get("FLUXRIG_NATS_URL"):
        return env
    state_dir = args.state_dir or _settings().state_dir
    if url := read_nats_url(Path(state_dir)):
        return url
    raise FluxError(
        f"no NATS URL: pass --nats-url, set FLUXRIG_NATS_URL, or run where the rack's state dir "
        f"({state_dir}) holds nats.url ({NO_NATS})"
    )


def _settings() -> Any:
    from rack.settings import RackSettings

    return RackSettings()


class Viewer:
    """One `fluxrig tail` session on an open NATS connection."""

    def __init__(
        self, nc: Client, url: str, args: argparse.Namespace, out: TextIO, err: TextIO
    ) -> None:
        self.nc = nc
        self.url = url
        self.args = args
        self.out = out
        self.err = err
        self.rack: str = args.rack or _settings().name
        self.tap = secrets.token_hex(8)
        self.subject = data_subject(self.rack, self.tap)  # replies, records and the end record
        self.queue: asyncio.Queue[Msg | object] = asyncio.Queue()
        self.session = Session()
        self.lease = float(args.lease)

    def on_signal(self) -> None:
        self.queue.put_nowait(_STOP)

    async def _on_msg(self, msg: Msg) -> None:
        if msg.data.startswith(b'{"type":"msg"') and self.queue.qsize() >= LOCAL_PENDING:
            self.session.local_dropped += 1
            return
        self.queue.put_nowait(msg)

    async def run(self) -> int:
        await self.nc.subscribe(self.subject, cb=self._on_msg)
        await self.nc.flush()
        state = await self._open()
        self._say(f"tapping {state['wire']} on rack '{self.rack}' (Ctrl-C to stop)")
        code = await self._follow()
        if self.session.ended is None:
            await self._stop()
        self._summary()
        return code

    async def _open(self) -> dict[str, Any]:
        request = {"wire": self.args.wire, "id": self.tap, "lease": self.lease}
        request["rate"] = self.args.rate
        if self.args.filter:
            request["filter"] = self.args.filter
        if self.args.limit:
            request["limit"] = self.args.limit
        await self.nc.publish(open_subject(self.rack), encode(request), reply=self.subject)
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT):
                item = await self.queue.get()
        except TimeoutError:
            raise FluxError(self._silent(f"within {ANSWER_TIMEOUT:g}s")) from None
        if not isinstance(item, Msg):
            raise FluxError("interrupted before the rack answered")
        if _no_responders(item):
            raise FluxError(self._silent("(nobody listens)"))
        body = _json(item)
        if body.get("type") == "error":
            raise FluxError(f"rack '{self.rack}' refused the tap: {body['error']['message']}")
        return body

    def _silent(self, how: str) -> str:
        return (
            f"no answer from a rack named '{self.rack}' on {shown_url(self.url)} "
            f"{how}: check --rack (the rack's name) and that it runs; {NO_NATS}"
        )

    async def _follow(self) -> int:
        renew_every = self.lease / 3
        next_renew = time.monotonic() + renew_every
        heard = time.monotonic()
        while True:
            now = time.monotonic()
            if now - heard > self.lease:
                self._say(f"rack '{self.rack}' stopped answering; its tap has expired")
                return 1
            try:
                async with asyncio.timeout(max(0.0, next_renew - now)):
                    item = await self.queue.get()
            except TimeoutError:
                await self._send(renew_subject(self.rack, self.tap))
                next_renew = time.monotonic() + renew_every
                continue
            if not isinstance(item, Msg):
                return 0  # Ctrl-C
            heard = time.monotonic()
            body = _json(item)
            kind = body.get("type")
            if kind == "msg":
                if not self._show(body):
                    return 0  # the reader went away (a closed pipe)
                if self.args.limit and self.session.shown >= self.args.limit:
                    return 0
            elif kind in ("tap", "end"):
                self._track(body)
                if kind == "end":
                    return 0 if self.session.ended in ("limit reached", "stopped") else 1
            elif kind == "error":
                self._say(f"rack '{self.rack}': {body['error']['message']}")
                self.session.ended = "gone"
                return 1

    def _show(self, body: dict[str, Any]) -> bool:
        self.session.shown += 1
        self.session.dropped = max(self.session.dropped, int(body.get("dropped_so_far", 0)))
        line = json.dumps(body, ensure_ascii=False) if self.args.json else _line(body)
        try:
            self.out.write(line + "\n")
            if self.queue.empty():
                self.out.flush()
        except BrokenPipeError:
            with contextlib.suppress(OSError):  # no second error when Python flushes at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.out.fileno())
            return False
        return True

    def _track(self, body: dict[str, Any]) -> None:
        s = self.session
        s.dropped = max(s.dropped, int(body.get("dropped", 0)))
        if body.get("filter_errors", 0) > s.filter_errors:
            if not s.filter_errors:
                self._say(f"the filter failed on a message: {body.get('filter_error')}")
            s.filter_errors, s.filter_error = body["filter_errors"], body.get("filter_error", "")
        if body.get("type") == "end":
            s.ended = str(body.get("reason"))

    async def _stop(self) -> None:
        """Stop the tap and wait (briefly) for its end record: the final counts."""
        await self._send(stop_subject(self.rack, self.tap))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                while self.session.ended is None:
                    item = await self.queue.get()
                    if isinstance(item, Msg):
                        body = _json(item)
                        if body.get("type") in ("tap", "end"):
                            self._track(body)
                        elif body.get("type") == "error":
                            return

    async def _send(self, subject: str) -> None:
        with contextlib.suppress(nats.errors.Error, OSError):
            await self.nc.publish(subject, b"{}", reply=self.subject)
            await self.nc.flush(timeout=2)

    def _summary(self) -> None:
        s = self.session
        text = f"{s.shown} message(s) shown"
        if s.ended is not None:
            text = f"tap ended ({s.ended}): {text}"
        text += f"; {s.dropped} dropped by the rack"
        if s.dropped:
            text += " (the viewer or --rate could not keep up; the wire was not slowed)"
        if s.local_dropped:
            text += f"; {s.local_dropped} dropped here (the terminal could not keep up)"
        if s.filter_errors:
            text += f"; the filter failed on {s.filter_errors}: {s.filter_error}"
        self._say(text)

    def _say(self, text: str) -> None:
        print(text, file=self.err, flush=True)


def _no_responders(msg: Msg) -> bool:
    """The server's answer to a request nobody subscribes to (the rack is not there)."""
    return (msg.headers or {}).get("Status") == "503" and not msg.data


def _json(msg: Msg) -> dict[str, Any]:
    try:
        body = json.loads(msg.data)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


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


async def run_tail(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    url = nats_url(args)
    viewer: Viewer | None = None

    async def on_error(exc: Exception) -> None:
        if viewer is not None and isinstance(exc, nats.errors.SlowConsumerError):
            viewer.session.local_dropped += 1

    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            nc = await nats.connect(
                url, name="fluxrig tail", connect_timeout=2, reconnect_time_wait=0.5,
                max_reconnect_attempts=3, error_cb=on_error,
            )  # fmt: skip
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise FluxError(
            f"cannot reach NATS at {shown_url(url)} ({str(exc) or 'no answer'}): is the rack "
            "running?"
        ) from None
    viewer = Viewer(nc, url, args, out or sys.stdout, err or sys.stderr)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    try:
        for sig in signals:
            loop.add_signal_handler(sig, viewer.on_signal)
        return await viewer.run()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await nc.close()


def cmd_tail(args: argparse.Namespace) -> int:
    from rack.cli import run_async

    return run_async(run_tail(args))


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tail = sub.add_parser(
        "tail",
        help="the messages crossing a wire, live (a bounded tap that never slows the wire)",
        description="Stream the messages crossing a wire of a running rack. The rack drops what "
        "this viewer cannot take (and counts it) instead of slowing the wire.",
    )
    tail.add_argument(
        "wire", help="'gen.out→sink.in' (or 'gen.out -> sink.in'); 'gen.out': every wire from it"
    )
    tail.add_argument("--rack", help="the rack's name (default: its `name` setting)")
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
    )  # seconds the rack keeps the tap without a renew (renewed every third of it)
    tail.add_argument("--json", action="store_true", help="one JSON record per line")
    where = tail.add_mutually_exclusive_group()
    where.add_argument(
        "--nats-url", help="a NATS reaching the rack: its own, or the mixer's hub with credentials"
    )
    where.add_argument("--state-dir", type=Path, help="the rack's state dir (holds nats.url)")
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
