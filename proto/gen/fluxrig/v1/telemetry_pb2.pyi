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
