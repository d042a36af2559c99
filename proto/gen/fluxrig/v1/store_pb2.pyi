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

class Provenance(_message.Message):
    __slots__ = ("rack", "digest", "since", "applied", "error")
    RACK_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    rack: str
    digest: str
    since: _timestamp_pb2.Timestamp
    applied: bool
    error: str
    def __init__(self, rack: _Optional[str] = ..., digest: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., applied: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class ActiveResponse(_message.Message):
    __slots__ = ("ref", "racks")
    REF_FIELD_NUMBER: _ClassVar[int]
    RACKS_FIELD_NUMBER: _ClassVar[int]
    ref: StoredRef
    racks: _containers.RepeatedCompositeFieldContainer[Provenance]
    def __init__(self, ref: _Optional[_Union[StoredRef, _Mapping]] = ..., racks: _Optional[_Iterable[_Union[Provenance, _Mapping]]] = ...) -> None: ...
