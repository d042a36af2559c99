"""LocalRack supervises a real child process: start, stop (SIGTERM, then SIGKILL after the
grace), restart with back-off, spawn errors, and no orphan when the mixer is killed -9."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mixer.errors import MixerError
from mixer.local_rack import LocalRack, describe_exit, rack_command
from rack.cli import build_parser

SLEEP = "import time; time.sleep(60)"


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `predicate` until it holds (for state outside the event loop: files, /proc)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie may wait for a reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # pragma: no cover - no /proc
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


async def test_start_and_stop_with_sigterm(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "fluxrig.mixer.local_rack")
    rack = LocalRack(python(SLEEP), name="edge-1")
    await rack.start()
    await rack.wait_running(timeout=5)
    pid = rack.pid
    assert pid is not None
    assert alive(pid)
    with pytest.raises(MixerError, match="already started"):
        await rack.start()
    await rack.aclose()
    assert rack.returncode == -signal.SIGTERM
    assert rack.pid is None
    assert not rack.running.is_set()
    assert not alive(pid)
    assert rack.restarts == 0
    await rack.aclose()  # idempotent
    stopped = [r.getMessage() for r in caplog.records if "stopped" in r.getMessage()]
    assert stopped == ["local rack edge-1 stopped (signal SIGTERM)"]


async def test_async_with_and_env(tmp_path: Path) -> None:
    out = tmp_path / "env"
    code = f"""
        import os, pathlib, time
        tmp = pathlib.Path({str(out)!r} + ".tmp")
        tmp.write_text(os.environ["RACK_X"] + " " + os.environ.get("PATH", "-"))
        tmp.rename({str(out)!r})  # atomic: exists() means written
        time.sleep(60)
    """
    async with LocalRack(python(code), name="e", env={"RACK_X": "42"}) as rack:
        await until(out.exists)
        assert rack.running.is_set()
    assert out.read_text() == f"42 {os.environ.get('PATH', '-')}"  # added to the environment
    assert rack.returncode == -signal.SIGTERM


async def test_child_ignoring_sigterm_is_killed_after_grace(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = f"""
        import pathlib, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pathlib.Path({str(ready)!r}).touch()
        time.sleep(60)
    """
    rack = LocalRack(python(code), name="stubborn", grace=0.3)
    await rack.start()
    await until(ready.exists)
    pid = rack.pid
    assert pid is not None
    started = time.monotonic()
    await rack.aclose()
    assert time.monotonic() - started >= 0.3
    assert rack.returncode == -signal.SIGKILL
    assert not alive(pid)


async def test_child_that_exits_is_restarted_after_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker, times = tmp_path / "first-run", tmp_path / "times"
    code = f"""
        import pathlib, sys, time
        with open({str(times)!r}, "a") as f:
            f.write(f"{{time.monotonic()}}\\n")
        marker = pathlib.Path({str(marker)!r})
        if not marker.exists():
            marker.touch()
            sys.exit(3)
        time.sleep(60)
    """
    rack = LocalRack(python(code), name="flaky", backoff_initial=0.2, backoff_max=1.0)
    async with rack:
        first = rack.pid
        await until(lambda: len(lines(times)) == 2)  # the second child started
        assert rack.restarts == 1
        assert rack.returncode == 3
        assert rack.pid is not None
        assert rack.pid != first
        assert alive(rack.pid)
        start_1, start_2 = map(float, lines(times))
        assert start_2 - start_1 >= 0.2  # the child's own run time only adds to the back-off
    assert rack.restarts == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"local rack flaky (pid {first}) exited with exit code 3; restarting in 0.2s" in warnings


async def test_backoff_doubles_up_to_the_maximum(tmp_path: Path) -> None:
    times = tmp_path / "times"
    code = f"""
        import time
        with open({str(times)!r}, "a") as f:
            f.write(f"{{time.monotonic()}}\\n")
        raise SystemExit(1)
    """
    async with LocalRack(python(code), name="crash", backoff_initial=0.05, backoff_max=0.2) as rack:
        await until(lambda: len(lines(times)) >= 5)
    assert rack.restarts >= 4
    starts = [float(t) for t in lines(times)][:5]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    for gap, delay in zip(gaps, [0.05, 0.1, 0.2, 0.2], strict=True):
        assert gap >= delay


async def test_backoff_is_reset_after_a_stable_run(tmp_path: Path) -> None:
    times = tmp_path / "times"
    code = f"""
        import time
        with open({str(times)!r}, "a") as f:
            f.write(f"{{time.monotonic()}}\\n")
    """
    # every run counts as stable: the delay stays at 0.05 s instead of reaching 0.05 * 2**5
    rack = LocalRack(python(code), name="r", backoff_initial=0.05, backoff_max=60, stable_after=0)
    async with rack:
        await until(lambda: len(lines(times)) >= 7)
    starts = [float(t) for t in lines(times)][:7]
    assert starts[6] - starts[5] < 1.6


async def test_aclose_during_backoff_returns_promptly(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    code = f"open({str(runs)!r}, 'a').write('run\\n'); raise SystemExit(3)"
    rack = LocalRack(python(code), name="down", backoff_initial=30, backoff_max=60)
    await rack.start()
    await until(lambda: rack.returncode == 3)
    assert not rack.running.is_set()
    assert rack.pid is None
    async with asyncio.timeout(2):
        await rack.aclose()
    assert rack.restarts == 0
    assert runs.read_text() == "run\n"
    await rack.aclose()


async def test_aclose_after_the_child_exited_by_signal(caplog: pytest.LogCaptureFixture) -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    rack = LocalRack(python(code), name="killed", backoff_initial=30, backoff_max=30)
    async with rack:
        await until(lambda: rack.returncode is not None)
    assert rack.returncode == -signal.SIGKILL
    messages = [r.getMessage() for r in caplog.records]
    assert any("exited with signal SIGKILL; restarting in 30s" in m for m in messages)


async def test_missing_executable_is_a_mixer_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-rack"
    rack = LocalRack([str(missing), "run"], name="ghost")
    with pytest.raises(MixerError, match=f"cannot start local rack ghost: {missing}"):
        await rack.start()
    assert rack.pid is None
    await rack.aclose()  # nothing to close


async def test_non_executable_file_is_a_mixer_error(tmp_path: Path) -> None:
    script = tmp_path / "rack.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(MixerError, match="Permission denied"):
        await LocalRack([str(script)], name="x").start()


def test_bad_backoff_is_refused() -> None:
    with pytest.raises(ValueError, match="backoff_initial"):
        LocalRack(python(SLEEP), name="x", backoff_initial=0)


PARENT = """
import asyncio, sys
from mixer.local_rack import LocalRack

