"""`fluxrig-mixer` as a real process: real ports, real signals, its log followed (no sleeps)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import nats
import pytest

from mixer import __version__


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("FLUXRIG_")}
    if "FLUXRIG_NATS_SERVER" in os.environ:
        env["FLUXRIG_NATS_SERVER"] = os.environ["FLUXRIG_NATS_SERVER"]
    return {**env, **extra}


class MixerProcess:
    """`python -m mixer.cli ARGS` with its stderr collected line by line."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str]) -> None:
        self.args, self.cwd, self.env = args, cwd, env
        self.lines: list[str] = []
        self._new_line = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MixerProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mixer.cli", *self.args,
            cwd=self.cwd, env=self.env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            await self._reader

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.lines.append(line.decode(errors="replace").rstrip())
            self._new_line.set()
        self._new_line.set()

    async def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        regex, seen = re.compile(pattern), 0
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for line in self.lines[seen:]:
                        if m := regex.search(line):
                            return m
                    seen = len(self.lines)
                    if self._reader is not None and self._reader.done():
                        raise AssertionError(f"exited before logging {pattern!r}:\n{self.log()}")
                    self._new_line.clear()
                    await self._new_line.wait()
        except TimeoutError:
            raise AssertionError(
                f"did not log {pattern!r} within {timeout:g} s:\n{self.log()}"
            ) from None

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        async with asyncio.timeout(30):
            code = await self.proc.wait()
            if self._reader is not None:
                await self._reader
        return code

    def log(self) -> str:
        return "\n".join(self.lines)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_runs_until_signal_then_closes_everything(
    tmp_path: Path, sig: signal.Signals
) -> None:
    args = ("--insecure", "--state-dir", "st", "--nats-port", "0", "--api-port", "0")
    env = clean_env(
        FLUXRIG_API_GRPC_PORT="0",
        FLUXRIG_HUB_LEAFNODE_PORT="0",
        FLUXRIG_TELEMETRY_GRPC_PORT="0",
        FLUXRIG_TELEMETRY_HTTP_PORT="0",
    )
    async with MixerProcess(*args, cwd=tmp_path, env=env) as mixer:
        ready = await mixer.wait_for(r"mixer ready: NATS hub (nats://\S+), REST API (http://\S+),")
        nats_url, api_url = ready.group(1), ready.group(2)
        assert re.search(rf"REST API listening on {re.escape(api_url)}$", mixer.log(), re.M)
        nc = await nats.connect(nats_url)
        await nc.close()
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{api_url}/api/v1/racks") as resp,
        ):
            assert resp.status == 200  # --insecure: no token needed
        assert await mixer.stop(sig) == 0
    log = mixer.log()
    closed = [m[1] for m in re.finditer(r"fluxrig\.mixer: (.+) closed$", log, re.M)]
    assert closed == [
        "gRPC API",
        "REST API",
        "telemetry hub",
        "NATS hub",
        "passport office",
        "activation log",
        "registry",
        "CAS store",
        "database",
        "mixer",
    ], log
    assert (tmp_path / "st" / "mixer.duckdb").is_file()
    assert "Traceback" not in log
    assert hub_password(tmp_path / "st") not in log  # the mixer's own NATS credential


def hub_password(state: Path) -> str:
    return (state / "hub" / "mixer.secret").read_text().strip()


async def test_missing_token_exits_2_with_the_message(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("fluxrig-mixer")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "mixer.cli"]
    result = await asyncio.to_thread(
        subprocess.run, command, cwd=tmp_path, env=clean_env(), capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "no API token: set [api] auth_token or FLUXRIG_API_TOKEN, or pass --insecure" in (
        result.stderr
    )
    assert not (tmp_path / ".fluxrig-mixer").exists()  # refused before touching anything


async def test_bad_setting_exits_2_naming_key_and_source(tmp_path: Path) -> None:
    env = clean_env(
        FLUXRIG_API_TOKEN="x" * 20,
        FLUXRIG_BOOTSTRAP_TOKEN="y" * 20,
        FLUXRIG_ENROLLMENT_MAX_MISSED="none",
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mixer.cli", "--api-port", "99999"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert "'api.port' = 99999 from flag --api-port" in result.stderr
    assert "'enrollment.max_missed' = 'none' from environment variable" in result.stderr
    assert "x" * 20 not in result.stderr


async def test_fatal_startup_scenario_exits_1(tmp_path: Path) -> None:
    args = ("--insecure", "--nats-port", "0", "--api-port", "0", "-s", "missing:v1")
    env = clean_env(
        FLUXRIG_API_GRPC_PORT="0",
        FLUXRIG_HUB_LEAFNODE_PORT="0",
        FLUXRIG_TELEMETRY_GRPC_PORT="0",
        FLUXRIG_TELEMETRY_HTTP_PORT="0",
    )
    async with MixerProcess(*args, cwd=tmp_path, env=env) as mixer:
        async with asyncio.timeout(30):
            assert mixer.proc is not None
            assert await mixer.proc.wait() == 1
    assert "startup scenario 'missing:v1': no scenario named 'missing'" in mixer.log()


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mixer.cli", "--version"], capture_output=True, text=True
    )
    assert result.stdout.strip() == f"fluxrig-mixer {__version__}"
