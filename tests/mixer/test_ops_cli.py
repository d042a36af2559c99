"""The operator CLI (`fluxrig racks|scenario|spec ...`) against a real REST API on port 0.

The API runs in the test's event loop; the CLI's blocking urllib calls run in a thread
(`asyncio.to_thread(main, ...)`) so the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from mixer.api.http import ApiContext, build_app
from mixer.app import Mixer
from mixer.settings import MixerSettings
from mixer.store import digest_of
from rack.api_client import ApiClient
from rack.cli import main
from rack.errors import ApiError
from tests.mixer.conftest import MakeRack, applies, fails
from tests.mixer.documents import BOOTSTRAP, SCENARIO, SCENARIO_V2, TOKEN

INVALID = """\
name: broken
gears:
  - name: gen
    type: generator
    config:
      rate: -1
  - name: ghost
    type: no_such_gear
wires:
  - {from: gen.out, to: out.in}
"""
TOML_FORM = """\
[gears.gen]
spec = "generator"
config = { rate = 0, count = 1 }

[gears.out]
spec = "sink"

[bus.routes.gen]
targets = ["out"]
transport = "memory"
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("FLUXRIG_API_URL", "FLUXRIG_API_TOKEN"):
        monkeypatch.delenv(key, raising=False)


@asynccontextmanager
async def serve(ctx: ApiContext) -> AsyncIterator[str]:
    """The REST API of `ctx` on a real port; its base URL."""
    runner = web.AppRunner(build_app(ctx))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def api_url(ctx: ApiContext) -> AsyncIterator[str]:
    async with serve(ctx) as url:
        yield url


