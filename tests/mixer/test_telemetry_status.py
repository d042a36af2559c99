"""The telemetry hub's own health — `TelemetryHub.status()`, `GET /api/v1/telemetry/status`,
`TelemetryService.GetStatus`, `fluxrig telemetry status` — on the assembled mixer fed by the real
OpenTelemetry SDK, over real HTTP and real gRPC: what was fed is counted written, a full write
queue counts refusals, an archive run counts partitions, forwarding shows no credential."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from fluxrig.v1 import telemetry_pb2, telemetry_pb2_grpc

from mixer.api.errors import ServiceUnavailableError
from mixer.api.http import API_PREFIX, ApiContext
from mixer.api.http.telemetry import DISABLED, NOT_RUNNING, hub_of
from mixer.api.http.telemetry_models import TelemetryStatus
from mixer.app import Mixer
from mixer.settings import MixerSettings
from mixer.telemetry import TelemetryHub
from mixer.telemetry.status import redact
from rack.cli import main
from tests.mixer.documents import TOKEN
from tests.mixer.telemetry.conftest import PROTOBUF, spans_request, until
from tests.mixer.telemetry.conftest import settings as hub_settings
from tests.mixer.telemetry_feed import READ, Fed, clean_environment, fed_mixer, feed
from tests.mixer.telemetry_feed import settings as mixer_settings

STATUS = f"{API_PREFIX}/telemetry/status"
FED = {"spans": 6, "metric_points": 4, "logs": 3}  # what `feed` sends, per table
NOTHING = {"spans": 0, "metric_points": 0, "logs": 0}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_environment(monkeypatch)


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[tuple[Mixer, Fed]]:
    async with fed_mixer(tmp_path) as started:
        yield started


def with_telemetry(state: Path, **overrides: Any) -> MixerSettings:
    """The feed's mixer settings with `[telemetry]` overrides."""
    base = mixer_settings(state)
    data = base.model_dump()
    data["telemetry"] = {**data["telemetry"], **overrides}
    return MixerSettings.model_validate(data)


async def get_status(mixer: Mixer, token: str | None = READ) -> tuple[int, Any]:
    assert mixer.api_url is not None
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{mixer.api_url}{STATUS}", headers=headers) as response,
    ):
        return response.status, await response.json()


async def ok_status(mixer: Mixer) -> dict[str, Any]:
    status, body = await get_status(mixer)
    assert status == 200, body
    TelemetryStatus.model_validate(body)  # the schema the document declares
    answer: dict[str, Any] = body
    return answer


# --- REST -----------------------------------------------------------------------------------------


async def test_status_counts_what_was_fed(fed: tuple[Mixer, Fed]) -> None:
    mixer, _ = fed
    hub = mixer.telemetry
    assert hub is not None
    body = await ok_status(mixer)
    assert (body["enabled"], body["running"]) == (True, True)
    assert body["receivers"] == {"host": "127.0.0.1", "grpc_port": hub.grpc_port,
                                 "http_port": hub.http_port}  # fmt: skip
    assert body["intake"]["received_rows"] == sum(FED.values())
    assert (body["intake"]["refused_requests"], body["intake"]["queued_rows"]) == (0, 0)
    assert body["intake"]["max_rows"] == hub.settings.queue_rows
    writer = body["writer"]
    assert writer["written_rows"] == FED
    assert (writer["failed_rows"], writer["retries"], writer["reopens"]) == (0, 0, 0)
    assert writer["last_error"] is None
    assert (body["live_rows"], body["live_rows_error"]) == (FED, None)
    assert body["archive"] == {"retention_hours": 168, "partitions": NOTHING, "bytes": 0,
                               "oldest_hour": None, "newest_hour": None}  # fmt: skip
    assert body["forwarding"] is None
    assert body["queries"] == {"busy": 0, "stopping": 0, "max_concurrent": 4, "timeout": 10.0}


