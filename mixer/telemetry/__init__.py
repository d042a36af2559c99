"""The mixer's OTLP telemetry hub: receive, store in DuckDB, archive to Parquet, query, forward.

    async with TelemetryHub(settings.telemetry, settings.mixer.state_dir) as hub:
        ...   # racks export OTLP to hub.grpc_port / hub.http_port
        rows = await hub.query.spans(rack="edge-1", gear="decode", limit=50)

Modules, one concept each:

- `config`: `TelemetrySection`, the `[telemetry]` settings;
- `attributes`: the fluxrig attribute names promoted to columns (the rack mirrors them);
- `schema`: the tables `spans`, `metric_points`, `logs` and their migration;
- `payload`: OTLP request bodies (protobuf, OTLP/JSON, gzip) → `Export`;
- `flatten`, `flatten_metrics`: OTLP messages → table rows;
- `intake`: the bounded write queue; `store`: DuckDB and its one writer thread;
- `archive`: closed hours → hourly Parquet partitions, retention;
- `query`: one query path over the live tables and the archive;
- `forward`: optional forwarding upstream; `receiver_grpc`, `receiver_http`: OTLP receivers;
- `hub`: `TelemetryHub`, composing them; `errors`: the exceptions.
"""

from mixer.telemetry.config import TelemetrySection
from mixer.telemetry.errors import (
    MalformedTelemetryError,
    TelemetryBusyError,
    TelemetryClosedError,
    TelemetryError,
    TelemetryQueryError,
    TelemetryTooLargeError,
    UnsupportedMediaError,
)
from mixer.telemetry.hub import TelemetryHub
from mixer.telemetry.query import TelemetryQuery

__all__ = [
    "MalformedTelemetryError",
    "TelemetryBusyError",
    "TelemetryClosedError",
    "TelemetryError",
    "TelemetryHub",
    "TelemetryQuery",
    "TelemetryQueryError",
    "TelemetrySection",
    "TelemetryTooLargeError",
    "UnsupportedMediaError",
]
