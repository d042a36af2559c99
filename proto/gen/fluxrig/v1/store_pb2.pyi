import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StoredRef(_message.Message):
    __slots__ = ("kind", "name", "tag", "digest", "size", "created_at")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    tag: str
    digest: str
    size: int
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ..., tag: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ImportRequest(_message.Message):
    __slots__ = ("name", "tag", "content", "dry_run")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    name: str
    tag: str
    content: str
    dry_run: bool
    def __init__(self, name: _Optional[str] = ..., tag: _Optional[str] = ..., content: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class Problem(_message.Message):
    __slots__ = ("path", "message", "line")
    PATH_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    path: str
    message: str
    line: int
    def __init__(self, path: _Optional[str] = ..., message: _Optional[str] = ..., line: _Optional[int] = ...) -> None: ...

class ImportResponse(_message.Message):
    __slots__ = ("ref", "created", "dry_run")
    REF_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    ref: StoredRef
    created: bool
    dry_run: bool
    def __init__(self, ref: _Optional[_Union[StoredRef, _Mapping]] = ..., created: _Optional[bool] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("refs",)
    REFS_FIELD_NUMBER: _ClassVar[int]
    refs: _containers.RepeatedCompositeFieldContainer[StoredRef]
    def __init__(self, refs: _Optional[_Iterable[_Union[StoredRef, _Mapping]]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: str
    def __init__(self, ref: _Optional[str] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("ref", "content")
    REF_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    ref: StoredRef
    content: str
    def __init__(self, ref: _Optional[_Union[StoredRef, _Mapping]] = ..., content: _Optional[str] = ...) -> None: ...

class ActivateRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: str
    def __init__(self, ref: _Optional[str] = ...) -> None: ...

class Activation(_message.Message):
    __slots__ = ("id", "ref", "digest", "scenario", "state", "requested_at", "finished_at", "error", "previous")
    ID_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    id: int
    ref: str
    digest: str
    scenario: str
    state: str
    requested_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    error: str
    previous: int
    def __init__(self, id: _Optional[int] = ..., ref: _Optional[str] = ..., digest: _Optional[str] = ..., scenario: _Optional[str] = ..., state: _Optional[str] = ..., requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ..., previous: _Optional[int] = ...) -> None: ...

class RackOutcome(_message.Message):
    __slots__ = ("rack", "state", "error", "report")
    RACK_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    rack: str
    state: str
    error: str
    report: str
    def __init__(self, rack: _Optional[str] = ..., state: _Optional[str] = ..., error: _Optional[str] = ..., report: _Optional[str] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("rack", "digest", "since", "applied", "error", "ref", "activation", "last_activation", "last_digest", "last_state", "pushed_at")
    RACK_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    LAST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    LAST_STATE_FIELD_NUMBER: _ClassVar[int]
    PUSHED_AT_FIELD_NUMBER: _ClassVar[int]
    rack: str
    digest: str
    since: _timestamp_pb2.Timestamp
    applied: bool
    error: str
    ref: str
    activation: int
    last_activation: int
    last_digest: str
    last_state: str
    pushed_at: _timestamp_pb2.Timestamp
    def __init__(self, rack: _Optional[str] = ..., digest: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., applied: _Optional[bool] = ..., error: _Optional[str] = ..., ref: _Optional[str] = ..., activation: _Optional[int] = ..., last_activation: _Optional[int] = ..., last_digest: _Optional[str] = ..., last_state: _Optional[str] = ..., pushed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ActiveResponse(_message.Message):
    __slots__ = ("ref", "racks", "activation", "outcomes", "adopted", "unknown")
    REF_FIELD_NUMBER: _ClassVar[int]
    RACKS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    ADOPTED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    ref: StoredRef
    racks: _containers.RepeatedCompositeFieldContainer[Provenance]
    activation: Activation
    outcomes: _containers.RepeatedCompositeFieldContainer[RackOutcome]
    adopted: _containers.RepeatedScalarFieldContainer[str]
    unknown: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ref: _Optional[_Union[StoredRef, _Mapping]] = ..., racks: _Optional[_Iterable[_Union[Provenance, _Mapping]]] = ..., activation: _Optional[_Union[Activation, _Mapping]] = ..., outcomes: _Optional[_Iterable[_Union[RackOutcome, _Mapping]]] = ..., adopted: _Optional[_Iterable[str]] = ..., unknown: _Optional[_Iterable[str]] = ...) -> None: ...