async def test_the_read_token_may_see_the_status_and_no_token_may_not(
    fed: tuple[Mixer, Fed],
) -> None:
    mixer, _ = fed
    for token in (READ, TOKEN):
        status, body = await get_status(mixer, token)
        assert status == 200, body
    for token in (None, "not-a-token-of-this-mixer"):
        status, body = await get_status(mixer, token)
        assert (status, body["error"]["code"]) == (401, "unauthenticated")
    assert mixer.api_url is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{mixer.api_url}{API_PREFIX}/openapi.json") as response,
    ):
        document = await response.json()
    responses = document["paths"][STATUS]["get"]["responses"]
    assert {"200", "401", "503"} <= set(responses)
    assert "403" not in responses  # a read


async def test_a_full_write_queue_counts_refused_requests(tmp_path: Path) -> None:
    config = with_telemetry(tmp_path / "mixer", queue_rows=2, batch_rows=1)
    async with Mixer(config) as mixer, aiohttp.ClientSession() as http:
        hub = mixer.telemetry
        assert hub is not None
        target = f"http://127.0.0.1:{hub.http_port}/v1/traces"
        now = datetime.now(UTC)
        gate = threading.Event()
        blocked = hub.store.submit(lambda conn: gate.wait(30))  # the writer is busy
        try:
            for rows, expected in ((2, 200), (1, 503), (1, 503)):  # 2 rows fill the queue
                body = spans_request(*[now] * rows).SerializeToString()
                async with http.post(target, data=body, headers=PROTOBUF) as response:
                    assert response.status == expected
            waiting = await ok_status(mixer)
            assert waiting["intake"]["refused_requests"] == 2
            assert (waiting["intake"]["queued_rows"], waiting["intake"]["received_rows"]) == (2, 2)
            assert waiting["writer"]["written_rows"] == NOTHING
        finally:
            gate.set()
        assert blocked.result(timeout=10) is True
        await hub.flush()
        written = await ok_status(mixer)
        assert written["intake"]["refused_requests"] == 2  # counted since the start
        assert written["intake"]["queued_rows"] == 0
        assert written["writer"]["written_rows"]["spans"] == 2
        assert written["live_rows"]["spans"] == 2


async def test_an_archive_run_is_counted_in_partitions(fed: tuple[Mixer, Fed]) -> None:
    mixer, _ = fed
    hub = mixer.telemetry
    assert hub is not None
    files = await hub.archive_now(now=datetime.now(UTC) + timedelta(days=1))  # every hour closed
    assert files
    partitions: dict[str, set[Path]] = {table: set() for table in FED}
    for file in files:
        partitions[file.parents[2].name].add(file.parent)
    hours = [
        datetime.strptime(f"{p.parent.name} {p.name}", "date=%Y-%m-%d hour=%H").replace(tzinfo=UTC)
        for found in partitions.values()
        for p in found
    ]

    body = await ok_status(mixer)

    archive = body["archive"]
    assert archive["partitions"] == {table: len(found) for table, found in partitions.items()}
    assert all(archive["partitions"].values())  # every table has archived rows
    assert archive["bytes"] == sum(file.stat().st_size for file in files)
    assert datetime.fromisoformat(archive["oldest_hour"]) == min(hours)
    assert datetime.fromisoformat(archive["newest_hour"]) == max(hours)
    assert body["live_rows"] == NOTHING  # moved to Parquet
    assert body["writer"]["written_rows"] == FED  # written once, whatever moved since


async def test_a_failed_write_is_retried_and_shown(fed: tuple[Mixer, Fed]) -> None:
    mixer, _ = fed
    hub = mixer.telemetry
    assert hub is not None
    before = datetime.now(UTC)
    # the writer's connection left in a transaction: its next BEGIN fails (DuckDB's own error),
    # the retry rolls it back and writes the batch
    await hub.store.call(lambda conn: conn.execute("BEGIN TRANSACTION"))
    await feed(hub)
    body = await ok_status(mixer)
    writer = body["writer"]
    assert writer["retries"] == 1
    assert writer["failed_rows"] == 0
    assert writer["written_rows"] == {table: 2 * rows for table, rows in FED.items()}
    last = writer["last_error"]
    assert last["message"].startswith("telemetry writes are failing")
    assert "cannot start a transaction within a transaction" in last["message"]
    assert datetime.fromisoformat(last["at"]) >= before - timedelta(seconds=1)


