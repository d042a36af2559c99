from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Gear(_message.Message):
    __slots__ = ("type", "summary", "inputs", "outputs", "config_schema_json")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_SCHEMA_JSON_FIELD_NUMBER: _ClassVar[int]
    type: str
    summary: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    config_schema_json: str
    def __init__(self, type: _Optional[str] = ..., summary: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., outputs: _Optional[_Iterable[str]] = ..., config_schema_json: _Optional[str] = ...) -> None: ...

class ListGearsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListGearsResponse(_message.Message):
    __slots__ = ("gears",)
    GEARS_FIELD_NUMBER: _ClassVar[int]
    gears: _containers.RepeatedCompositeFieldContainer[Gear]
    def __init__(self, gears: _Optional[_Iterable[_Union[Gear, _Mapping]]] = ...) -> None: ...

class GetGearRequest(_message.Message):
    __slots__ = ("type",)
    TYPE_FIELD_NUMBER: _ClassVar[int]
    type: str
    def __init__(self, type: _Optional[str] = ...) -> None: ...
