"""The `Emitter` the runtime gives each gear: routes a port's messages to that port's wires.

Fan-out: a port wired to several inputs sends each one its own copy. An output port with no wire
drops the message and counts it (`dropped`), which is how a gear's unused outputs behave.
The routing table can be swapped while the gear runs (`rewire`), so a wiring change during a
reload does not restart the gear.

Live taps (`rack.tap`) see a port's messages when `taps` names that port: each gets a snapshot
offered without waiting (`Tap.offer`). `taps` is None while no tap listens to this gear, so the
hot path pays one attribute check for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from rack.gear.base import DEFAULT_OUT
from rack.gear.context import GearStats
from rack.model.fluxmsg import FluxMsg
from rack.wires.base import DurableOutlet, Outlet

if TYPE_CHECKING:
    from rack.tap.tap import Tap

Routes = Mapping[str, tuple[Outlet, ...]]


class Router:
    """`durable` is True when some output goes to a durable (standard) wire (read-only: set by
    `rewire`; a plain attribute because the gear's runner reads it once per message).
    `taps`: port → the live taps listening there, None when there are none (set by
    `rack.tap.TapRegistry`)."""

    __slots__ = ("_durable", "_routes", "durable", "gear", "stats", "taps")

    def __init__(self, gear: str, routes: Routes, stats: GearStats) -> None:
        self.gear = gear
        self.stats = stats
        self._routes: dict[str, tuple[Outlet, ...]] = {}
        self._durable: tuple[DurableOutlet, ...] = ()
        self.durable = False
        self.taps: dict[str, tuple[Tap, ...]] | None = None
        self.rewire(routes)

    def rewire(self, routes: Routes) -> None:
        self._routes = dict(routes)
        durable = {o for outs in self._routes.values() for o in outs if getattr(o, "durable", 0)}
        self._durable = tuple(durable)  # type: ignore[arg-type]
        self.durable = bool(self._durable)

    async def flush(self) -> None:
        """Wait until everything routed to durable wires so far is stored."""
        for outlet in self._durable:
            await outlet.flush()

    def is_wired(self, port: str) -> bool:
        return bool(self._routes.get(port))

    def __call__(self, msg: FluxMsg, port: str = DEFAULT_OUT) -> bool:
        outlets = self._routes.get(port)
        msg.add_hop(self.gear, port)
        if not outlets:
            self.stats.dropped += 1
            return True
        self.stats.msgs_out += 1
        if self.taps is not None:
            for tap in self.taps.get(port, ()):
                tap.offer(msg)
        if len(outlets) == 1:
            return outlets[0].put(msg)
        room = True
        for i, outlet in enumerate(outlets):
            room = outlet.put(msg if i == 0 else msg.copy()) and room
        return room

    async def send(self, msg: FluxMsg, port: str = DEFAULT_OUT) -> None:
        for outlet in self._routes.get(port, ()):
            await outlet.wait_room()
        self(msg, port)

    async def ready(self) -> None:
        for outlets in list(self._routes.values()):
            for outlet in outlets:
                await outlet.wait_room()
