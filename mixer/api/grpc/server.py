"""`GrpcApi`: the mixer's gRPC server (grpc.aio) with every `fluxrig.v1` service, the standard
health service and server reflection.

    api = await start_grpc_server(ctx, "127.0.0.1", 0)   # or: async with GrpcApi(ctx, host, port)
    api.port        # the bound port (the real one when 0 was asked)
    api.watch       # RackWatch: call api.watch.publish(record, previous) on status changes
    await api.aclose()

Health (`grpc.health.v1.Health`) reports SERVING for "" and every service until `aclose()`,
which first flips it to NOT_SERVING, ends the rack watches, then stops the server with a grace
period for calls in flight. Health and reflection need no token; everything else does (when
`ctx.auth_token` is set).
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mixer.api.grpc import proto
from mixer.api.grpc.auth import BearerAuth
from mixer.api.grpc.content import ScenarioServicer, SpecServicer
from mixer.api.grpc.gears import GearServicer
from mixer.api.grpc.racks import RackServicer
from mixer.api.grpc.telemetry import TelemetryServicer
from mixer.api.grpc.watch import DEFAULT_POLL_INTERVAL, RackWatch
from mixer.api.http.context import ApiContext
from mixer.api.tls import ServerTls
from mixer.errors import MixerError
from rack.lifecycle import Service

log = logging.getLogger("fluxrig.mixer.api.grpc")

SERVICES: tuple[str, ...] = (
    proto.racks_pb2.DESCRIPTOR.services_by_name["RackService"].full_name,
    proto.store_pb2.DESCRIPTOR.services_by_name["ScenarioService"].full_name,
    proto.store_pb2.DESCRIPTOR.services_by_name["SpecService"].full_name,
    proto.gears_pb2.DESCRIPTOR.services_by_name["GearService"].full_name,
    proto.telemetry_pb2.DESCRIPTOR.services_by_name["TelemetryService"].full_name,
)
HEALTH_SERVICE: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
REFLECTION_SERVICE: str = reflection.SERVICE_NAME
PUBLIC_SERVICES = frozenset({HEALTH_SERVICE, REFLECTION_SERVICE})
DEFAULT_GRACE = 5.0


class GrpcApi(Service):
    """The gRPC API on `host:port`; `start()` and `aclose()` are idempotent."""

    def __init__(
        self,
        ctx: ApiContext,
        host: str,
        port: int,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        grace: float = DEFAULT_GRACE,
        watch: RackWatch | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        """`watch`: share a RackWatch the mixer also publishes to (default: a new one);
        `tls`: serve over TLS (mixer.api.tls) instead of plaintext."""
        self._ctx = ctx
        self._tls = tls
        self.host = host
        self._asked_port = port
        self._grace = grace
        self.watch = watch or RackWatch(ctx.registry, poll_interval=poll_interval)
        self._health = health.aio.HealthServicer()
        self._server: Any = None
        self._closed = False
        self.port: int | None = None

    @property
    def target(self) -> str:
        """`host:port` for `grpc.aio.insecure_channel` (IPv6 hosts bracketed)."""
        if self.port is None:
            raise RuntimeError("the gRPC API is not started")
        return _hostport(self.host, self.port)

    async def start(self) -> None:
        if self._server is not None:
            return
        if self._closed:
            raise RuntimeError("this gRPC API was closed; make a new one")
        interceptors = []
        credentials = self._ctx.credentials
        if credentials is not None:
            interceptors.append(BearerAuth(credentials, PUBLIC_SERVICES))
        # no SO_REUSEPORT: a second mixer on the same port must fail, not share the traffic
        server = grpc.aio.server(interceptors=interceptors, options=[("grpc.so_reuseport", 0)])
        self._register(server)
        self.port = self._bind(server)
        await server.start()
        self._server = server  # from here on, aclose() stops it
        for name in ("", *SERVICES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("gRPC API listening on %s", self.target)

    async def aclose(self) -> None:
        """NOT_SERVING, end the watches, stop with the grace period; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.watch.close()
        server, self._server = self._server, None
        if server is None:
            return
        try:
            await self._health.enter_graceful_shutdown()
        finally:
            await server.stop(self._grace)

    def _register(self, server: Any) -> None:
        ctx = self._ctx
        proto.add_rack_service(RackServicer(ctx, self.watch), server)
        proto.add_scenario_service(ScenarioServicer(ctx), server)
        proto.add_spec_service(SpecServicer(ctx), server)
        proto.add_gear_service(GearServicer(ctx.gears), server)
        proto.add_telemetry_service(TelemetryServicer(ctx), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection((*SERVICES, HEALTH_SERVICE, REFLECTION_SERVICE), server)

    def _bind(self, server: Any) -> int:
        address = _hostport(self.host, self._asked_port)
        try:
            if self._tls is not None:
                port = int(server.add_secure_port(address, self._tls.grpc_credentials()))
            else:
                port = int(server.add_insecure_port(address))
        except RuntimeError as exc:  # grpc's "Failed to bind to address …"
            port, reason = 0, f": {exc}"
        else:
            reason = ""
        if port == 0:
            raise MixerError(
                f"gRPC API cannot listen on {address}{reason}; "
                "choose another [api] grpc_port (--grpc-port)"
            )
        return port


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start_grpc_server(
    ctx: ApiContext,
    host: str,
    port: int,
    *,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    grace: float = DEFAULT_GRACE,
    watch: RackWatch | None = None,
) -> GrpcApi:
    """A started `GrpcApi`; close it with `await api.aclose()`."""
    api = GrpcApi(ctx, host, port, poll_interval=poll_interval, grace=grace, watch=watch)
    await api.start()
    return api
