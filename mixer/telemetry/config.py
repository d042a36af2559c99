"""`TelemetrySection`: the `[telemetry]` settings of the mixer's OTLP hub.

    [telemetry]
    grpc_port = 4317                  # OTLP/gRPC
    http_port = 4318                  # OTLP/HTTP (protobuf and JSON)
    retention_hours = 168             # Parquet partitions older than this are deleted
    forward_endpoint = "collector.example:4317"   # optional: also send everything upstream
    query_timeout = 10                # a query running longer is interrupted
    query_memory_limit = "512MiB"     # DuckDB memory limit of the telemetry database

Data lives under `<state_dir>/telemetry/`: the DuckDB file `telemetry.duckdb` (recent rows) and
`archive/<table>/date=YYYY-MM-DD/hour=HH/part-<uuid>.parquet` (closed hours).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)

__all__ = ["DEFAULT_GRPC_PORT", "DEFAULT_HTTP_PORT", "ForwardProtocol", "TelemetrySection"]

MIB = 1024 * 1024
DEFAULT_GRPC_PORT = 4317
DEFAULT_HTTP_PORT = 4318
ForwardProtocol = Literal["grpc", "http/protobuf"]
MIN_QUERY_MEMORY = 32 * MIB  # below it DuckDB cannot even run its own statements
SIZES = "a number of bytes, or a size with a unit: 512MB, 512MiB, 2GB, 1GiB"


def _size(value: Any, handler: ValidatorFunctionWrapHandler) -> ByteSize:
    """A byte size, or a ValueError that says which spellings are accepted."""
    try:
        size: ByteSize = handler(value)
    except ValidationError:
        raise ValueError(f"{value!r} is not a size: expected {SIZES}") from None
    return size


Size = Annotated[ByteSize, WrapValidator(_size)]


def _port(default: int, what: str) -> Any:
    return Field(default=default, ge=0, le=65535, description=f"{what} (0 = any free port).")


class TelemetrySection(BaseModel):
    """`[telemetry]`: the OTLP receiver, its DuckDB tables, the Parquet archive, forwarding."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True,
        description="Run the OTLP telemetry hub (receivers, storage, archive). False: no ports "
        "are opened and nothing is stored.",
    )
    host: str = Field(default="127.0.0.1", description="Listen address of the OTLP receivers.")
    grpc_port: int = _port(DEFAULT_GRPC_PORT, "Port of the OTLP/gRPC receiver")
    http_port: int = _port(DEFAULT_HTTP_PORT, "Port of the OTLP/HTTP receiver")
    max_body_bytes: int = Field(
        default=4 * MIB,
        ge=1024,
        le=256 * MIB,
        description="Largest OTLP request accepted, in bytes (also after gzip decompression); "
        "larger ones answer 413 / RESOURCE_EXHAUSTED.",
    )
    queue_rows: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        description="Rows (spans, data points, log records) received but not yet written; a "
        "request that does not fit answers 503 / UNAVAILABLE (senders retry later).",
    )
    queue_bytes: int = Field(
        default=64 * MIB,
        ge=MIB,
        le=4096 * MIB,
        description="Bytes of requests received but not yet written (the second bound of the "
        "write queue, next to `queue_rows`).",
    )
    batch_rows: int = Field(
        default=5_000,
        ge=1,
        le=1_000_000,
        description="Rows written to DuckDB in one insert, at most.",
    )
    flush_interval: float = Field(
        default=1.0,
        gt=0,
        le=600,
        description="Seconds a received row may wait for its batch to fill before it is written.",
    )
    archive_interval: float = Field(
        default=300.0,
        gt=0,
        le=24 * 3600,
        description="Seconds between two runs of the archiver (closed hours to Parquet, then "
        "retention).",
    )
    archive_grace: float = Field(
        default=300.0,
        ge=0,
        le=24 * 3600,
        description="Seconds after the end of an hour before its rows are archived (late "
        "arrivals still land in the live tables; later ones go to another part file).",
    )
    retention_hours: int = Field(
        default=7 * 24,
        ge=1,
        le=100 * 366 * 24,
        description="Hours of archived telemetry kept; whole hourly partitions older than this "
        "are deleted.",
    )
    forward_endpoint: str | None = Field(
        default=None,
        description="Also send every accepted request to this OTLP endpoint (`host:port` or "
        "`http(s)://host:port` for grpc; the base URL for http/protobuf, `/v1/traces` etc. are "
        "appended). None: no forwarding.",
    )
    forward_protocol: ForwardProtocol = Field(
        default="grpc", description="Protocol of `forward_endpoint`: `grpc` or `http/protobuf`."
    )
    forward_headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Headers (gRPC metadata) sent with every forwarded request, e.g. an API key. "
        "Never logged.",
    )
    forward_queue_bytes: int = Field(
        default=64 * MIB,
        ge=MIB,
        le=4096 * MIB,
        description="Bytes of requests waiting for the upstream; beyond it the oldest are "
        "dropped (and counted) so a down upstream never holds the receiver up.",
    )
    forward_timeout: float = Field(
        default=10.0, gt=0, le=600, description="Seconds one forwarded request may take."
    )

    query_timeout: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds one telemetry query (SQL or canned: metrics, logs, spans, traces) "
        "may run, waiting for the archiver included; a query still running then is interrupted "
        "in DuckDB and answered 400 `query_timeout` / DEADLINE_EXCEEDED.",
    )
    max_concurrent_queries: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Telemetry queries running at once, each on a thread of its own; one more is "
        "refused at once with 503 `too_many_queries` / UNAVAILABLE (retry shortly).",
    )
    query_memory_limit: Size = Field(
        default="512MiB",
        validate_default=True,
        description="Memory DuckDB may use for the telemetry database (DuckDB `memory_limit`; "
        f"{SIZES}; at least 32MiB). Shared by queries, inserts and the archiver; a query that "
        "needs more, even after spilling to disk, fails with 400 `invalid_query` (out of memory).",
    )
    query_spill_limit: Size = Field(
        default="1GiB",
        validate_default=True,
        description="Disk DuckDB may fill with what does not fit in `query_memory_limit` (sorts, "
        "joins, aggregations spill to `<state_dir>/telemetry/telemetry.duckdb.tmp`; DuckDB "
        f"`max_temp_directory_size`; {SIZES}; 0 = no spilling). Past it the query fails as out "
        "of memory.",
    )
    query_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Worker threads of the telemetry database (DuckDB `threads`), shared by every "
        "query, insert and archive run: bounds the CPU queries can take from the mixer. None: "
        "one per CPU.",
    )

    @field_validator("query_memory_limit")
    @classmethod
    def _enough_memory(cls, value: ByteSize) -> ByteSize:
        if value < MIN_QUERY_MEMORY:
            raise ValueError(
                f"{value.human_readable()} is too little: DuckDB needs at least 32MiB to run the "
                "telemetry database"
            )
        return value

    @model_validator(mode="after")
    def _checks(self) -> TelemetrySection:
        if self.batch_rows > self.queue_rows:
            raise ValueError(
                f"batch_rows ({self.batch_rows}) cannot exceed queue_rows ({self.queue_rows})"
            )
        if self.grpc_port and self.grpc_port == self.http_port:
            raise ValueError(
                f"grpc_port and http_port are both {self.grpc_port}; give each its own port"
            )
        endpoint = self.forward_endpoint
        if endpoint is not None:
            if not endpoint.strip():
                raise ValueError("forward_endpoint is empty; leave it unset to not forward")
            is_url = endpoint.startswith(("http://", "https://"))
            if self.forward_protocol == "http/protobuf" and not is_url:
                raise ValueError(
                    f"forward_endpoint {endpoint!r} needs http:// or https:// with "
                    "forward_protocol http/protobuf"
                )
        return self

    def headers(self) -> dict[str, str]:
        """`forward_headers` in clear, for the forwarder only (never log them)."""
        return {key: value.get_secret_value() for key, value in self.forward_headers.items()}
