"""The rack's side of `standard` wires: a NATS connection (its own embedded nats-server, or an
existing one via `nats_url`), the scenario's JetStream streams, one outlet per producing port and
one durable consumer (inlet) per wire.

Cross-rack wires (`Blueprint.outbound` / `inbound`, docs/wires.md) add one consumer each on this
rack: the sending end forwards what the source port stored here to the target's rack; the
receiving end feeds the target gear like a local wire. Both are provisioned, rebound and deleted
with the scenario exactly as local wires are.

The embedded server is leaf-node ready: JetStream domain = rack name, store under
`<state_dir>/jetstream`; its URL is written to `<state_dir>/nats.url` for `fluxrig dlq`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from rack.errors import FluxError
from rack.model.fluxmsg import FluxMsg
from rack.model.scenario import Blueprint, CrossWire, Endpoint, WirePlan
from rack.natsd import NatsServer, NatsServerConfig
from rack.settings import RackSettings
from rack.wires.base import Outlet
from rack.wires.jetstream import Delivery, JetStreamInlet, JetStreamLink, WireRoute
from rack.wires.memory import Inbox

log = logging.getLogger("fluxrig.rack")

URL_FILE = "nats.url"


def read_nats_url(state_dir: Path) -> str | None:
    """The URL a running rack's embedded nats-server listens on (None if not recorded)."""
    try:
        return (state_dir / URL_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def resolve_nats_url(explicit: str | None, state_dir: Path, advice: str = "") -> str:
    """What a CLI talks to: `explicit` (--nats-url), else FLUXRIG_NATS_URL, else the URL a rack
    recorded in `state_dir`; FluxError otherwise (`advice` ends its message)."""
    if explicit:
        return explicit
    if env := os.environ.get("FLUXRIG_NATS_URL"):
        return env
    if url := read_nats_url(state_dir):
        return url
    raise FluxError(
        f"no NATS URL: pass --nats-url, set FLUXRIG_NATS_URL, or run where the rack's state dir "
        f"({state_dir}) holds nats.url{advice}"
    )


class StandardWires:
    """Owns the NATS side of one rack. `aclose()` is idempotent."""

    def __init__(self, settings: RackSettings, rack: str) -> None:
        self.settings = settings
        self.rack = rack
        self.server: NatsServer | None = None
        self.link: JetStreamLink | None = None
        self.scenario: str | None = None
        self._outlets: dict[Endpoint, Outlet] = {}
        self._inlets: dict[WireRoute, JetStreamInlet] = {}

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
        await self.link.ensure_streams(
            wires, {w: w.options for w in wires}, outbound=bp.outbound, inbound=bp.inbound
        )

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

    async def sync_inlets(
        self,
        wires: list[WirePlan],
        inboxes: dict[str, Inbox],
        *,
        outbound: tuple[CrossWire, ...] = (),
        inbound: tuple[CrossWire, ...] = (),
    ) -> None:
        """Consume exactly `wires` (those whose target runs here) and this rack's end of the
        cross-rack wires: open new, close removed (deleting the consumer of a wire gone)."""
        link = self.link
        assert link is not None
        wanted = {link.route(w): inboxes[w.target.gear] for w in wires}
        wanted |= {link.inbound_route(c): inboxes[c.wire.target.gear] for c in inbound}
        forwards = {link.outbound_route(c): c for c in outbound}
        kept = {route.durable for route in (*wanted, *forwards)}
        for route in [r for r in self._inlets if r not in wanted and r not in forwards]:
            self._inlets.pop(route)
            await link.close_inlet(route)  # hands back what it buffered
            if route.durable not in kept:
                # The wire is gone from the scenario: with interest retention its consumer would
                # hold every message of that port forever, so it is deleted with the wire.
                log.warning("wire %s removed: deleting its durable consumer", route.label)
                await link.delete_wire(route)
        for route, inbox in wanted.items():
            if route not in self._inlets:
                self._inlets[route] = await link.inlet(route, route.wire.options, _deliverer(inbox))
        for route, cross in forwards.items():
            if route not in self._inlets:
                self._inlets[route] = await link.forward(cross)

    def pending(self) -> dict[str, int]:
        """Per publishing port (`gear.port`): messages put and not yet stored by the stream.
        Safe to call from another thread (the telemetry's reader)."""
        return {
            str(source): getattr(outlet, "pending", 0)
            for source, outlet in list(self._outlets.items())
        }

    def stats(self) -> dict[str, Any]:
        """The link's counters, per wire consumed here included (`JetStreamLink.stats`)."""
        return self.link.stats() if self.link is not None else {}

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