async def test_forwarding_is_counted_and_shown_without_credentials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fluxrig")
    async with TelemetryHub(hub_settings(), tmp_path / "upstream") as upstream:
        port = upstream.http_port
        endpoint = f"http://operator:hunter2@127.0.0.1:{port}"
        config = with_telemetry(
            tmp_path / "mixer",
            forward_endpoint=endpoint,
            forward_protocol="http/protobuf",
            forward_headers={"x-api-key": "s3cret-key"},
        )
        async with Mixer(config) as mixer:
            hub = mixer.telemetry
            assert hub is not None
            await feed(hub)
            await until(lambda: sum(upstream.written.values()) == sum(FED.values()))
            status, text = await raw_status(mixer)
    assert status == 200, text
    for secret in ("hunter2", "operator", "s3cret-key"):
        assert secret not in text
        assert secret not in caplog.text  # nor in the mixer's log ("telemetry forwarded to …")
    assert f"telemetry forwarded to http://***@127.0.0.1:{port}" in caplog.text
    forwarding = json.loads(text)["forwarding"]
    assert forwarding["endpoint"] == f"http://***@127.0.0.1:{port}"
    assert (forwarding["protocol"], forwarding["headers"]) == ("http/protobuf", ["x-api-key"])
    assert (forwarding["sent"], forwarding["dropped"], forwarding["failed"]) == (4, 0, 0)
    assert forwarding["queued_requests"] == 0


async def raw_status(mixer: Mixer) -> tuple[int, str]:
    assert mixer.api_url is not None
    headers = {"Authorization": f"Bearer {READ}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{mixer.api_url}{STATUS}", headers=headers) as response,
    ):
        return response.status, await response.text()


def test_redact_keeps_no_credential() -> None:
    assert redact("collector:4317") == "collector:4317"
    assert redact("key@collector:4317") == "collector:4317"
    assert redact("https://collector:4318") == "https://collector:4318"
    assert redact("https://u:p@collector:4318/otlp?token=t&x=") == (
        "https://***@collector:4318/otlp?token=%2A%2A%2A&x=%2A%2A%2A"
    )


async def test_the_status_of_a_closed_hub_keeps_its_counts(tmp_path: Path) -> None:
    hub = TelemetryHub(hub_settings(), tmp_path)
    async with hub:
        await feed(hub)
    status = await hub.status()
    assert (status.enabled, status.running) == (True, False)
    assert status.writer.written_rows == FED
    assert status.intake.received_rows == sum(FED.values())
    assert (status.receivers.grpc_port, status.receivers.http_port) == (None, None)
    assert status.live_rows is None
    assert status.live_rows_error == "the telemetry hub is not running"


# --- disabled -------------------------------------------------------------------------------------


async def test_a_disabled_hub_answers_503_unavailable_and_a_cli_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Mixer(mixer_settings(tmp_path / "m", telemetry=False)) as mixer:
        status, body = await get_status(mixer)
        assert (status, body["error"]["code"]) == (503, "unavailable")
        assert body["error"]["message"] == DISABLED
        assert mixer.grpc_target is not None
        async with grpc.aio.insecure_channel(mixer.grpc_target) as channel:
            stub = telemetry_pb2_grpc.TelemetryServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetStatus(telemetry_pb2.GetStatusRequest(), metadata=bearer(READ))
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "[telemetry] enabled = false" in (refused.value.details() or "")
        assert mixer.api_url is not None
        code, _, err = await cli(mixer.api_url, capsys, "telemetry", "status")
        assert code == 1
        assert "telemetry is not available" in err


