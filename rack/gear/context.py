"""What a gear gets from its rack: name, config, logger, IDs, task scope, telemetry hooks."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, Generic

from rack.gear.base import ConfigT
from rack.model.fluxmsg import FluxMsg
from rack.model.ids import FluxIdGenerator

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter
    from opentelemetry.trace import Tracer


class GearStats:
    """Counters of one gear (messages in/out, errors, drops, bytes, connections, …).

    The runtime counts messages `in`, `out`, `errors` and `dropped` (plain attributes: they are
    on the per-message path); gears add their own (`bytes_in`, `connections`) with `add`, and
    gauges (`open_connections`) with `set_gauge`. With telemetry on, all are exported (the
    runtime's as `fluxrig.gear.messages`, `.errors`, `.dropped`; the gear's own as
    `fluxrig.gear.<name>`), read when metrics are collected: no cost per message. `snapshot()`
    gives a plain dict.
    """

    __slots__ = ("_counters", "dropped", "errors", "gauges", "msgs_in", "msgs_out")

    _FIELDS: ClassVar[dict[str, str]] = {
        "in": "msgs_in",
        "out": "msgs_out",
        "errors": "errors",
        "dropped": "dropped",
    }

    def __init__(self) -> None:
        self._counters: Counter[str] = Counter()
        self.gauges: dict[str, float] = {}
        self.msgs_in = 0
        self.msgs_out = 0
        self.errors = 0
        self.dropped = 0

    def add(self, name: str, value: int = 1) -> None:
        field = self._FIELDS.get(name)
        if field is None:
            self._counters[name] += value
        else:
            setattr(self, field, getattr(self, field) + value)

    def get(self, name: str) -> int:
        field = self._FIELDS.get(name)
        return self._counters[name] if field is None else int(getattr(self, field))

    def set_gauge(self, name: str, value: float) -> None:
        self.gauges[name] = value

    def snapshot(self) -> dict[str, float]:
        hot = {name: getattr(self, field) for name, field in self._FIELDS.items()}
        return {**hot, **self._counters, **self.gauges}


class GearContext(Generic[ConfigT]):
    """Services of the hosting rack, handed to `Gear.init`.

    `spawn` runs a background coroutine inside the gear's own task scope: if it raises, the gear
    is stopped and restarted with back-off like any other gear failure; on stop it is cancelled.

    `tracer` and `meter` are OpenTelemetry's (API objects): the rack's when its telemetry is on,
    no-ops otherwise. The rack already traces each message the gear processes and counts its
    `stats`; a span the gear starts while processing is a child of that message's span.
    """

    __slots__ = (
        "_meter", "_task_group", "_tasks", "_tracer", "config", "ids", "log", "name", "rack",
        "stats",
    )  # fmt: skip

    def __init__(
        self,
        *,
        name: str,
        config: ConfigT,
        ids: FluxIdGenerator,
        task_group: asyncio.TaskGroup,
        rack: str = "standalone",
        log: logging.Logger | None = None,
        stats: GearStats | None = None,
        tracer: Tracer | None = None,
        meter: Meter | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.ids = ids
        self.rack = rack
        self.log = log or logging.getLogger(f"fluxrig.gear.{name}")
        self.stats = stats or GearStats()
        self._task_group = task_group
        self._tasks: set[asyncio.Task[Any]] = set()
        self._tracer = tracer
        self._meter = meter

    @property
    def tracer(self) -> Tracer:
        """OpenTelemetry tracer for the gear's own spans (a no-op one when telemetry is off)."""
        if self._tracer is None:
            from opentelemetry.trace import NoOpTracer

            self._tracer = NoOpTracer()
        return self._tracer

    @property
    def meter(self) -> Meter:
        """OpenTelemetry meter for the gear's own instruments (a no-op one when telemetry is
        off). Plain counters in `stats` are exported too, and cost less per message."""
        if self._meter is None:
            from opentelemetry.metrics import NoOpMeter

            self._meter = NoOpMeter(f"fluxrig.gear.{self.name}")
        return self._meter

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str = "") -> asyncio.Task[Any]:
        """Run `coro` in this gear's task scope (cancelled when the gear stops)."""
        task = self._task_group.create_task(coro, name=f"{self.name}:{name or 'task'}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel_spawned(self) -> None:
        """Cancel every task started with `spawn` that is still running (used at stop)."""
        for task in list(self._tasks):
            task.cancel()

    def new_msg(
        self, raw: bytes = b"", *, data: Any = None, meta: dict[str, str] | None = None
    ) -> FluxMsg:
        """A fresh message with a new fluxID, stamped with this gear as its source."""
        return FluxMsg(self.ids.next_id(), raw=raw, data=data, meta=meta, src_id=self.name)
