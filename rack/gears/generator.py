"""The `generator` gear: synthetic messages at a paced rate, for demos and benchmarks.

Pacing follows a monotonic schedule: message `n` is due at `start + n / rate`. The producer sleeps
until the next message is due and, when it fell behind (a slow consumer, a busy loop), sends
every overdue message in one batch instead of drifting. A backlog older than one second is
forgotten rather than sent as a burst. Every send is `await emit.send(msg)`, so a full wire stops
the generator until there is room again: back-pressure, never loss.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field, JsonValue, model_validator

from rack.gear.base import Emitter, Gear, GearConfig
from rack.gear.context import GearContext
from rack.model.fluxmsg import FluxMsg

MAX_SIZE = 1024 * 1024
MAX_BATCH = 1000  # messages sent between two yields to the event loop
MIN_SLEEP = 0.001  # below this, wait a little longer and send a batch instead
MAX_BACKLOG = 1.0  # seconds of overdue messages still worth catching up


class GeneratorConfig(GearConfig):
    rate: float = Field(
        default=10.0,
        ge=0,
        description="Messages per second; 0 = as fast as back-pressure allows.",
    )
    count: int = Field(
        default=0, ge=0, description="Stop after this many messages; 0 = never stop."
    )
    payload: str = Field(
        default="message {n}",
        max_length=MAX_SIZE,
        description="Template of the raw payload (UTF-8): `{n}` becomes the sequence number "
        "(from 0), `{id}` the message's fluxID. Other braces are kept as they are.",
    )
    size: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SIZE,
        description="Instead of `payload`: this many bytes of filler (`x`) as the raw payload.",
    )
    data: dict[str, JsonValue] | None = Field(
        default=None,
        description="Structured fields placed in each message's `data` (a shallow copy per "
        "message).",
    )
    meta: dict[str, str] | None = Field(
        default=None, description="Metadata added to each message's `meta`."
    )

    @model_validator(mode="after")
    def _payload_or_size(self) -> GeneratorConfig:
        if self.size is not None and "payload" in self.model_fields_set:
            raise ValueError("set either 'payload' or 'size', not both")
        return self


class GeneratorGear(Gear[GeneratorConfig]):
    """Produces synthetic messages: `count` of them (or forever) at `rate` per second, each with a
    raw payload from the `payload` template (or `size` bytes of filler), optional `data` and
    `meta`. It has no input; it stops producing when drained, when `count` is reached, or while
    its output wire is full (back-pressure). `generated` counts what it produced, and the
    `finished` event is set once it stops for good.
    """

    type_name = "generator"
    summary = "Synthetic messages at a paced rate (demos, benchmarks); honours back-pressure."
    config_model = GeneratorConfig
    inputs = ()
    outputs = ("out",)

    def __init__(self) -> None:
        self.finished = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self._filler = b""

    async def init(self, ctx: GearContext[GeneratorConfig]) -> None:
        await super().init(ctx)
        self._filler = b"x" * (self.config.size or 0)

    async def start(self, emit: Emitter) -> None:
        self._task = self.ctx.spawn(self._produce(emit), name="generate")

    async def drain(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        self.finished.set()

    async def stop(self) -> None:
        await self.drain()

    def _make(self, n: int) -> FluxMsg:
        cfg, ids = self.config, self.ctx.ids
        mid = ids.next_id()
        if cfg.size is not None:
            raw = self._filler
        else:
            raw = cfg.payload.replace("{n}", str(n)).replace("{id}", str(mid)).encode()
        return FluxMsg(
            mid,
            raw=raw,
            data=None if cfg.data is None else dict(cfg.data),
            meta=dict(cfg.meta) if cfg.meta else None,
            src_id=self.ctx.name,
        )

    async def _produce(self, emit: Emitter) -> None:
        cfg, stats = self.config, self.ctx.stats
        loop = asyncio.get_running_loop()
        start, n = loop.time(), 0
        try:
            while cfg.count == 0 or n < cfg.count:
                batch = MAX_BATCH
                if cfg.rate:
                    elapsed = loop.time() - start
                    due = int(elapsed * cfg.rate) + 1 - n  # messages overdue, this one included
                    if due <= 0:
                        await asyncio.sleep(max(n / cfg.rate - elapsed, MIN_SLEEP))
                        continue
                    if due > cfg.rate * MAX_BACKLOG:  # far behind: forget the backlog
                        start, due = loop.time() - n / cfg.rate, 1
                    batch = min(due, MAX_BATCH)
                if cfg.count:
                    batch = min(batch, cfg.count - n)
                for _ in range(batch):
                    await emit.send(self._make(n))
                    n += 1
                    stats.add("generated")
                await asyncio.sleep(0)  # `send` does not yield while there is room
        finally:
            self.finished.set()
