import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Span(_message.Message):
    __slots__ = ("ts_start", "ts_end", "duration_us", "trace_id", "span_id", "parent_span_id", "name", "kind", "status_code", "status_message", "service_name", "rack", "entity_id", "scenario", "scenario_hash", "gear", "flux_id", "attributes", "resource", "events", "links")
    TS_START_FIELD_NUMBER: _ClassVar[int]
    TS_END_FIELD_NUMBER: _ClassVar[int]
    DURATION_US_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    RACK_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_HASH_FIELD_NUMBER: _ClassVar[int]
    GEAR_FIELD_NUMBER: _ClassVar[int]
    FLUX_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    ts_start: _timestamp_pb2.Timestamp
    ts_end: _timestamp_pb2.Timestamp
    duration_us: int
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    status_code: str
    status_message: str
    service_name: str
    rack: str
    entity_id: str
    scenario: str
    scenario_hash: str
    gear: str
    flux_id: str
    attributes: _struct_pb2.Struct
    resource: _struct_pb2.Struct
    events: _struct_pb2.ListValue
    links: _struct_pb2.ListValue
    def __init__(self, ts_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ts_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_us: _Optional[int] = ..., trace_id: _Optional[str] = ..., span_id: _Optional[str] = ..., parent_span_id: _Optional[str] = ..., name: _Optional[str] = ..., kind: _Optional[str] = ..., status_code: _Optional[str] = ..., status_message: _Optional[str] = ..., service_name: _Optional[str] = ..., rack: _Optional[str] = ..., entity_id: _Optional[str] = ..., scenario: _Optional[str] = ..., scenario_hash: _Optional[str] = ..., gear: _Optional[str] = ..., flux_id: _Optional[str] = ..., attributes: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., resource: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., events: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ..., links: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ...) -> None: ...

class MetricPoint(_message.Message):
    __slots__ = ("ts", "name", "kind", "unit", "value", "count", "sum", "bucket_bounds", "bucket_counts", "rack", "gear", "wire", "scenario", "service_name", "attributes", "resource", "start_ts", "temporality", "monotonic", "min", "max", "quantiles")
    TS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    BUCKET_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    BUCKET_COUNTS_FIELD_NUMBER: _ClassVar[int]
    RACK_FIELD_NUMBER: _ClassVar[int]
    GEAR_FIELD_NUMBER: _ClassVar[int]
    WIRE_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    START_TS_FIELD_NUMBER: _ClassVar[int]
    TEMPORALITY_FIELD_NUMBER: _ClassVar[int]
    MONOTONIC_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    ts: _timestamp_pb2.Timestamp
    name: str
    kind: str
    unit: str
    value: float
    count: int
    sum: float
    bucket_bounds: _containers.RepeatedScalarFieldContainer[float]
    bucket_counts: _containers.RepeatedScalarFieldContainer[int]
    rack: str
    gear: str
    wire: str
    scenario: str
    service_name: str
    attributes: _struct_pb2.Struct
    resource: _struct_pb2.Struct
    start_ts: _timestamp_pb2.Timestamp
    temporality: str
    monotonic: bool
    min: float
    max: float
    quantiles: _struct_pb2.ListValue
    def __init__(self, ts: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., name: _Optional[str] = ..., kind: _Optional[str] = ..., unit: _Optional[str] = ..., value: _Optional[float] = ..., count: _Optional[int] = ..., sum: _Optional[float] = ..., bucket_bounds: _Optional[_Iterable[float]] = ..., bucket_counts: _Optional[_Iterable[int]] = ..., rack: _Optional[str] = ..., gear: _Optional[str] = ..., wire: _Optional[str] = ..., scenario: _Optional[str] = ..., service_name: _Optional[str] = ..., attributes: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., resource: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., start_ts: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., temporality: _Optional[str] = ..., monotonic: _Optional[bool] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., quantiles: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ...) -> None: ...

