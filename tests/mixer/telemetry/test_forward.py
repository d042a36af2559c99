"""Forwarding: a second hub as the upstream receives what the first accepted (gRPC and
http/protobuf); headers go along; a down upstream costs dropped requests, never refusals."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from mixer.telemetry import TelemetryHub
from mixer.telemetry.forward import Forwarder
from tests.mixer.telemetry.conftest import (
    JSON,
    PROTOBUF,
    logs_request,
    settings,
    spans_request,
    until,
    url,
)
from tests.mixer.telemetry.test_receivers import OTLP_JSON, TRACE_HEX

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[TelemetryHub]:
    async with TelemetryHub(settings(), tmp_path / "upstream") as hub:
        yield hub


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_upstream_receives_what_the_hub_accepted(
    tmp_path: Path, upstream: TelemetryHub, http: aiohttp.ClientSession, protocol: str
) -> None:
    endpoint = (
        f"127.0.0.1:{upstream.grpc_port}"
        if protocol == "grpc"
        else f"http://127.0.0.1:{upstream.http_port}"
    )
    config = settings(forward_endpoint=endpoint, forward_protocol=protocol)
    async with TelemetryHub(config, tmp_path / "edge") as hub:
        async with http.post(url(hub, "traces"), data=json.dumps(OTLP_JSON), headers=JSON) as r:
            assert r.status == 200  # OTLP/JSON in, protobuf forwarded
        body = logs_request(NOW, NOW).SerializeToString()
        async with http.post(url(hub, "logs"), data=body, headers=PROTOBUF) as r:
            assert r.status == 200
        await until(lambda: upstream.received == 3)
        assert hub.dropped_forward == 0
    await upstream.flush()
    (span,) = await upstream.query.spans(trace_id=TRACE_HEX)
    assert (span["name"], span["rack"], span["gear"]) == ("json-span", "r2", "codec")
    assert len(await upstream.query.logs(rack="edge-1")) == 2


async def test_headers_are_sent_upstream(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    seen: list[tuple[str, str | None, str | None]] = []

    async def collect(request: web.Request) -> web.Response:
        seen.append((request.path, request.headers.get("x-api-key"), request.content_type))
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/otlp/v1/traces", collect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        config = settings(
            forward_endpoint=f"http://127.0.0.1:{port}/otlp/",
            forward_protocol="http/protobuf",
            forward_headers={"x-api-key": "s3cret-key"},
        )
        assert "s3cret-key" not in repr(config)
        async with TelemetryHub(config, tmp_path) as hub:
            body = spans_request(NOW).SerializeToString()
            async with http.post(url(hub, "traces"), data=body, headers=PROTOBUF) as r:
                assert r.status == 200
            await until(lambda: len(seen) == 1)
        assert seen == [("/otlp/v1/traces", "s3cret-key", "application/x-protobuf")]
    finally:
        await runner.cleanup()


async def test_a_down_upstream_never_refuses_and_closing_does_not_hang(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    config = settings(forward_endpoint=f"127.0.0.1:{free_port()}")
    async with TelemetryHub(config, tmp_path) as hub:
        for _ in range(3):
            body = spans_request(NOW).SerializeToString()
            async with http.post(url(hub, "traces"), data=body, headers=PROTOBUF) as r:
                assert r.status == 200
        await hub.flush()
        assert hub.written["spans"] == 3
    assert hub.dropped_forward == 3  # never sent: dropped (and counted) at close


async def test_the_forward_queue_drops_the_oldest_beyond_its_bound() -> None:
    forwarder = Forwarder(f"127.0.0.1:{free_port()}", "grpc", max_bytes=1000, grace=0.1)
    await forwarder.start()
    try:
        for index in range(5):
            forwarder.push("traces", bytes([index]) * 400)
        assert forwarder.dropped == 3
        assert forwarder.pending == 2  # the newest two (800 bytes) are kept
    finally:
        await forwarder.aclose()
        await forwarder.aclose()  # idempotent
    assert forwarder.dropped == 5
    assert forwarder.sent == 0
