"""The rack's side of the Snake: its embedded nats-server, a leaf node of the mixer's hub.

    snake = Snake(settings, identity)
    async with snake:                       # the local nats-server runs (JetStream domain = name)
        snake.url                           # what the rack's link and standard wires connect to
        await snake.open("tls://mixer:7422", cert_pem, ca_pem)   # the certificate arrived
        await snake.wait_hub(True)          # the leaf connection to the hub is up

Outbound only: the rack dials the hub's leaf port over mTLS with its certificate (`rack.crt`,
issued by the cluster CA for `rack.key`) and checks the hub's certificate against `ca.crt`. The
hub maps the certificate to a NATS user allowed only this rack's subjects. nats-server retries
the leaf connection every `leaf_reconnect` seconds by itself while the hub is away; the local
server, its JetStream and everything connected to it keep working meanwhile (Sovereign
Continuity). The hub's leaf URL is kept in `<state_dir>/snake.url`, so a rack restarted while the
mixer is down reopens its Snake as soon as the hub is back.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import urlsplit

from rack.errors import NatsServerError
from rack.files import write_atomic
from rack.lifecycle import Service
from rack.link.identity import RackIdentity
from rack.natsd import LeafRemote, NatsServer, NatsServerConfig, TlsFiles
from rack.settings import RackSettings

__all__ = ["SNAKE_URL_FILE", "Snake", "leaf_url"]

log = logging.getLogger("fluxrig.snake")

SNAKE_URL_FILE = "snake.url"
NATS_URL_FILE = "nats.url"  # read by `fluxrig dlq` (rack.runtime.standard)


def leaf_url(mixer_url: str, port: int) -> str:
    """The hub's leaf URL: the host the rack reaches the mixer at, the leaf port, TLS."""
    host = urlsplit(mixer_url).hostname or "127.0.0.1"
    return f"tls://[{host}]:{port}" if ":" in host else f"tls://{host}:{port}"


class Snake(Service):
    """The embedded nats-server and its leaf connection; `aclose()` is idempotent."""

    def __init__(self, settings: RackSettings, identity: RackIdentity) -> None:
        self.settings = settings
        self.identity = identity
        self.server: NatsServer | None = None
        self.hub_url: str | None = None
        self._loaded: bytes | None = None  # the certificate the leaf was configured with

    @property
    def directory(self) -> Path:
        return self.identity.directory

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError("the Snake is not started")
        return self.server.url

    @property
    def is_open(self) -> bool:
        """Whether the leaf remote is configured (the rack holds a certificate)."""
        return self.server is not None and bool(self.server.config.leaf_remotes)

    @property
    def hub_up(self) -> bool:
        return self.server is not None and self.server.leaf_connected

    async def wait_hub(self, up: bool) -> None:
        assert self.server is not None
        await self.server.wait_leaf(up)

    async def start(self) -> None:
        if self.server is not None:
            raise RuntimeError("the Snake is already started")
        self.hub_url = await asyncio.to_thread(self._stored_url)
        config = self._config()
        server = NatsServer(config)
        await server.start()
        self.server = server
        await asyncio.to_thread(
            write_atomic, self.directory / NATS_URL_FILE, f"{server.url}\n".encode(), mode=0o644
        )
        if self.is_open:
            log.info("Snake: leaf node of the hub at %s (local NATS %s)", self.hub_url, server.url)
        else:
            log.info("local NATS %s; the Snake opens once the mixer certifies us", server.url)

    async def open(self, hub_url: str, cert_pem: str, ca_pem: str) -> bool:
        """Keep the certificate and connect the local server to the hub (a config reload: the
        server, its clients and JetStream stay up). Returns whether anything changed; raises
        `PassportError` for a certificate that is not this rack's."""
        changed = await asyncio.to_thread(self.identity.store_certificate, cert_pem, ca_pem)
        if hub_url != self.hub_url:
            await asyncio.to_thread(
                write_atomic, self.directory / SNAKE_URL_FILE, f"{hub_url}\n".encode(), mode=0o644
            )
            self.hub_url, changed = hub_url, True
        if self.server is not None and (changed or not self.is_open):
            await self.server.reload(self._config())  # nats-server re-reads the certificate too
            log.info("Snake opened: leaf node of the hub at %s", hub_url)
            return True
        return changed

    async def renewed(self, cert_pem: bytes) -> None:
        """A passport brought a (possibly renewed) certificate: make the leaf use it."""
        if self.server is None or not self.is_open or cert_pem == self._loaded:
            return
        self._loaded = cert_pem
        try:
            await self.server.reload(self._config())
        except NatsServerError as exc:
            log.error("the Snake keeps its previous certificate: %s", exc)

    async def close_hub(self) -> None:
        """The kill switch: drop the leaf remote (the local server stays for the rack)."""
        self.hub_url = None
        await asyncio.to_thread((self.directory / SNAKE_URL_FILE).unlink, missing_ok=True)
        if self.server is not None and self.is_open:
            await self.server.reload(self._config())

    async def aclose(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.aclose()

    def _stored_url(self) -> str | None:
        try:
            text = (self.directory / SNAKE_URL_FILE).read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return text or None

    def _config(self) -> NatsServerConfig:
        remotes = []
        if self.hub_url is not None and self.identity.certified:
            self._loaded = self.identity.cert_path.read_bytes()
            tls = TlsFiles(
                cert=self.identity.cert_path, key=self.identity.key_path, ca=self.identity.ca_path
            )
            remotes.append(LeafRemote(url=self.hub_url, tls=tls))
        return NatsServerConfig(
            host=self.settings.nats_host,
            port=self.settings.nats_port,  # as at start: a reload cannot change it
            store_dir=self.directory / "jetstream",
            server_name=self.identity.name,
            domain=self.identity.name,
            leaf_remotes=remotes,
        )
