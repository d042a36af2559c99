"""The generated `fluxrig.v1` modules and protobuf's well-known types, imported in one place.

mypy sees neither today: `fluxrig.v1` lives in `proto/gen` behind the editable-install finder
(add `mypy_path = "proto/gen"` to use its `.pyi` stubs) and protobuf ships no stubs
(`types-protobuf`). The ignores below also tolerate the day both are configured.
"""

from collections.abc import Callable
from typing import Any

from fluxrig.v1 import (  # type: ignore[import-not-found, unused-ignore]
    gears_pb2,
    gears_pb2_grpc,
    racks_pb2,
    racks_pb2_grpc,
    store_pb2,
    store_pb2_grpc,
    telemetry_pb2,
    telemetry_pb2_grpc,
)
from google.protobuf import (  # type: ignore[import-untyped, unused-ignore]
    struct_pb2,
    timestamp_pb2,
)

# The generated `add_*Servicer_to_server` functions are untyped: typed once here.
Registrar = Callable[[Any, Any], None]
add_rack_service: Registrar = racks_pb2_grpc.add_RackServiceServicer_to_server
add_scenario_service: Registrar = store_pb2_grpc.add_ScenarioServiceServicer_to_server
add_spec_service: Registrar = store_pb2_grpc.add_SpecServiceServicer_to_server
add_gear_service: Registrar = gears_pb2_grpc.add_GearServiceServicer_to_server
add_telemetry_service: Registrar = telemetry_pb2_grpc.add_TelemetryServiceServicer_to_server

__all__ = [
    "add_gear_service",
    "add_rack_service",
    "add_scenario_service",
    "add_spec_service",
    "add_telemetry_service",
    "gears_pb2",
    "racks_pb2",
    "store_pb2",
    "struct_pb2",
    "telemetry_pb2",
    "timestamp_pb2",
]
