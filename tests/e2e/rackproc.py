"""Run `fluxrig run` as a real child process and follow its log (no sleeps: wait for log lines)."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import sys
from pathlib import Path


class RackProcess:
    def __init__(
        self,
        scenario: Path | None,
        *args: str,
        env: dict[str, str] | None = None,
        max_fds: int | None = None,
    ) -> None:
        self.scenario = scenario
        self.max_fds = max_fds
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._new_line = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> RackProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rack.cli", "run",
            *([str(self.scenario)] if self.scenario is not None else []), *self.args,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=self.env,
            preexec_fn=self._limit_fds if self.max_fds else None,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        return self

    def _limit_fds(self) -> None:  # runs in the child, before exec
        assert self.max_fds is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.max_fds, self.max_fds))

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.lines.append(line.decode(errors="replace").rstrip())
            self._new_line.set()
        self._new_line.set()

    async def wait_for(self, pattern: str, timeout: float = 15.0, start: int = 0) -> re.Match[str]:
        """Wait for a log line matching `pattern` (searching from line index `start`)."""
        regex = re.compile(pattern)
        seen = start
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for line in self.lines[seen:]:
                        if m := regex.search(line):
                            return m
                    seen = max(seen, len(self.lines))
                    if self._reader is not None and self._reader.done():
                        raise AssertionError(
                            f"rack exited before logging {pattern!r}:\n{self.log()}"
                        )
                    self._new_line.clear()
                    await self._new_line.wait()
        except TimeoutError:  # say what the rack did meanwhile
            raise AssertionError(
                f"the rack did not log {pattern!r} within {timeout:g} s:\n{self.log()}"
            ) from None

    async def ready(self) -> int:
        """Wait for readiness; returns the port the first io_tcp server listens on."""
        m = await self.wait_for(r"listening on [\d.]+:(\d+)")
        await self.wait_for(r"rack '.*' ready")
        return int(m.group(1))

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            if self._reader is not None:
                await self._reader
        return code

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            await self._reader

    def log(self) -> str:
        return "\n".join(self.lines)