CHILD = "import os, time; print('child', os.getpid(), flush=True); time.sleep(60)"

async def main() -> None:
    rack = LocalRack([sys.executable, "-c", CHILD], name="orphan")
    await rack.start()
    print("parent", rack.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
async def test_child_dies_with_a_parent_killed_with_sigkill() -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, stdout=asyncio.subprocess.PIPE
    )
    assert parent.stdout is not None
    seen: dict[str, int] = {}
    try:
        async with asyncio.timeout(20):
            while len(seen) < 2:  # the child's stdout is the parent's: the operator's terminal
                who, pid = (await parent.stdout.readline()).decode().split()
                seen[who] = int(pid)
        assert seen["child"] == seen["parent"]
        child = seen["child"]
        assert alive(child)
        parent.kill()
        await parent.wait()
        await until(lambda: not alive(child), timeout=5)
        async with asyncio.timeout(5):
            assert await parent.stdout.read() == b""  # the child held the pipe until it died
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        if "child" in seen and alive(seen["child"]):
            os.kill(seen["child"], signal.SIGKILL)


def test_rack_command() -> None:
    argv = rack_command("/venv/bin/python", "nats://127.0.0.1:4222", "edge-1", Path("/s/edge-1"))
    assert argv == [
        "/venv/bin/python",
        "-m",
        "rack.cli",
        "run",
        "--mixer-url",
        "nats://127.0.0.1:4222",
        "--name",
        "edge-1",
        "--state-dir",
        "/s/edge-1",
    ]
    args = build_parser().parse_args(argv[3:])  # what `fluxrig run` understands
    assert (args.command, args.mixer_url, args.name) == ("run", "nats://127.0.0.1:4222", "edge-1")
    assert (args.state_dir, args.scenario) == (Path("/s/edge-1"), None)


def test_rack_cli_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rack.cli", "version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_describe_exit() -> None:
    assert describe_exit(None) == "still running"
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(-signal.SIGTERM) == "signal SIGTERM"
    assert describe_exit(-200) == "signal 200"
