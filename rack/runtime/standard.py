"""The rack's side of `standard` wires: a NATS connection (its own embedded nats-server, or an
existing one via `nats_url`), the scenario's JetStream streams, one outlet per producing port and
one durable consumer (inlet) per wire.

The embedded server is leaf-node ready: JetStream domain = rack name, store under
`<state_dir>/jetstream`; its URL is written to `<state_dir>/nats.url` for `fluxrig dlq`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rack.model.fluxmsg import FluxMsg
from rack.model.scenario import Blueprint, Endpoint, WirePlan
from rack.natsd import NatsServer, NatsServerConfig
from rack.settings import RackSettings
from rack.wires.base import Outlet
from rack.wires.jetstream import Delivery, JetStreamLink
from rack.wires.memory import Inbox

log = logging.getLogger("fluxrig.rack")

URL_FILE = "nats.url"


def read_nats_url(state_dir: Path) -> str | None:
    """The URL a running rack's embedded nats-server listens on (None if not recorded)."""
    try:
        return (state_dir / URL_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


class StandardWires:
    """Owns the NATS side of one rack. `aclose()` is idempotent."""

    def __init__(self, settings: RackSettings, rack: str) -> None:
        self.settings = settings
        self.rack = rack
        self.server: NatsServer | None = None
        self.link: JetStreamLink | None = None
        self.scenario: str | None = None
        self._outlets: dict[Endpoint, Outlet] = {}
        self._inlets: dict[WirePlan, Any] = {}

    @property
    def url(self) -> str:
        if self.settings.nats_url:
            return self.settings.nats_url
        assert self.server is not None
        return self.server.url

    async def ensure(self, bp: Blueprint) -> None:
        """Connect (starting the embedded server if needed) and provision the streams."""
        wires = [w for w in bp.wires if w.transport == "standard"]
        if self.link is not None and self.scenario != bp.name:
            await self._close_link()  # another scenario: its own streams and consumers
        if self.link is None:
            if not self.settings.nats_url and self.server is None:
                await self._start_server()
            self.link = await JetStreamLink.connect(
                self.url,
                rack=self.rack,
                scenario=bp.name,
                connect_timeout=self.settings.nats_connect_timeout,
            )
            self.scenario = bp.name
            log.info("standard wires of '%s' on %s", bp.name, self.url)
        await self.link.ensure_streams(wires, {w: w.options for w in wires})

    async def _start_server(self) -> None:
        state = self.settings.state_dir
        config = NatsServerConfig(
            host=self.settings.nats_host,
            port=self.settings.nats_port,
            store_dir=state / "jetstream",
            server_name=self.rack,
            domain=self.rack,
        )
        self.server = NatsServer(config)
        await self.server.start()
        state.mkdir(parents=True, exist_ok=True)
        (state / URL_FILE).write_text(self.server.url + "\n", encoding="utf-8")
        log.info("embedded nats-server ready on %s (store %s)", self.server.url, config.store_dir)

    def outlet(self, source: Endpoint) -> Outlet:
        """The publishing end for `source` (one per port, whatever the number of its wires)."""
        assert self.link is not None
        outlet = self._outlets.get(source)
        if outlet is None:
            outlet = self._outlets[source] = self.link.outlet(source)
        return outlet

    async def sync_inlets(self, wires: list[WirePlan], inboxes: dict[str, Inbox]) -> None:
        """Consume exactly `wires` (those whose target runs here): open new, close removed."""
        link = self.link
        assert link is not None
        wanted = set(wires)
        kept = {link.route(w).durable for w in wires}
        for wire in [w for w in self._inlets if w not in wanted]:
            self._inlets.pop(wire)
            await link.close_inlet(wire)  # hands back what it buffered
            if link.route(wire).durable not in kept:
                # The wire is gone from the scenario: with interest retention its consumer would
                # hold every message of that port forever, so it is deleted with the wire.
                log.warning(
                    "wire %s removed: deleting its durable consumer", link.route(wire).label
                )
                await link.delete_wire(wire)
        for wire in wires:
            if wire not in self._inlets:
                deliver = _deliverer(inboxes[wire.target.gear])
                self._inlets[wire] = await link.inlet(wire, wire.options, deliver)

    async def drain(self) -> None:
        """Stop receiving; flush every publish still waiting for its JetStream ack."""
        if self.link is not None:
            await self.link.drain()

    async def flush(self) -> None:
        if self.link is not None:
            await self.link.flush()

    async def _close_link(self) -> None:
        for inlet in self._inlets.values():
            await inlet.aclose()
        self._inlets.clear()
        self._outlets.clear()
        if self.link is not None:
            link, self.link = self.link, None
            await link.aclose()

    async def aclose(self) -> None:
        await self._close_link()
        if self.server is not None:
            server, self.server = self.server, None
            await server.aclose()


def _deliverer(inbox: Inbox) -> Any:
    async def deliver(port: str, msg: FluxMsg, delivery: Delivery) -> None:
        if not inbox.put(port, msg, delivery):
            await inbox.wait_room()  # back-pressure: JetStream holds the rest (max_ack_pending)

    return deliver
