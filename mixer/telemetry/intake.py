"""`Intake`: the bounded queue between the receivers (event loop) and the writer thread.

    if not intake.offer(export):      # never blocks: False when full (the receiver answers 503)
        ...
    batch = intake.take(wake_at)      # writer thread: blocks until a batch is due
    ... write batch.exports, run batch.jobs ...
    intake.release(batch.exports)     # their rows and bytes leave the bounds

Two bounds: rows (`queue_rows`) and bytes (`queue_bytes`), counted from `offer` until the
writer `release`s them, so memory stays bounded even while a batch is being written. An export
larger than a bound on its own is accepted when nothing else is queued (it is already limited by
`max_body_bytes`), so it cannot be refused forever.

A batch is due when `batch_rows` rows wait, when the oldest export waited `flush_interval`
seconds, when a job is queued (then everything queued before it comes along, so a job sees the
exports offered before it written), or when the intake is closed (then everything).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mixer.telemetry.errors import TelemetryClosedError
from mixer.telemetry.payload import Export

__all__ = ["Batch", "Intake", "Job"]


@dataclass(slots=True)
class Job:
    """A function to run on the writer thread with its connection; `future` gets the result."""

    fn: Callable[[Any], Any]
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)

    def run(self, connection: Any) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn(connection)
        except BaseException as exc:
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


@dataclass(frozen=True, slots=True)
class Batch:
    exports: list[Export]
    jobs: list[Job]
    closing: bool


class Intake:
    """The write queue; `offer` and `submit` from any thread, `take`/`release` from the writer."""

    def __init__(
        self,
        *,
        max_rows: int,
        max_bytes: int,
        batch_rows: int,
        flush_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_rows, self.max_bytes = max_rows, max_bytes
        self.batch_rows, self.flush_interval = batch_rows, flush_interval
        self._clock = clock
        self._cond = threading.Condition()
        self._exports: deque[tuple[float, Export]] = deque()
        self._jobs: list[Job] = []
        self._rows = self._bytes = 0  # offered and not yet released
        self._queued_rows = 0  # offered and not yet taken
        self._closed = False
        self.accepted = 0  # rows
        self.refused = 0  # requests

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def bytes(self) -> int:
        """Bytes of the requests offered and not yet released (the `max_bytes` bound)."""
        return self._bytes

    def offer(self, export: Export) -> bool:
        """Queue `export` unless that would pass a bound (then count a refusal, return False)."""
        with self._cond:
            if self._closed:
                raise TelemetryClosedError("the telemetry hub is closed; nothing more is accepted")
            busy = self._rows > 0 or self._bytes > 0
            over = (
                self._rows + export.rows > self.max_rows
                or self._bytes + export.size > self.max_bytes
            )
            if busy and over:
                self.refused += 1
                return False
            was_empty = not self._exports
            self._exports.append((self._clock(), export))
            self._rows += export.rows
            self._bytes += export.size
            self._queued_rows += export.rows
            self.accepted += export.rows
            if was_empty or self._queued_rows >= self.batch_rows:
                self._cond.notify()
            return True

    def submit(self, fn: Callable[[Any], Any]) -> concurrent.futures.Future[Any]:
        """Queue a job for the writer thread (after the exports offered before it)."""
        job = Job(fn)
        with self._cond:
            if self._closed:
                raise TelemetryClosedError("the telemetry store is closed")
            self._jobs.append(job)
            self._cond.notify()
        return job.future

    def close(self) -> None:
        """Refuse from now on; the writer's next `take` returns everything left, `closing`."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def take(self, wake_at: float) -> Batch:
        """Block until a batch is due or the clock reaches `wake_at` (then maybe empty)."""
        with self._cond:
            while True:
                now = self._clock()
                if self._jobs or self._closed:
                    jobs, self._jobs = self._jobs, []
                    return Batch(self._pop(None), jobs, self._closed)
                if self._queued_rows >= self.batch_rows or self._due(now):
                    return Batch(self._pop(self.batch_rows), [], False)
                if now >= wake_at:
                    return Batch([], [], False)
                deadline = wake_at
                if self._exports:
                    deadline = min(deadline, self._exports[0][0] + self.flush_interval)
                self._cond.wait(max(0.0, deadline - now))

    def release(self, exports: Sequence[Export]) -> None:
        """`exports` are written (or given up): their rows and bytes leave the bounds."""
        with self._cond:
            self._rows -= sum(e.rows for e in exports)
            self._bytes -= sum(e.size for e in exports)

    def _due(self, now: float) -> bool:
        return bool(self._exports) and now - self._exports[0][0] >= self.flush_interval

    def _pop(self, limit: int | None) -> list[Export]:
        out: list[Export] = []
        rows = 0
        while self._exports and (limit is None or rows < limit):
            export = self._exports.popleft()[1]
            out.append(export)
            rows += export.rows
        self._queued_rows -= rows
        return out
