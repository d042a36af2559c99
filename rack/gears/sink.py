"""Terminal and tap gears: `sink` counts and drops messages, `log` logs them and passes them on."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import BinaryIO, Literal

from pydantic import Field

from rack.errors import GearError
from rack.gear.base import Gear, GearConfig, Output
from rack.gear.context import GearContext
from rack.model.fluxmsg import FluxMsg

MAX_KEEP = 100_000

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class SinkConfig(GearConfig):
    keep_last: int = Field(
        default=0,
        ge=0,
        le=MAX_KEEP,
        description="Keep the last N messages in memory for tests and inspection; 0 = none.",
    )
    path: str | None = Field(
        default=None,
        min_length=1,
        description="Append one line per message to this file (flushed to the OS after each "
        "message, so a crash of the rack loses nothing written): an audit trail of what "
        "reached the end of the flow.",
    )
    record: Literal["id", "raw"] = Field(
        default="id",
        description="With `path`: what each line holds — the fluxID, or the raw payload "
        "(newlines escaped as \\n).",
    )


class SinkGear(Gear[SinkConfig]):
    """The end of a flow: counts every message (`sunk`) and its raw bytes (`bytes`), then drops
    it. With `keep_last` it keeps the most recent messages in `last`, and `wait_for(n)` waits
    until `n` messages arrived; both are meant for tests, demos and benchmarks.
    """

    type_name = "sink"
    summary = "Terminal gear: counts messages and bytes, optionally keeps the last N."
    config_model = SinkConfig
    outputs = ()

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.last: deque[FluxMsg] = deque(maxlen=0)
        self._arrived = asyncio.Event()
        self._file: BinaryIO | None = None

    async def init(self, ctx: GearContext[SinkConfig]) -> None:
        await super().init(ctx)
        self.last = deque(maxlen=self.config.keep_last)
        if self.config.path:
            try:
                self._file = open(self.config.path, "ab", buffering=0)  # noqa: ASYNC230, SIM115 - opened once, closed in stop()
            except OSError as exc:
                raise GearError(f"sink cannot open path '{self.config.path}': {exc}") from exc

    async def stop(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    async def process(self, msg: FluxMsg, port: str) -> Output:
        size = len(msg.raw)
        self.count += 1
        self.bytes += size
        stats = self.ctx.stats
        stats.add("sunk")
        stats.add("bytes", size)
        if self.last.maxlen:
            self.last.append(msg)
        if self._file is not None:
            line = (
                str(msg.id).encode()
                if self.config.record == "id"
                else msg.raw.replace(b"\n", b"\\n")
            )
            self._file.write(line + b"\n")
        self._arrived.set()
        return None

    async def wait_for(self, count: int) -> None:
        """Wait until at least `count` messages arrived (bound it with `asyncio.timeout`)."""
        while self.count < count:
            self._arrived.clear()
            await self._arrived.wait()


class LogConfig(GearConfig):
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of the message lines."
    )
    sample_every: int = Field(
        default=1,
        ge=1,
        description="Log only every Nth message (the 1st, the N+1th, …); 1 = every message.",
    )
    show: Literal["raw", "data", "both"] = Field(
        default="both",
        description="What to show besides id and meta: the raw payload, the data, or both.",
    )
    max_chars: int = Field(
        default=512,
        ge=16,
        le=65_536,
        description="Truncate the raw and data renderings to this many characters each.",
    )


class LogGear(Gear[LogConfig]):
    """A tap for debugging a flow: logs each message (or every `sample_every`th) at `level` on the
    rack's logger, with its id, source, meta and, per `show`, its raw payload (UTF-8, invalid
    bytes escaped) and/or data, each cut to `max_chars`; then passes the message on, unchanged,
    on `out`. Rendering is skipped entirely when the level is not enabled.
    """

    type_name = "log"
    summary = "Logs messages (sampled, truncated) and passes them through unchanged."
    config_model = LogConfig

    def __init__(self) -> None:
        self._seen = 0
        self._level = logging.INFO

    async def init(self, ctx: GearContext[LogConfig]) -> None:
        await super().init(ctx)
        self._level = LEVELS[self.config.level]

    async def process(self, msg: FluxMsg, port: str) -> Output:
        seen, self._seen = self._seen, self._seen + 1
        log = self.ctx.log
        if seen % self.config.sample_every == 0 and log.isEnabledFor(self._level):
            log.log(self._level, "%s", self.render(msg))
        return msg

    def render(self, msg: FluxMsg) -> str:
        """One log line for `msg`, as configured."""
        cfg, limit = self.config, self.config.max_chars
        parts = [f"msg {msg.id} from {msg.src_id or '?'} meta={msg.meta!r}"]
        if cfg.show in ("raw", "both"):
            raw = msg.raw
            text = raw[: limit * 4].decode("utf-8", "backslashreplace")  # ≤ 4 bytes per char
            if len(text) > limit or len(raw) > limit * 4:
                text = f"{text[:limit]}…({len(raw)} bytes)"
            parts.append(f"raw={text}")
        if cfg.show in ("data", "both"):
            text = repr(msg.data)
            if len(text) > limit:
                text = f"{text[:limit]}…({len(text)} chars)"
            parts.append(f"data={text}")
        return " ".join(parts)
