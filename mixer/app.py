"""The mixer's composition root: every resource of the control plane, opened and closed in order.

    async with Mixer(settings) as mixer:      # ready: hub, database, store, registry, REST API
        await stop.wait()
                                              # closed in reverse order, each one logged

Opened in this order (and closed in reverse) on one `AsyncExitStack`:

1. the state dir (`[mixer] state_dir`);
2. DuckDB at `<state_dir>/mixer.duckdb` (first, so a second mixer on the same state dir fails
   before binding any port), the CAS store (`<state_dir>/cas`), the rack registry and the
   activation log on it;
3. the startup scenario (`resolve_startup`): fatal errors stop the start here;
4. the embedded nats-server hub (JetStream, server name `mixer`, store `<state_dir>/hub`,
   leaf-node listener for the racks' Snakes unless disabled);
5. the orchestrator (`mixer.orchestrator`): resumes the last active scenario, or activates the
   startup one; pushes scenarios to racks and collects their acks;
6. enrollment (`mixer.enrollment`, its own connection to the hub): racks' hellos and
   heartbeats (each one lets the orchestrator push what a rack misses), status announcements on
   `fluxrig.rack.<name>.status`;
7. the background tasks (one TaskGroup): the heartbeat sweep marks racks `offline` (and
   enrollment tells them);
8. the local rack (`[mixer] local_rack`, the standard tier), a supervised child process;
9. the telemetry hub (`mixer.telemetry`, `[telemetry]`): OTLP receivers (gRPC, HTTP), DuckDB at
   `<state_dir>/telemetry/telemetry.duckdb`, hourly Parquet archive with retention;
10. the REST API (aiohttp) on `[api] host:port`, the gRPC API on `[api] host:grpc_port`.

Open and close a `Mixer` from the same task (`async with` does). `aclose()` is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TypeVar

import duckdb

from mixer.activations import ActivationLog
from mixer.api.grpc.watch import RackWatch
from mixer.api.http import ApiContext, TapAccess
from mixer.api.serve import load_tls, serve_grpc, serve_rest
from mixer.enrollment import Enrollment
from mixer.errors import MixerError
from mixer.local_rack import LocalRack, rack_command
from mixer.orchestrator import Orchestrator
from mixer.passports import PassportOffice
from mixer.pki import ClusterPki
from mixer.registry import RackRecord, RackStatus, Registry
from mixer.settings import MixerSettings
from mixer.snake import CrossGrant, CrossWireGrants, HubAccess
from mixer.startup import StartupChoice, resolve_startup
from mixer.store import CasStore
from mixer.telemetry.hub import TelemetryHub
from rack.gear.registry import GearRegistry
from rack.lifecycle import Service
from rack.link.protocol import KillSwitch, encode, kill_subject
from rack.model.passport import key_fingerprint
from rack.natsd import NatsServer

__all__ = ["DATABASE_FILE", "Mixer"]

log = logging.getLogger("fluxrig.mixer")

DATABASE_FILE = "mixer.duckdb"
OfflineHook = Callable[[Sequence[RackRecord]], object]
T = TypeVar("T")


class Mixer(Service):
    """The running control plane; `async with Mixer(settings)` starts it, leaving it closes all.

    After start: `nats_url` (the hub), `db` (DuckDB connection), `store` (CasStore), `registry`,
    `enrollment`, `gears`, `startup` (the resolved startup scenario), `api_url` (REST API), and
    `ready` is set.
    `on_offline` is called (on the event loop) with the racks each heartbeat sweep took offline.
    """

    def __init__(self, settings: MixerSettings, *, on_offline: OfflineHook | None = None) -> None:
        self.settings = settings
        self.ready = asyncio.Event()
        self.startup: StartupChoice | None = None
        self.api_url: str | None = None
        self.grpc_target: str | None = None  # host:port of the gRPC API once started
        self.local_rack: LocalRack | None = None  # `[mixer] local_rack`, once started
        self._on_offline = on_offline
        self._stack: AsyncExitStack | None = None
        self._stopping = asyncio.Event()
        self._hub: NatsServer | None = None
        self._db: duckdb.DuckDBPyConnection | None = None
        self._store: CasStore | None = None
        self._registry: Registry | None = None
        self._gears: GearRegistry | None = None
        self._enrollment: Enrollment | None = None
        self._activations: ActivationLog | None = None
        self._orchestrator: Orchestrator | None = None
        self._watch: RackWatch | None = None  # rack status changes, for gRPC WatchRacks
        self._passports: PassportOffice | None = None
        self._access: HubAccess | None = None  # the hub's users: who may use which subjects
        self.telemetry: TelemetryHub | None = None  # the OTLP hub, unless disabled
        self._cross: CrossWireGrants | None = None  # cross-rack subjects per scenario
        self.pki: ClusterPki | None = None  # the cluster CA and signing key, once started

    # -- the objects, once started --------------------------------------------------------------

    @property
    def nats_url(self) -> str:
        """The hub with the mixer's own credentials (every subject): for its services."""
        url = self._started(self._hub, "NATS hub").url
        return self._started(self._access, "hub access").internal_url(url)

    @property
    def rack_url(self) -> str:
        """The hub as racks see it: anonymous, enrollment hellos only until the Snake."""
        return self._started(self._hub, "NATS hub").url

    @property
    def access(self) -> HubAccess:
        return self._started(self._access, "hub access")

    @property
    def hub(self) -> NatsServer:
        return self._started(self._hub, "NATS hub")

    @property
    def db(self) -> duckdb.DuckDBPyConnection:
        return self._started(self._db, "database")

    @property
    def store(self) -> CasStore:
        return self._started(self._store, "CAS store")

    @property
    def registry(self) -> Registry:
        return self._started(self._registry, "registry")

    @property
    def enrollment(self) -> Enrollment:
        """Rack hellos and heartbeats; `await mixer.enrollment.notify(record)` announces a
        status changed outside enrollment (e.g. `registry.adopt`) to the rack."""
        return self._started(self._enrollment, "enrollment")

    @property
    def orchestrator(self) -> Orchestrator:
        """Scenario activation: `await mixer.orchestrator.activate("name:tag")`."""
        return self._started(self._orchestrator, "orchestrator")

    @property
    def passports(self) -> PassportOffice:
        """Signs active racks their passports and certificates."""
        return self._started(self._passports, "passport office")

    @property
    def gears(self) -> GearRegistry:
        return self._started(self._gears, "gear catalogue")

    @staticmethod
    def _started(value: T | None, what: str) -> T:
        if value is None:
            raise MixerError(f"the mixer is not started: no {what} yet")
        return value

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open everything (see the module doc); on failure close what was opened and raise."""
        if self._stack is not None:
            raise MixerError("the mixer is already started; aclose() it first")
        self._stack = stack = AsyncExitStack()
        self._stopping = asyncio.Event()
        try:
            await self._open(stack)
        except BaseException:
            await self.aclose()
            raise
        self.ready.set()
        log.info(
            "mixer ready: NATS hub %s, REST API %s, gRPC API %s, state dir %s",
            self.rack_url,
            self.api_url,
            self.grpc_target,
            self.settings.mixer.state_dir,
        )

    async def aclose(self) -> None:
        """Close every resource in reverse order of opening; idempotent."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        self.ready.clear()
        try:
            await stack.aclose()
        finally:
            self._hub = self._db = self._store = self._registry = None
            self._enrollment = None
            self._activations = self._orchestrator = None
            self._watch = self._passports = self.pki = None
            self.local_rack = None
            self.api_url = None
            self.grpc_target = None
            log.info("mixer closed")

    async def _open(self, stack: AsyncExitStack) -> None:
        cfg = self.settings
        state = cfg.mixer.state_dir
        await asyncio.to_thread(_make_dir, state)
        await self._open_database(stack, state)
        self._gears = gears = await asyncio.to_thread(GearRegistry.discover)
        await self._open_pki(stack)
        ref = cfg.mixer.startup_scenario
        self.startup = await asyncio.to_thread(resolve_startup, ref, self.store, gears)
        await self._start_hub(stack)
        await self._start_orchestrator(stack)
        assert self._watch is not None
        enrollment = Enrollment(
            self.nats_url,
            self.registry,
            cfg.enrollment,
            trusted=[cfg.mixer.local_rack] if cfg.mixer.local_rack else [],
            observers=[self.orchestrator, self.passports],
            on_status=self._watch.publish,
            certify=lambda record: self.access.certify(record, self._hub),
            revoked=self.passports.revoked_key,
        )
        await enrollment.start()
        stack.push_async_callback(enrollment.aclose)  # logs "enrollment closed" itself
        self._enrollment = enrollment
        stack.callback(log.info, "background tasks stopped")
        tasks = await stack.enter_async_context(asyncio.TaskGroup())
        stack.callback(self._stopping.set)  # runs before the TaskGroup exits: the tasks return
        tasks.create_task(self._sweep_heartbeats(), name="heartbeat-sweep")
        if cfg.mixer.local_rack:  # spawned before gRPC runs threads (its fork handlers warn)
            await self._start_local_rack(stack, cfg.mixer.local_rack)
        await self._start_telemetry(stack)
        context = self._api_context()
        api, tls = cfg.api, await asyncio.to_thread(load_tls, cfg.api, self.pki)
        self.api_url = await serve_rest(stack, api, context, tls)
        self.grpc_target = await serve_grpc(stack, api, context, self._watch, tls)

    async def _start_telemetry(self, stack: AsyncExitStack) -> None:
        """The OTLP hub (`[telemetry]`): receivers, its own DuckDB file, the Parquet archive."""
        settings = self.settings.telemetry
        if not settings.enabled:
            log.info("telemetry hub disabled ([telemetry] enabled = false)")
            return
        telemetry = TelemetryHub(settings, self.settings.mixer.state_dir)
        await telemetry.start()
        stack.push_async_callback(_aclosing, "telemetry hub", telemetry.aclose)
        self.telemetry = telemetry
        log.info(
            "telemetry hub: OTLP/gRPC on %s:%d, OTLP/HTTP on %s:%d",
            settings.host, telemetry.grpc_port, settings.host, telemetry.http_port,
        )  # fmt: skip

    async def _open_database(self, stack: AsyncExitStack, state: Path) -> None:
        path = state / DATABASE_FILE
        try:
            self._db = db = await asyncio.to_thread(duckdb.connect, str(path))
        except duckdb.Error as exc:
            raise MixerError(
                f"cannot open the mixer database {path}: {exc}; is another fluxrig-mixer "
                "running on the same state dir ([mixer] state_dir)?"
            ) from exc
        stack.callback(_closing, "database", db.close)
        self._store = store = await asyncio.to_thread(CasStore, state / "cas", db)
        stack.callback(_closing, "CAS store", store.close)
        self._registry = registry = await asyncio.to_thread(Registry, db)
        stack.callback(_closing, "registry", registry.close)
        self._watch = RackWatch(registry)
        self._activations = activations = await asyncio.to_thread(ActivationLog, db)
        stack.callback(_closing, "activation log", activations.close)

    async def _open_pki(self, stack: AsyncExitStack) -> None:
        """The cluster PKI (`<state_dir>/pki`) and the passport office that uses it."""
        hosts = _hub_hosts(self.settings.hub.host)
        pki = await asyncio.to_thread(ClusterPki.open, self.settings.mixer.state_dir / "pki",
                                      hub_hosts=hosts)  # fmt: skip
        log.info("cluster CA %s (signing key %s)", pki.fingerprint()[:16],
                 key_fingerprint(pki.signing_public_raw))  # fmt: skip
        self.pki = pki
        office = await asyncio.to_thread(
            PassportOffice, pki, self.store, self.gears, self.db, self.settings.enrollment,
            send=self._publish,
        )  # fmt: skip
        stack.callback(_closing, "passport office", office.close)
        self._passports = office

    async def _publish(self, subject: str, data: bytes) -> None:
        if self._enrollment is not None:
            await self._enrollment.publish(subject, data)

    async def _start_orchestrator(self, stack: AsyncExitStack) -> None:
        assert self._activations is not None
        orchestrator = Orchestrator(
            self.nats_url,
            self.store,
            self.registry,
            self.gears,
            self._activations,
            self.settings.orchestrator,
            announce=self._announce,
            on_change=self._scenarios_changed,
        )
        await orchestrator.start()
        stack.push_async_callback(orchestrator.aclose)
        self._orchestrator = orchestrator
        startup = self.startup
        if startup is not None and startup.ref is not None and startup.action != "resume":
            await orchestrator.activate_at_start(startup.ref)
        await self._scenarios_changed()  # the active scenario's cross-rack subjects

    async def _start_local_rack(self, stack: AsyncExitStack, name: str) -> None:
        """The standard tier: a rack child process, enrolled over the hub and adopted at hello
        (its name is trusted by enrollment); it runs the active scenario."""
        state = self.settings.mixer.state_dir / "racks" / name
        command = rack_command(sys.executable, self.rack_url, name, state)
        token = self.settings.enrollment.token
        env = {"FLUXRIG_NATS_PORT": "0"}  # its own nats-server (the Snake) on any free port
        if token is not None:
            env["FLUXRIG_BOOTSTRAP_TOKEN"] = token
        local = LocalRack(command, name=name, env=env)
        await local.start()
        stack.push_async_callback(local.aclose)  # logs "local rack NAME stopped" itself
        self.local_rack = local
        log.info("local rack %r started (pid %s), state in %s", name, local.pid, state)

    async def _announce(self, record: RackRecord) -> None:
        """Tell a rack its new status (once enrollment runs)."""
        if self._enrollment is not None:
            await self._enrollment.notify(record)

    async def _scenarios_changed(self) -> None:
        await self.access.refresh(self._hub)

    def _cross_grants(self) -> dict[str, CrossGrant]:
        """The cross-rack subjects of the scenarios in play: active, and being rolled out."""
        orchestrator = self._orchestrator
        if orchestrator is None:
            return {}
        if self._cross is None:
            self._cross = CrossWireGrants(self.gears)
        return self._cross.grants([orchestrator.desired, orchestrator.incoming])

    async def _rack_changed(self, record: RackRecord) -> None:
        """An operator changed a rack's status: tell it, push it the active scenario, and
        update who may use the hub (a retired rack is revoked: kill switch, certificates)."""
        if record.status is RackStatus.RETIRED:
            await self._revoke(record.name)
        await self.access.refresh(self._hub)
        await self._announce(record)
        if self._orchestrator is not None:
            await self._orchestrator.reconcile(record)

    async def _revoke(self, rack: str) -> None:
        """Kill switch on `flux.ctrl.<rack>.kill`, then revoke its certificates (the refresh
        that follows drops its hub users, which closes its Snake)."""
        if self._enrollment is not None:
            kill = encode(KillSwitch(reason="retired"))
            await self._enrollment.publish(kill_subject(rack), kill, flush=True)
        count = await asyncio.to_thread(self.passports.revoke, rack)
        log.warning("rack %r revoked: kill switch sent, %d certificate(s) revoked", rack, count)

    async def _start_hub(self, stack: AsyncExitStack) -> None:
        nats = self.settings.hub
        assert self.pki is not None
        self._access = access = HubAccess(
            nats, self.pki, self.registry, self.passports,
            store_dir=self.settings.hub_store, cross=self._cross_grants,
        )  # fmt: skip
        config = await access.initial()
        hub = NatsServer(config, start_timeout=nats.start_timeout)
        await hub.start()  # closes itself when it fails to start
        stack.push_async_callback(_aclosing, "NATS hub", hub.aclose)
        self._hub = hub
        if hub.leafnode_port is not None:
            log.info("NATS hub accepts rack leaf nodes on port %d", hub.leafnode_port)

    def _api_context(self) -> ApiContext:
        """What both APIs (REST and gRPC) work on, with the same token and limits."""
        api = self.settings.api
        if api.token is None:
            log.warning("the API runs WITHOUT authentication ([api] insecure); do not expose it")
        return ApiContext(
            store=self.store,
            registry=self.registry,
            gears=self.gears,
            auth_token=api.token,
            read_token=api.reader_token,
            max_body_bytes=api.max_body_bytes,
            on_rack_change=self._rack_changed,
            orchestrator=self.orchestrator,
            telemetry=self.telemetry,
            taps=TapAccess(self.nats_url, max_taps=api.max_taps, buffer=api.tap_buffer),
        )

    # -- background tasks -----------------------------------------------------------------------

    async def _sweep_heartbeats(self) -> None:
        """Every heartbeat interval, mark racks that missed `max_missed` heartbeats offline.

        The first sweep waits a full window (`max_missed` intervals), so racks get the chance to
        reach a freshly (re)started mixer before they are declared offline."""
        enrollment = self.settings.enrollment
        interval, missed = enrollment.heartbeat_interval, enrollment.max_missed
        delay = interval * missed
        while not await self._stopped_within(delay):
            delay = interval
            try:
                gone = await asyncio.to_thread(self.registry.sweep, missed, interval)
            except Exception:  # a failed sweep must not take the control plane down
                log.exception("heartbeat sweep failed; retrying in %gs", interval)
                continue
            for rack in gone:
                log.warning(
                    "rack %r (machine id %d) went offline: no heartbeat for %gs",
                    rack.name,
                    rack.machine_id,
                    missed * interval,
                )
            await self.enrollment.notify_all(gone)
            if gone and self._on_offline is not None:
                try:
                    self._on_offline(gone)
                except Exception:
                    log.exception("on_offline hook failed")

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        return self._stopping.is_set()


def _closing(what: str, close: Callable[[], object]) -> None:
    close()
    log.info("%s closed", what)


async def _aclosing(what: str, close: Callable[[], Awaitable[None]]) -> None:
    await close()
    log.info("%s closed", what)


def _hub_hosts(host: str) -> list[str]:
    """Names the hub's certificate is valid for: loopback and its listen address."""
    hosts = ["localhost", "127.0.0.1"]
    if host not in ("0.0.0.0", "::", "") and host not in hosts:
        hosts.append(host)
    return hosts


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MixerError(
            f"cannot create the mixer state dir {path}: {exc.strerror or exc}; choose a writable "
            "[mixer] state_dir (--state-dir)"
        ) from exc