class Cli:
    """`fluxrig ...` in a thread, with the API's URL and token; returns (code, out, err)."""

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.url, self.capsys = url, capsys

    async def __call__(self, *argv: str, token: str | None = TOKEN) -> tuple[int, str, str]:
        args = [*argv, "--api-url", self.url]
        if token is not None:
            args += ["--api-token", token]
        self.capsys.readouterr()
        code = await asyncio.to_thread(main, args)
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(api_url: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(api_url, capsys)


@pytest.fixture
async def hub_cli(hub_ctx: ApiContext, capsys: pytest.CaptureFixture[str]) -> AsyncIterator[Cli]:
    """The CLI against an API whose orchestrator is started on a real hub."""
    async with serve(hub_ctx) as url:
        yield Cli(url, capsys)


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- racks --------------------------------------------------------------------------------------


async def test_racks_list_and_show(cli: Cli, ctx: ApiContext) -> None:
    await asyncio.to_thread(ctx.registry.hello, "edge-1", version="1.2.0", attributes={"site": "a"})
    await asyncio.to_thread(ctx.registry.hello, "edge-2", auto_adopt=True)

    code, out, _ = await cli("racks", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "MID", "STATUS", "VERSION", "LAST", "SEEN"]
    assert lines[1].split()[:4] == ["edge-1", "1", "pending", "1.2.0"]
    assert lines[2].split()[:4] == ["edge-2", "2", "active", "-"]

    code, out, _ = await cli("racks", "list", "--status", "active")
    assert code == 0
    assert "edge-2" in out
    assert "edge-1" not in out

    code, out, _ = await cli("racks", "show", "edge-1")
    assert code == 0
    fields = dict(line.split(":", 1) for line in out.splitlines())
    assert fields["status"].strip() == "pending"
    assert fields["machine_id"].strip() == "1"
    assert fields["attributes"].strip() == '{"site":"a"}'
    assert fields["stats"].strip() == "{}"


async def test_racks_lifecycle(cli: Cli, ctx: ApiContext) -> None:
    await asyncio.to_thread(ctx.registry.hello, "edge-1")
    for verb, status in (
        ("adopt", "active"),
        ("suspend", "suspended"),
        ("resume", "active"),
        ("retire", "retired"),
    ):
        code, out, err = await cli("racks", verb, "edge-1")
        assert (code, err) == (0, "")
        assert out == f"rack 'edge-1' is now {status} (MachineID 1)\n"

    code, out, err = await cli("racks", "adopt", "edge-1")  # retired: illegal transition
    assert (code, out) == (1, "")
    assert "cannot adopt rack 'edge-1': it is retired" in err

    code, out, _ = await cli("racks", "rename", "edge-1", "edge-old")
    assert code == 0
    assert out == "rack 'edge-1' is now 'edge-old' (retired, MachineID 1)\n"
    assert (await asyncio.to_thread(ctx.registry.get, "edge-old")).machine_id == 1

    code, _, err = await cli("racks", "show", "edge-1")
    assert code == 1
    assert err == "fluxrig: not found: no rack named 'edge-1' is registered\n"


async def test_json_output_parses(cli: Cli, ctx: ApiContext) -> None:
    await asyncio.to_thread(ctx.registry.hello, "edge-1")
    code, out, _ = await cli("racks", "list", "--json")
    assert code == 0
    assert [r["name"] for r in json.loads(out)["racks"]] == ["edge-1"]
    code, out, _ = await cli("racks", "adopt", "edge-1", "--json")
    assert json.loads(out)["status"] == "active"


async def test_bad_status_lists_the_allowed_ones(cli: Cli) -> None:
    code, _, err = await cli("racks", "list", "--status", "sleepy")
    assert code == 1
    assert "query.status" in err
    assert "pending" in err


# --- scenarios ----------------------------------------------------------------------------------


async def test_scenario_import_paths(cli: Cli, tmp_path: Path) -> None:
    path = write(tmp_path, "flow.yaml", SCENARIO)

    code, out, _ = await cli("scenario", "import", path, "--tag", "v1.0.0", "--dry-run")
    assert code == 0
    assert out.startswith("dry run: scenario payment-flow:v1.0.0 would be stored")

    code, out, _ = await cli("scenario", "import", path, "--tag", "v1.0.0")
    assert code == 0
    assert out.startswith("stored scenario payment-flow:v1.0.0 (sha256:")

    code, out, _ = await cli("scenario", "import", path, "--tag", "v1.0.0")
    assert code == 0
    assert "already stored with these exact bytes" in out

    changed = write(tmp_path, "flow2.yaml", SCENARIO + "# changed\n")
    code, out, err = await cli("scenario", "import", changed, "--tag", "v1.0.0")
    assert (code, out) == (1, "")
    assert "scenario payment-flow:v1.0.0 already holds sha256:" in err
    assert "Tags are immutable: import it under a new tag" in err

    code, _, err = await cli("scenario", "import", path, "--name", "other", "--tag", "v2")
    assert code == 1
    assert "body.name: the scenario is named 'payment-flow'" in err


async def test_invalid_scenario_lists_every_problem(cli: Cli, tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", INVALID)
    code, out, err = await cli("scenario", "import", path, "--tag", "v1")
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines[0].startswith("fluxrig: ")
    assert any(line.startswith("  - gears[0].config.rate (line 6): ") for line in lines)
    assert any(line.startswith("  - gears[1].type (line 8): ") for line in lines)


async def test_scenario_list_show_and_diff(hub_cli: Cli, tmp_path: Path) -> None:
    cli = hub_cli
    path = write(tmp_path, "flow.yaml", SCENARIO)
    assert (await cli("scenario", "import", path, "--tag", "v1.0.0"))[0] == 0

    code, out, _ = await cli("scenario", "list")
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["NAME", "TAG", "DIGEST", "SIZE", "CREATED"]
    name, tag, digest, size, *_ = row.split()
    assert (name, tag, size) == ("payment-flow", "v1.0.0", str(len(SCENARIO.encode())))
    assert digest.startswith("sha256:")
    assert len(digest) == 19

    code, out, _ = await cli("scenario", "list", "--name", "nothing-here")
    assert (code, out) == (0, "no scenarios stored under the name nothing-here\n")

    code, out, _ = await cli("scenario", "show", "payment-flow:v1.0.0")
    assert (code, out) == (0, SCENARIO)
    code, out, _ = await cli("scenario", "show", "payment-flow", "--meta")
    assert "tag:      v1.0.0" in out
    assert "digest:   sha256:" in out
    code, out, _ = await cli("scenario", "show", "payment-flow:v1.0.0", "--json")
    assert json.loads(out)["content"] == SCENARIO

    code, out, err = await cli("scenario", "show", "payment-flow:v9")
    assert code == 1
    assert err == "fluxrig: not found: no scenario payment-flow:v9 in the store; its tags: v1.0.0\n"

    edited = write(tmp_path, "edited.yaml", SCENARIO.replace("count: 1", "count: 5"))
    code, out, _ = await cli("scenario", "diff", edited, "--against", "payment-flow:v1.0.0")
    assert code == 0
    assert out.startswith("--- payment-flow:v1.0.0 (mixer)\n+++ ")
    assert "\n-    config: {rate: 0, count: 1}\n+    config: {rate: 0, count: 5}\n" in out

    code, out, _ = await cli("scenario", "diff", path, "--against", "payment-flow:v1.0.0")
    assert code == 0
    assert out.startswith("no differences")

    code, out, err = await cli("scenario", "diff", path)  # nothing is active yet
    assert (code, out) == (1, "")
    assert err == "fluxrig: no scenario is active; use --against REF\n"


async def test_toml_form_is_sent_as_yaml(cli: Cli, tmp_path: Path) -> None:
    path = write(tmp_path, "pay.toml", TOML_FORM)
    code, out, err = await cli("scenario", "import", path, "--tag", "v1")
    assert code == 0, err
    assert "fluxrig.toml form" in err
    assert out.startswith("stored scenario pay:v1")
    code, out, _ = await cli("scenario", "show", "pay:v1")
    assert "type: generator" in out


def test_local_validate_sits_beside_the_remote_actions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "flow.yaml", SCENARIO)
    assert main(["scenario", "validate", path]) == 0
    assert "scenario 'payment-flow' is valid" in capsys.readouterr().out


# --- activation ---------------------------------------------------------------------------------


async def test_activate_active_history_and_diff_against_active(
    hub_cli: Cli, fake_rack: MakeRack, tmp_path: Path
) -> None:
    cli = hub_cli
    code, out, _ = await cli("scenario", "active")
    assert code == 0
    assert out.splitlines() == [
        "no scenario is active (fluxrig scenario activate REF)",
        "no rack was pushed a scenario yet",
    ]
    assert await cli("scenario", "history") == (0, "no activations yet\n", "")
    path = write(tmp_path, "flow.yaml", SCENARIO)
    for tag, file in (("v1.0.0", path), ("v2.0.0", write(tmp_path, "v2.yaml", SCENARIO_V2))):
        assert (await cli("scenario", "import", file, "--tag", tag))[0] == 0
    edge = await fake_rack("edge-1", applies("edge-1"))
    digest = digest_of(SCENARIO.encode())

    code, out, err = await cli("scenario", "activate", "payment-flow:v1.0.0")
    assert (code, err) == (0, "")
    first, header, row = out.splitlines()
    assert first == f"activated payment-flow:v1.0.0 (activation 1, {digest[:19]})"
    assert header.split() == ["RACK", "STATE", "REPORT"]
    assert row.split() == ["edge-1", "applied", "started", "2", "gears"]

    code, out, _ = await cli("scenario", "active")
    assert code == 0
    first, header, row = out.splitlines()
    assert first.startswith(f"active: payment-flow:v1.0.0 ({digest[:19]}, activation 1, since 2")
    assert header.split() == ["RACK", "DIGEST", "SINCE", "APPLIED", "LAST", "PUSH"]
    rack, short, _day, _time, applied, last = row.split()
    assert (rack, short, applied, last) == ("edge-1", digest[:19], "yes", "applied")

    edge.answer = fails("edge-1", "port 9000 in use")
    code, out, err = await cli("scenario", "activate", "payment-flow:v2.0.0")
    assert (code, out) == (1, "")
    assert err.startswith("fluxrig: activation of payment-flow:v2.0.0 failed: rack 'edge-1'")
    assert "  - racks.edge-1: failed: port 9000 in use\n" in err

    code, out, _ = await cli("scenario", "active")  # still on v1; the refusal is shown
    row = out.splitlines()[2]
    assert row.split()[:2] == ["edge-1", digest[:19]]
    assert row.endswith(" yes      failed: port 9000 in use")

    code, out, _ = await cli("scenario", "history")
    assert code == 0
    header, failed, active = out.splitlines()
    assert header.split() == ["ID", "STATE", "REF", "DIGEST", "REQUESTED", "ERROR"]
    assert failed.split()[:3] == ["2", "failed", "payment-flow:v2.0.0"]
    assert failed.endswith("  rack 'edge-1' could not apply it: port 9000 in use")
    assert active.split()[:3] == ["1", "active", "payment-flow:v1.0.0"]
    assert active.endswith(" -")
    code, out, _ = await cli("scenario", "history", "--limit", "1", "--json")
    assert [a["id"] for a in json.loads(out)["activations"]] == [2]
    code, _, err = await cli("scenario", "history", "--limit", "0")
    assert code == 1
    assert "query.limit" in err

    edited = write(tmp_path, "edited.yaml", SCENARIO.replace("count: 1", "count: 5"))
    code, out, _ = await cli("scenario", "diff", edited)  # against the active one (v1)
    assert code == 0
    assert out.startswith(f"--- active payment-flow:v1.0.0 (mixer)\n+++ {edited}\n")
    assert "\n+    config: {rate: 0, count: 5}\n" in out
    code, out, _ = await cli("scenario", "diff", path)
    assert out == f"no differences: {path} matches scenario active payment-flow:v1.0.0\n"
    code, out, _ = await cli("scenario", "diff", path, "--json")
    assert json.loads(out) == {
        "against": "active payment-flow:v1.0.0",
        "digest": digest,
        "diff": "",
    }


async def test_activate_refusals_and_json(hub_cli: Cli, tmp_path: Path) -> None:
    cli = hub_cli
    path = write(tmp_path, "flow.yaml", SCENARIO.replace("gears:", "spec: nope:1.0.0\ngears:"))
    assert (await cli("scenario", "import", path, "--tag", "v1"))[0] == 0
    code, out, err = await cli("scenario", "activate", "payment-flow:v1")
    assert (code, out) == (1, "")
    assert "  - spec: spec 'nope:1.0.0' is not in the store; import it first\n" in err
    code, _, err = await cli("scenario", "activate", "payment-flow:v9")
    assert code == 1
    assert err.startswith("fluxrig: not found: no scenario payment-flow:v9")

    path = write(tmp_path, "ok.yaml", SCENARIO)
    assert (await cli("scenario", "import", path, "--tag", "v2"))[0] == 0
    code, out, _ = await cli("scenario", "activate", "payment-flow:v2", "--json")
    assert code == 0
    answer = json.loads(out)
    assert (answer["activation"]["state"], answer["racks"]) == ("active", [])
    code, out, _ = await cli("scenario", "activate", "payment-flow:v2")
    assert out.splitlines()[1] == (
        "no rack is active yet: each rack gets it once it is adopted and says hello"
    )
    code, out, _ = await cli("scenario", "active", "--json")
    assert json.loads(out)["active"]["id"] == 3
    with pytest.raises(SystemExit) as usage:
        await cli("scenario", "activate", "payment-flow:v2", "--timeout", "0")
    assert usage.value.code == 2


# --- specs and gears ----------------------------------------------------------------------------


async def test_spec_import_list_show(cli: Cli, tmp_path: Path) -> None:
    text = "field 2: pan, LLVAR n..19\n"
    path = write(tmp_path, "iso.spec", text)
    code, out, _ = await cli("spec", "import", path, "--name", "iso8583", "--tag", "v1")
    assert code == 0
    assert out.startswith("stored spec iso8583:v1 (sha256:")
    code, out, _ = await cli("spec", "list")
    assert code == 0
    assert out.splitlines()[1].split()[:2] == ["iso8583", "v1"]
    code, out, _ = await cli("spec", "show", "iso8583:v1")
    assert (code, out) == (0, text)
    with pytest.raises(SystemExit) as usage:  # argparse: --name is required for a spec
        await cli("spec", "import", path, "--tag", "v1")
    assert usage.value.code == 2


async def test_gears_list_remote(cli: Cli) -> None:
    code, out, _ = await cli("gears", "list", "--remote")
    assert code == 0
    assert out.splitlines()[0].split() == ["TYPE", "IN", "OUT", "SUMMARY"]
    assert any(line.startswith("generator ") for line in out.splitlines())


# --- connection and auth ------------------------------------------------------------------------


async def test_wrong_or_missing_token(cli: Cli) -> None:
    code, out, err = await cli("racks", "list", token="not-the-token-at-all")
    assert (code, out) == (1, "")
    assert err == (
        "fluxrig: the mixer refused the API token (set --api-token or FLUXRIG_API_TOKEN)\n"
    )
    assert "not-the-token" not in err
    code, _, err = await cli("racks", "list", token=None)
    assert code == 1
    assert "needs an API token" in err


async def test_environment_gives_url_and_token(
    api_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUXRIG_API_URL", api_url + "/")
    monkeypatch.setenv("FLUXRIG_API_TOKEN", TOKEN)
    assert await asyncio.to_thread(main, ["racks", "list"]) == 0
    assert capsys.readouterr().out == "no racks\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_mixer_not_running(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["racks", "list", "--api-url", url]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"fluxrig: cannot reach the mixer API at {url}: connection refused; is fluxrig-mixer "
        "running? (--api-url / FLUXRIG_API_URL)\n"
    )


def test_client_errors() -> None:
    with pytest.raises(ApiError, match="must start with http"):
        ApiClient("file:///etc/passwd")
    client = ApiClient("http://127.0.0.1:1/api/v1/", "secret-token")
    assert client.base_url == "http://127.0.0.1:1"
    assert "secret-token" not in repr(client)


async def test_subprocess_without_mixer_dependencies(api_url: str, ctx: ApiContext) -> None:
    """`fluxrig racks list` as its own process where aiohttp, duckdb and grpc cannot be
    imported (as in the rack's base install): it still works."""
    await asyncio.to_thread(ctx.registry.hello, "edge-1")
    code = (
        "import sys; sys.modules.update(dict.fromkeys(('aiohttp', 'duckdb', 'grpc'))); "
        "from rack.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {**os.environ, "FLUXRIG_API_URL": api_url, "FLUXRIG_API_TOKEN": TOKEN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "racks", "list",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert "edge-1" in out.decode()


# --- the whole mixer ----------------------------------------------------------------------------


async def test_against_a_real_mixer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.upper().startswith("FLUXRIG_") and key.upper() != "FLUXRIG_NATS_SERVER":
            monkeypatch.delenv(key)
    settings: dict[str, Any] = {
        "mixer": {"state_dir": tmp_path / "state"},
        "hub": {"port": 0, "leafnode_port": 0},
        "api": {"port": 0, "grpc_port": 0, "auth_token": TOKEN},
        "telemetry": {"grpc_port": 0, "http_port": 0},
        "enrollment": {"bootstrap_token": BOOTSTRAP},
    }
    async with Mixer(MixerSettings.model_validate(settings)) as mixer:
        assert mixer.api_url is not None
        await asyncio.to_thread(mixer.registry.hello, "edge-1")
        cli = Cli(mixer.api_url, capsys)
        assert (await cli("racks", "adopt", "edge-1"))[0] == 0
        code, out, _ = await cli("racks", "list")
        assert code == 0
        assert "active" in out
        path = write(tmp_path, "flow.yaml", SCENARIO)
        code, out, _ = await cli("scenario", "import", path, "--tag", "v1.0.0")
        assert code == 0
        assert out.startswith("stored scenario payment-flow:v1.0.0")
