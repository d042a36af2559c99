"""The mixer's gRPC API (grpc.aio) from `proto/fluxrig/v1/*.proto`.

    api = await start_grpc_server(ApiContext(store, registry, gears, auth_token=token), host, port)
    ...
    await api.aclose()

Services: RackService (with the WatchRacks stream), ScenarioService, SpecService, GearService,
TelemetryService (queries over the telemetry hub), plus the standard health and reflection
services. Every call needs metadata `authorization: Bearer <token>` except health and reflection
(`auth_token=None`: no auth).
Errors go through the one table in `mixer.api.errors` (the same as the REST API's).
"""

from mixer.api.grpc.server import PUBLIC_SERVICES, SERVICES, GrpcApi, start_grpc_server
from mixer.api.grpc.watch import RackChange, RackWatch

__all__ = [
    "PUBLIC_SERVICES",
    "SERVICES",
    "GrpcApi",
    "RackChange",
    "RackWatch",
    "start_grpc_server",
]
