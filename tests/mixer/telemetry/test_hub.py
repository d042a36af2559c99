"""The hub's lifecycle: aclose flushes and is idempotent, data survives a restart, a disabled hub
opens nothing, a taken port is named; the settings refuse contradictions."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from pydantic import ValidationError

from mixer.errors import MixerError
from mixer.telemetry import TelemetryBusyError, TelemetryError, TelemetryHub, TelemetrySection
from tests.mixer.telemetry.conftest import PROTOBUF, settings, spans_request, url

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def test_aclose_flushes_the_queue_and_is_idempotent(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    hub = TelemetryHub(settings(flush_interval=600, batch_rows=10_000), tmp_path)
    await hub.start()
    try:
        body = spans_request(NOW, NOW, NOW).SerializeToString()
        async with http.post(url(hub, "traces"), data=body, headers=PROTOBUF) as response:
            assert response.status == 200
        assert hub.written["spans"] == 0  # waiting for a fuller batch or the flush interval
    finally:
        await hub.aclose()
    await hub.aclose()
    assert hub.written["spans"] == 3
    assert hub.received == 3
    with pytest.raises(TelemetryError, match="not started: no query"):
        hub.query  # noqa: B018
    with pytest.raises(TelemetryBusyError, match="not running"):
        await hub.ingest("traces", body, "protobuf")

    async with TelemetryHub(settings(), tmp_path) as reopened:  # same state dir: data kept
        assert len(await reopened.query.spans()) == 3


async def test_a_started_hub_refuses_a_second_start(hub: TelemetryHub) -> None:
    with pytest.raises(TelemetryError, match="already started"):
        await hub.start()
    assert (hub.store.directory / "telemetry.duckdb").is_file()


async def test_a_disabled_hub_opens_nothing(tmp_path: Path) -> None:
    async with TelemetryHub(settings(enabled=False), tmp_path) as hub:
        with pytest.raises(TelemetryError, match=r"disabled \(\[telemetry\] enabled = false\)"):
            hub.grpc_port  # noqa: B018
        assert hub.received == 0
    assert not (tmp_path / "telemetry").exists()


async def test_a_taken_port_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        hub = TelemetryHub(settings(http_port=port), tmp_path)
        with pytest.raises(MixerError, match=f"OTLP/HTTP receiver cannot listen on .*:{port}"):
            await hub.start()
    await hub.aclose()  # after a failed start: nothing left open, still idempotent
    async with TelemetryHub(settings(), tmp_path) as again:  # the database was released
        assert await again.query.spans() == []


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"queue_rows": 10, "batch_rows": 11}, "batch_rows (11) cannot exceed queue_rows (10)"),
        ({"grpc_port": 5000, "http_port": 5000}, "are both 5000"),
        ({"forward_endpoint": "collector:4318", "forward_protocol": "http/protobuf"},
         "needs http:// or https://"),
        ({"forward_endpoint": " "}, "forward_endpoint is empty"),
        ({"retention_hours": 0}, "retention_hours"),
        ({"unknown": 1}, "unknown"),
    ],
)  # fmt: skip
def test_settings_refuse_contradictions(values: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError, match=named.replace("(", r"\(").replace(")", r"\)")):
        TelemetrySection.model_validate(values)


def test_settings_defaults_are_the_otlp_ports() -> None:
    section = TelemetrySection()
    assert (section.grpc_port, section.http_port) == (4317, 4318)
    assert section.retention_hours == 7 * 24
    assert section.max_body_bytes == 4 * 1024 * 1024
    assert all(field.description for field in TelemetrySection.model_fields.values())
