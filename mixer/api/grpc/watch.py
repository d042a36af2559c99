"""`RackWatch`: the status changes of racks, for `RackService.WatchRacks`.

Two sources feed a watcher, and it reports each status change once:

- **publish** (immediate): whoever changes a rack may call `watch.publish(record, previous)`
  from the event loop — the gRPC rack operations do, and the Mixer does for every status
  enrollment announces (hellos, adoptions by REST or scenario, the heartbeat sweep). It never
  blocks: each watcher has a bounded queue; when a slow watcher lags, its oldest event is
  dropped and counted, and the watcher re-reads the registry at once instead.
- **poll** (the fallback, so changes made anywhere are seen today): each watcher re-reads
  `registry.list()` every `poll_interval` seconds (in a thread) and reports every rack whose
  status differs from what that watcher last reported.

Each watcher remembers the status it last reported per MachineID (never reused, unchanged by a
rename), so a change seen by both sources, or already in the initial snapshot, is sent once.
Watchers are operator tools (a handful), so each polls on its own: no background task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

from mixer.registry import RackRecord, RackStatus, Registry

log = logging.getLogger("fluxrig.mixer.api.grpc")

DEFAULT_POLL_INTERVAL = 0.5
DEFAULT_QUEUE_SIZE = 256


@dataclass(frozen=True, slots=True)
class RackChange:
    """One rack as it is now; `previous` is None in the initial snapshot and for a new rack."""

    record: RackRecord
    previous: RackStatus | None


class _Closed:
    """Sentinel queued when the watch closes."""


_CLOSED = _Closed()


class _Subscriber:
    __slots__ = ("dropped", "queue")

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[RackChange | _Closed] = asyncio.Queue(size)
        self.dropped = 0

    def offer(self, item: RackChange | _Closed) -> None:
        """Enqueue without ever blocking: a full queue loses its oldest event."""
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(item)


class RackWatch:
    """Fan-out of rack status changes to watchers; see the module docstring."""

    def __init__(
        self,
        registry: Registry,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        if poll_interval <= 0 or queue_size < 1:
            raise ValueError(
                f"need poll_interval > 0 and queue_size >= 1, got {poll_interval}, {queue_size}"
            )
        self._registry = registry
        self.poll_interval = poll_interval
        self._queue_size = queue_size
        self._subscribers: set[_Subscriber] = set()
        self._closed = False
        self.dropped = 0  # events dropped for lagging watchers since start (they re-polled)

    @property
    def watchers(self) -> int:
        return len(self._subscribers)

    def publish(self, record: RackRecord, previous: RackStatus | None = None) -> None:
        """Tell every watcher that `record` changed (call from the event loop; never blocks)."""
        change = RackChange(record, previous)
        for sub in self._subscribers:
            sub.offer(change)

    def close(self) -> None:
        """End every watch (their streams finish normally); idempotent."""
        if not self._closed:
            self._closed = True
            for sub in self._subscribers:
                sub.offer(_CLOSED)

    async def changes(
        self,
        *,
        include_current: bool,
        subscribed: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[RackChange]:
        """The snapshot (when asked), then every status change until `close()`.

        `subscribed` is awaited once the watcher is registered and has its baseline: from then
        on no change can be missed (the gRPC handler uses it to send initial metadata, which
        clients can await as the watch's readiness)."""
        with self._subscribe() as sub:
            records = await asyncio.to_thread(self._registry.list)
            known = {r.machine_id: r.status for r in records}
            if subscribed is not None:
                await subscribed()
            if include_current:
                for rec in records:
                    yield RackChange(rec, None)
            loop = asyncio.get_running_loop()
            next_poll = loop.time() + self.poll_interval
            while not self._closed:
                item = await self._next(sub, next_poll)
                if isinstance(item, _Closed):
                    return
                if item is None or sub.dropped:
                    self._report_drops(sub)
                    for change in await self._poll(known):
                        yield change
                    next_poll = loop.time() + self.poll_interval
                elif known.get(item.record.machine_id) != item.record.status:
                    previous = item.previous or known.get(item.record.machine_id)
                    known[item.record.machine_id] = item.record.status
                    yield RackChange(item.record, previous)

    @contextlib.contextmanager
    def _subscribe(self) -> Iterator[_Subscriber]:
        sub = _Subscriber(self._queue_size)
        if self._closed:
            sub.offer(_CLOSED)
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    @staticmethod
    async def _next(sub: _Subscriber, deadline: float) -> RackChange | _Closed | None:
        """The next published event, or None when it is time to poll."""
        try:
            async with asyncio.timeout_at(deadline):
                return await sub.queue.get()
        except TimeoutError:
            return None

    async def _poll(self, known: dict[int, RackStatus]) -> list[RackChange]:
        changes = []
        for rec in await asyncio.to_thread(self._registry.list):
            previous = known.get(rec.machine_id)
            if previous != rec.status:
                known[rec.machine_id] = rec.status
                changes.append(RackChange(rec, previous))
        return changes

    def _report_drops(self, sub: _Subscriber) -> None:
        if sub.dropped:
            self.dropped += sub.dropped
            log.warning(
                "a rack watcher lagged: %d status events dropped; re-read the registry instead",
                sub.dropped,
            )
            sub.dropped = 0
