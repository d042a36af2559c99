"""Helpers of the tap API tests: a real Mixer (admin and read-only tokens) with a managed rack
running gen → sink through its Snake, and clients of its NDJSON tap stream."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp

from mixer.app import Mixer
from mixer.settings import MixerSettings
from rack.tap import Tap
from tests.mixer.documents import TOKEN
from tests.mixer.fleet import ManagedRack, managed, until

READ = "read-only-token-for-tests"
RACK = "edge-a"
WIRE = "gen.out → sink.in"


def scenario(gen: Mapping[str, Any]) -> str:
    config = json.dumps({"rate": 1000, **gen})
    return f"""\
meta: {{name: tapped, version: 1.0.0}}
racks: [{{name: {RACK}}}]
gears:
  - {{name: gen, type: generator, deploy: {RACK}, config: {config}}}
  - {{name: sink, type: sink, deploy: {RACK}}}
wires:
  - {{from: gen.out, to: sink.in, transport: memory}}
"""


def settings(state: Path, **api: Any) -> MixerSettings:
    return MixerSettings.model_validate(
        {
            "mixer": {"state_dir": state},
            "hub": {"port": 0, "leafnode_port": 0},
            "api": {"port": 0, "grpc_port": 0, "auth_token": TOKEN, "read_token": READ,
                    "insecure": True, **api},  # insecure: racks enroll without a token
            "telemetry": {"grpc_port": 0, "http_port": 0},
            "enrollment": {"heartbeat_interval": 0.1, "max_missed": 50},
        }
    )  # fmt: skip


@dataclass
class Fleet:
    mixer: Mixer
    edge: ManagedRack

    @property
    def url(self) -> str:
        assert self.mixer.api_url is not None
        return self.mixer.api_url

    @property
    def taps(self) -> Mapping[str, Tap]:
        """The taps running on the rack."""
        return self.edge.rack.taps.taps

    @property
    def sink(self) -> Any:
        return self.edge.rack.slots["sink"].gear

    def path(self, rack: str = RACK, **params: Any) -> str:
        return f"/api/v1/racks/{rack}/tap?{urlencode(params)}"


@asynccontextmanager
async def fleet(
    tmp_path: Path, gen: Mapping[str, Any] | None = None, **api: Any
) -> AsyncIterator[Fleet]:
    """A mixer (`[api]` overridden by `api`) and rack `edge-a` running gen → sink."""
    async with Mixer(settings(tmp_path / "m", **api)) as mixer:
        mixer.store.put("scenario", "tapped", "1.0.0", scenario(gen or {}).encode())
        await mixer.orchestrator.activate("tapped:1.0.0")
        async with managed(mixer.rack_url, RACK, tmp_path, snake=True) as edge:
            await until(lambda: edge.running({"gen", "sink"}), 20)
            yield Fleet(mixer, edge)


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def tap(
    f: Fleet, token: str = TOKEN, rack: str = RACK, **params: Any
) -> AsyncIterator[aiohttp.ClientResponse]:
    """GET the tap route (the answer, unread)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f.url + f.path(rack, **params), headers=bearer(token)) as resp,
    ):
        yield resp


async def next_line(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    async with asyncio.timeout(15):
        line = await resp.content.readline()
    assert line, "the stream ended"
    body: dict[str, Any] = json.loads(line)
    return body


async def read_all(resp: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    async with asyncio.timeout(15):
        text = await resp.text()
    return [json.loads(line) for line in text.splitlines()]


async def error_of(resp: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    error: dict[str, Any] = (await resp.json())["error"]
    return error


class SlowClient:
    """A raw HTTP/1.1 client with a tiny receive buffer that reads nothing until asked."""

    def __init__(self, url: str, path: str, token: str = TOKEN) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ).encode()
        self.writer: asyncio.StreamWriter | None = None
        self.reader: asyncio.StreamReader | None = None

    async def __aenter__(self) -> SlowClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (self.host, self.port))
        self.reader, self.writer = await asyncio.open_connection(sock=sock)
        self.writer.write(self.request)
        await self.writer.drain()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()

    async def lines(self) -> list[dict[str, Any]]:
        """Read the whole answer (until the mixer closes) and decode its chunked body."""
        assert self.reader is not None
        async with asyncio.timeout(30):
            data = await self.reader.read()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"transfer-encoding: chunked" in head.lower(), head
        text = bytearray()
        while body:
            size_line, _, rest = body.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            text += rest[:size]
            body = rest[size + 2 :]
        return [json.loads(line) for line in text.splitlines()]