class LogRecord(_message.Message):
    __slots__ = ("ts", "severity_number", "severity_text", "body", "trace_id", "span_id", "rack", "gear", "service_name", "attributes", "resource")
    TS_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_TEXT_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    RACK_FIELD_NUMBER: _ClassVar[int]
    GEAR_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    ts: _timestamp_pb2.Timestamp
    severity_number: int
    severity_text: str
    body: str
    trace_id: str
    span_id: str
    rack: str
    gear: str
    service_name: str
    attributes: _struct_pb2.Struct
    resource: _struct_pb2.Struct
    def __init__(self, ts: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., severity_number: _Optional[int] = ..., severity_text: _Optional[str] = ..., body: _Optional[str] = ..., trace_id: _Optional[str] = ..., span_id: _Optional[str] = ..., rack: _Optional[str] = ..., gear: _Optional[str] = ..., service_name: _Optional[str] = ..., attributes: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., resource: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class QueryMetricsRequest(_message.Message):
    __slots__ = ("rack", "gear", "name", "since", "until", "limit")
    RACK_FIELD_NUMBER: _ClassVar[int]
    GEAR_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    rack: str
    gear: str
    name: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    limit: int
    def __init__(self, rack: _Optional[str] = ..., gear: _Optional[str] = ..., name: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ...) -> None: ...

class QueryMetricsResponse(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[MetricPoint]
    def __init__(self, points: _Optional[_Iterable[_Union[MetricPoint, _Mapping]]] = ...) -> None: ...

class QueryLogsRequest(_message.Message):
    __slots__ = ("rack", "gear", "trace_id", "min_severity", "since", "until", "limit")
    RACK_FIELD_NUMBER: _ClassVar[int]
    GEAR_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_SEVERITY_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    rack: str
    gear: str
    trace_id: str
    min_severity: int
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    limit: int
    def __init__(self, rack: _Optional[str] = ..., gear: _Optional[str] = ..., trace_id: _Optional[str] = ..., min_severity: _Optional[int] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ...) -> None: ...

class QueryLogsResponse(_message.Message):
    __slots__ = ("logs",)
    LOGS_FIELD_NUMBER: _ClassVar[int]
    logs: _containers.RepeatedCompositeFieldContainer[LogRecord]
    def __init__(self, logs: _Optional[_Iterable[_Union[LogRecord, _Mapping]]] = ...) -> None: ...

class QuerySpansRequest(_message.Message):
    __slots__ = ("flux_id", "rack", "gear", "since", "until", "limit")
    FLUX_ID_FIELD_NUMBER: _ClassVar[int]
    RACK_FIELD_NUMBER: _ClassVar[int]
    GEAR_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    flux_id: str
    rack: str
    gear: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    limit: int
    def __init__(self, flux_id: _Optional[str] = ..., rack: _Optional[str] = ..., gear: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ...) -> None: ...

class QuerySpansResponse(_message.Message):
    __slots__ = ("spans",)
    SPANS_FIELD_NUMBER: _ClassVar[int]
    spans: _containers.RepeatedCompositeFieldContainer[Span]
    def __init__(self, spans: _Optional[_Iterable[_Union[Span, _Mapping]]] = ...) -> None: ...

class GetTraceRequest(_message.Message):
    __slots__ = ("trace_id", "limit")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    limit: int
    def __init__(self, trace_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class Trace(_message.Message):
    __slots__ = ("trace_id", "spans")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPANS_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    spans: _containers.RepeatedCompositeFieldContainer[Span]
    def __init__(self, trace_id: _Optional[str] = ..., spans: _Optional[_Iterable[_Union[Span, _Mapping]]] = ...) -> None: ...

class QuerySqlRequest(_message.Message):
    __slots__ = ("sql", "limit")
    SQL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    sql: str
    limit: int
    def __init__(self, sql: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class QuerySqlResponse(_message.Message):
    __slots__ = ("columns", "rows", "truncated")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedScalarFieldContainer[str]
    rows: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    truncated: bool
    def __init__(self, columns: _Optional[_Iterable[str]] = ..., rows: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TelemetryReceivers(_message.Message):
    __slots__ = ("host", "grpc_port", "http_port")
    HOST_FIELD_NUMBER: _ClassVar[int]
    GRPC_PORT_FIELD_NUMBER: _ClassVar[int]
    HTTP_PORT_FIELD_NUMBER: _ClassVar[int]
    host: str
    grpc_port: int
    http_port: int
    def __init__(self, host: _Optional[str] = ..., grpc_port: _Optional[int] = ..., http_port: _Optional[int] = ...) -> None: ...

class TelemetryIntake(_message.Message):
    __slots__ = ("received_rows", "refused_requests", "queued_rows", "queued_bytes", "max_rows", "max_bytes")
    RECEIVED_ROWS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_ROWS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    received_rows: int
    refused_requests: int
    queued_rows: int
    queued_bytes: int
    max_rows: int
    max_bytes: int
    def __init__(self, received_rows: _Optional[int] = ..., refused_requests: _Optional[int] = ..., queued_rows: _Optional[int] = ..., queued_bytes: _Optional[int] = ..., max_rows: _Optional[int] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class TelemetryWriteError(_message.Message):
    __slots__ = ("message", "at")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    message: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, message: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TelemetryWriter(_message.Message):
    __slots__ = ("written_rows", "failed_rows", "retries", "reopens", "checkpoints", "last_error")
    class WrittenRowsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    WRITTEN_ROWS_FIELD_NUMBER: _ClassVar[int]
    FAILED_ROWS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    REOPENS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    written_rows: _containers.ScalarMap[str, int]
    failed_rows: int
    retries: int
    reopens: int
    checkpoints: int
    last_error: TelemetryWriteError
    def __init__(self, written_rows: _Optional[_Mapping[str, int]] = ..., failed_rows: _Optional[int] = ..., retries: _Optional[int] = ..., reopens: _Optional[int] = ..., checkpoints: _Optional[int] = ..., last_error: _Optional[_Union[TelemetryWriteError, _Mapping]] = ...) -> None: ...

class TelemetryArchive(_message.Message):
    __slots__ = ("retention_hours", "partitions", "bytes", "oldest_hour", "newest_hour")
    class PartitionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RETENTION_HOURS_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    OLDEST_HOUR_FIELD_NUMBER: _ClassVar[int]
    NEWEST_HOUR_FIELD_NUMBER: _ClassVar[int]
    retention_hours: int
    partitions: _containers.ScalarMap[str, int]
    bytes: int
    oldest_hour: _timestamp_pb2.Timestamp
    newest_hour: _timestamp_pb2.Timestamp
    def __init__(self, retention_hours: _Optional[int] = ..., partitions: _Optional[_Mapping[str, int]] = ..., bytes: _Optional[int] = ..., oldest_hour: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., newest_hour: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TelemetryForwarding(_message.Message):
    __slots__ = ("endpoint", "protocol", "headers", "sent", "dropped", "failed", "queued_requests", "queued_bytes", "max_bytes")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    QUEUED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    protocol: str
    headers: _containers.RepeatedScalarFieldContainer[str]
    sent: int
    dropped: int
    failed: int
    queued_requests: int
    queued_bytes: int
    max_bytes: int
    def __init__(self, endpoint: _Optional[str] = ..., protocol: _Optional[str] = ..., headers: _Optional[_Iterable[str]] = ..., sent: _Optional[int] = ..., dropped: _Optional[int] = ..., failed: _Optional[int] = ..., queued_requests: _Optional[int] = ..., queued_bytes: _Optional[int] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class TelemetryQueries(_message.Message):
    __slots__ = ("busy", "stopping", "max_concurrent", "timeout_seconds")
    BUSY_FIELD_NUMBER: _ClassVar[int]
    STOPPING_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    busy: int
    stopping: int
    max_concurrent: int
    timeout_seconds: float
    def __init__(self, busy: _Optional[int] = ..., stopping: _Optional[int] = ..., max_concurrent: _Optional[int] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class TelemetryStatus(_message.Message):
    __slots__ = ("enabled", "running", "receivers", "intake", "writer", "archive", "queries", "forwarding", "live_rows", "live_rows_error", "at")
    class LiveRowsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    RECEIVERS_FIELD_NUMBER: _ClassVar[int]
    INTAKE_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    FORWARDING_FIELD_NUMBER: _ClassVar[int]
    LIVE_ROWS_FIELD_NUMBER: _ClassVar[int]
    LIVE_ROWS_ERROR_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    running: bool
    receivers: TelemetryReceivers
    intake: TelemetryIntake
    writer: TelemetryWriter
    archive: TelemetryArchive
    queries: TelemetryQueries
    forwarding: TelemetryForwarding
    live_rows: _containers.ScalarMap[str, int]
    live_rows_error: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, enabled: _Optional[bool] = ..., running: _Optional[bool] = ..., receivers: _Optional[_Union[TelemetryReceivers, _Mapping]] = ..., intake: _Optional[_Union[TelemetryIntake, _Mapping]] = ..., writer: _Optional[_Union[TelemetryWriter, _Mapping]] = ..., archive: _Optional[_Union[TelemetryArchive, _Mapping]] = ..., queries: _Optional[_Union[TelemetryQueries, _Mapping]] = ..., forwarding: _Optional[_Union[TelemetryForwarding, _Mapping]] = ..., live_rows: _Optional[_Mapping[str, int]] = ..., live_rows_error: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
