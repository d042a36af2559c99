"""The standard tier's local rack: a rack child process supervised beside the control plane.

    command = rack_command(sys.executable, mixer.nats_url, "edge-1", state_dir / "racks/edge-1")
    async with LocalRack(command, name="edge-1") as rack:   # returns once the child is spawned
        await rack.wait_running(timeout=5)                  # set while a child is alive
        ...                                                 # rack.pid, rack.restarts

The child shares the mixer's terminal (stdout and stderr are inherited, so the rack's log lines
appear beside the mixer's) and gets `rack.natsd`'s death-signal hook: its own process group (a
terminal's Ctrl-C reaches only the mixer, which then stops the rack in order) and, on Linux,
PR_SET_PDEATHSIG=SIGTERM, so a mixer killed with SIGKILL leaves no orphan rack. Spawn from the
event loop's thread (the signal fires when the spawning *thread* exits).

Failure behaviour: `start()` raises `MixerError` naming the command when the child cannot be
spawned (missing or non-executable program). A child that exits on its own is logged at WARNING
with its exit code or signal and restarted after an exponential back-off (`backoff_initial`
doubling to `backoff_max`; back to `backoff_initial` once a child has run `stable_after` seconds);
a restart that cannot spawn is logged at ERROR and retried on the same back-off. `aclose()`
(idempotent) stops restarting, sends SIGTERM, waits `grace` seconds, then SIGKILLs; it returns
promptly when the child has already exited or a back-off is pending. Open and close a `LocalRack`
from the same task (`async with` does): its supervision runs in a TaskGroup owned by that task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path

from mixer.errors import MixerError
from rack.lifecycle import Service
from rack.natsd import _death_signal_hook

__all__ = ["LocalRack", "describe_exit", "rack_command"]

log = logging.getLogger("fluxrig.mixer.local_rack")


def rack_command(python: str, hub_url: str, name: str, state_dir: Path) -> list[str]:
    """The argv of a rack managed by the mixer whose hub is at `hub_url`: it enrolls as `name`,
    keeps its state in `state_dir`, and runs the scenario the mixer pushes."""
    return [
        python, "-m", "rack.cli", "run", "--mixer-url", hub_url, "--name", name,
        "--state-dir", str(state_dir),
    ]  # fmt: skip


def describe_exit(returncode: int | None) -> str:
    """`exit code 3`, `signal SIGKILL` (a negative return code), or `still running`."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


class LocalRack(Service):
    """One supervised rack child process; `async with` spawns it, leaving stops it.

    Observable state: `pid` (None while no child is alive), `returncode` (of the last exit,
    None before any), `restarts` (children spawned after the first), `running` (an event set
    while a child is alive; `wait_running(timeout)` waits for it).
    `env` holds variables set for the child on top of the mixer's own environment.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        env: Mapping[str, str] | None = None,
        grace: float = 10.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        stable_after: float = 60.0,
    ) -> None:
        if not argv:
            raise ValueError(f"local rack {name}: empty command")
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError(
                f"need 0 < backoff_initial <= backoff_max, got {backoff_initial}, {backoff_max}"
            )
        self.argv = tuple(argv)
        self.name = name
        self.env = dict(env) if env is not None else None
        self.grace = grace
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.restarts = 0
        self.returncode: int | None = None
        self.running = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._stack: AsyncExitStack | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def wait_running(self, timeout: float | None = None) -> None:
        """Wait until a child process is alive (raises TimeoutError after `timeout` seconds)."""
        async with asyncio.timeout(timeout):
            await self.running.wait()

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn the child and supervise it in the background; `MixerError` if it cannot spawn."""
        if self._stack is not None:
            raise MixerError(f"local rack {self.name} is already started; aclose() it first")
        proc = await self._spawn()
        log.info("local rack %s started (pid %d): %s", self.name, proc.pid, " ".join(self.argv))
        self._stack = stack = AsyncExitStack()
        try:
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            self._task = tasks.create_task(self._supervise(), name=f"local-rack {self.name}")
            stack.callback(self._cancel)  # runs before the TaskGroup exits
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop restarting, then SIGTERM, wait `grace` seconds, SIGKILL, wait. Idempotent."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        try:
            await stack.aclose()  # the supervisor is cancelled: no restart from here on
        finally:
            await self._terminate()

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None:  # stopped during a back-off (or never spawned)
            log.info("local rack %s stopped (last %s)", self.name, describe_exit(self.returncode))
            return
        try:
            if proc.returncode is None:
                await self._signal_and_wait(proc)
        finally:
            if proc.returncode is None:  # cancelled while waiting: do not leave it running
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            self._exited(proc)
        log.info("local rack %s stopped (%s)", self.name, describe_exit(proc.returncode))

    async def _signal_and_wait(self, proc: asyncio.subprocess.Process) -> None:
        try:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(self.grace):
                await proc.wait()
        except ProcessLookupError:
            pass
        except TimeoutError:
            log.warning(
                "local rack %s (pid %d) still running %gs after SIGTERM; killing it",
                self.name,
                proc.pid,
                self.grace,
            )
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()

    # -- supervision ------------------------------------------------------------------------------

    async def _spawn(self) -> asyncio.subprocess.Process:
        env = None if self.env is None else {**os.environ, **self.env}
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
                preexec_fn=_death_signal_hook(),
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise MixerError(
                f"cannot start local rack {self.name}: {self.argv[0]}: {detail}; "
                f"command: {' '.join(self.argv)}"
            ) from exc
        self._proc = proc
        self.running.set()
        return proc

    def _exited(self, proc: asyncio.subprocess.Process) -> None:
        self.returncode = proc.returncode
        if self._proc is proc:
            self._proc = None
            self.running.clear()

    async def _supervise(self) -> None:
        """Wait for the child; when it exits on its own, restart it after the back-off."""
        loop = asyncio.get_running_loop()
        delay = self.backoff_initial
        while True:
            proc, started = self._proc, loop.time()
            if proc is not None:
                await proc.wait()
                self._exited(proc)
                if loop.time() - started >= self.stable_after:
                    delay = self.backoff_initial
                log.warning(
                    "local rack %s (pid %d) exited with %s; restarting in %gs",
                    self.name,
                    proc.pid,
                    describe_exit(proc.returncode),
                    delay,
                )
            await asyncio.sleep(delay)  # the back-off, not synchronisation
            delay = min(delay * 2, self.backoff_max)
            try:
                proc = await self._spawn()
            except MixerError as exc:
                log.error("%s; retrying in %gs", exc, delay)
                continue
            self.restarts += 1
            log.info("local rack %s restarted (pid %d)", self.name, proc.pid)