# --- gRPC -----------------------------------------------------------------------------------------


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_grpc_answers_the_same_status(fed: tuple[Mixer, Fed]) -> None:
    mixer, _ = fed
    hub = mixer.telemetry
    assert hub is not None
    assert mixer.grpc_target is not None
    await hub.archive_now(now=datetime.now(UTC) + timedelta(days=1))
    rest = await ok_status(mixer)
    async with grpc.aio.insecure_channel(mixer.grpc_target) as channel:
        stub = telemetry_pb2_grpc.TelemetryServiceStub(channel)
        answer = await stub.GetStatus(telemetry_pb2.GetStatusRequest(), metadata=bearer(READ))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetStatus(telemetry_pb2.GetStatusRequest())
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert (answer.enabled, answer.running) == (True, True)
    assert (answer.receivers.grpc_port, answer.receivers.http_port) == (hub.grpc_port,
                                                                        hub.http_port)  # fmt: skip
    assert answer.intake.received_rows == rest["intake"]["received_rows"] == sum(FED.values())
    assert dict(answer.writer.written_rows) == FED
    assert not answer.writer.HasField("last_error")
    assert dict(answer.live_rows) == rest["live_rows"] == NOTHING
    assert dict(answer.archive.partitions) == rest["archive"]["partitions"]
    assert answer.archive.bytes == rest["archive"]["bytes"] > 0
    oldest = answer.archive.oldest_hour.ToDatetime(tzinfo=UTC)
    assert oldest == datetime.fromisoformat(rest["archive"]["oldest_hour"])
    assert not answer.HasField("forwarding")
    assert (answer.queries.max_concurrent, answer.queries.timeout_seconds) == (4, 10.0)


# --- CLI ------------------------------------------------------------------------------------------


async def cli(
    url: str, capsys: pytest.CaptureFixture[str], *argv: str, token: str = READ
) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, [*argv, "--api-url", url, "--api-token", token])
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_prints_the_status_or_its_json(
    fed: tuple[Mixer, Fed], capsys: pytest.CaptureFixture[str]
) -> None:
    mixer, _ = fed
    hub = mixer.telemetry
    assert hub is not None
    assert mixer.api_url is not None
    code, out, err = await cli(mixer.api_url, capsys, "telemetry", "status")
    assert code == 0, err
    lines = {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip()
             for line in out.splitlines()[:11] if line.strip()}  # fmt: skip
    assert lines["hub"] == (f"running; OTLP/gRPC 127.0.0.1:{hub.grpc_port}, "
                            f"OTLP/HTTP 127.0.0.1:{hub.http_port}")  # fmt: skip
    assert lines["received"] == "13 rows"
    assert lines["refused"].startswith("0 requests")
    assert lines["failed"] == "0 rows dropped"
    assert lines["last error"] == "-"
    assert lines["forwarding"] == "off"
    assert lines["queries"] == "0 running of 4 at most, timeout 10 s"
    table = [line.split() for line in out.split("\n\n", 1)[1].splitlines()]
    assert table == [["TABLE", "WRITTEN", "LIVE", "PARTITIONS"], ["spans", "6", "6", "0"],
                     ["metric_points", "4", "4", "0"], ["logs", "3", "3", "0"]]  # fmt: skip

    code, out, _ = await cli(mixer.api_url, capsys, "telemetry", "status", "--json", token=TOKEN)
    assert code == 0
    answer = json.loads(out)
    TelemetryStatus.model_validate(answer)
    assert answer["writer"]["written_rows"] == FED


def test_a_hub_not_running_is_503_not_running(ctx: ApiContext, tmp_path: Path) -> None:
    stopped = dataclasses.replace(ctx, telemetry=TelemetryHub(hub_settings(), tmp_path))
    with pytest.raises(ServiceUnavailableError) as refused:
        hub_of(stopped)
    assert str(refused.value) == NOT_RUNNING
