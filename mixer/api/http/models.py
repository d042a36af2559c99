"""The REST API's bodies: pydantic models that validate requests and shape responses.

These models are the only source of the OpenAPI schemas (`mixer.api.http.openapi`), so the
document cannot drift from what the handlers accept and return. Request models forbid unknown
keys and coerce nothing (`strict`): `"dry_run": "yes"` is a 422, not a silent `True`.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mixer.registry import RackRecord, RackStatus
from mixer.store import Blob, PutResult, Ref
from rack.model.scenario import NAME_PATTERN

MAX_CONTENT_BYTES = 1024 * 1024  # a scenario or spec is at most 1 MiB of UTF-8


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Query(BaseModel):
    """Query strings arrive as text, so query models are not strict (enums parse from text)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- errors -------------------------------------------------------------------------------------


class ErrorDetail(_Response):
    path: str = Field(description="Where: a YAML path (`gears[0].config.bind`) or `body.<field>`.")
    message: str
    line: int | None = Field(default=None, description="1-based line in the submitted content.")


class ErrorInfo(_Response):
    code: str = Field(description="Stable machine-readable code, e.g. `tag_conflict`.")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorBody(_Response):
    """Every non-2xx answer has this shape."""

    error: ErrorInfo


# --- system -------------------------------------------------------------------------------------


class Health(_Response):
    status: Literal["ok"] = "ok"
    version: str


# --- racks --------------------------------------------------------------------------------------


class RackQuery(_Query):
    status: RackStatus | None = Field(default=None, description="Only racks in this status.")


class RenameRequest(_Request):
    name: str = Field(pattern=NAME_PATTERN, description="The rack's new name (must be free).")


class Rack(_Response):
    name: str
    status: RackStatus
    adopted: bool = Field(description="Was ever adopted (decides where resume/return lead).")
    machine_id: int
    entity_id: int = Field(description="64-bit fluxEntityID (type 3 = rack, MachineID).")
    type_id: int
    version: str | None
    attributes: dict[str, Any]
    stats: dict[str, Any]
    last_seen: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, rec: RackRecord) -> Rack:
        return cls(
            name=rec.name,
            status=rec.status,
            adopted=rec.adopted,
            machine_id=rec.machine_id,
            entity_id=rec.entity_id,
            type_id=rec.type_id,
            version=rec.version,
            attributes=rec.attributes,
            stats=rec.stats,
            last_seen=rec.last_seen,
            created_at=rec.created_at,
            updated_at=rec.updated_at,
        )


class RackList(_Response):
    racks: list[Rack]


# --- gears --------------------------------------------------------------------------------------


class GearSummary(_Response):
    type: str
    summary: str
    inputs: list[str]
    outputs: list[str] = Field(description="Declared outputs; every gear also has `error`.")


class GearList(_Response):
    gears: list[GearSummary]
    load_errors: dict[str, str] = Field(
        default_factory=dict, description="Third-party gears that failed to load, and why."
    )


class GearDetail(GearSummary):
    description: str
    config_schema: dict[str, Any] = Field(description="JSON schema of the gear's config.")


# --- scenarios and specs (CAS content) ----------------------------------------------------------


class _Import(_Request):
    tag: str = Field(min_length=1, max_length=128, description="Immutable tag, e.g. v1.0.0.")
    content: str = Field(description="The document text (UTF-8), at most 1 MiB.")
    dry_run: bool = Field(default=False, description="Validate and report; store nothing.")

    @field_validator("content")
    @classmethod
    def _utf8_and_bounded(cls, value: str) -> str:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError("content is not valid UTF-8 text (lone surrogate)") from None
        if size > MAX_CONTENT_BYTES:
            raise ValueError(f"content is {size} bytes; the limit is {MAX_CONTENT_BYTES}")
        return value


class ScenarioImport(_Import):
    """Import a scenario (YAML). It passes the rack's pre-flight first, or nothing is stored."""

    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Store name; defaults to the scenario's own name, and must match it.",
    )


class SpecImport(_Import):
    """Import a spec (opaque UTF-8 text for now)."""

    name: str = Field(min_length=1, max_length=100)


class ContentQuery(_Query):
    name: str | None = Field(default=None, description="Only entries of this name.")


class Entry(_Response):
    kind: Literal["scenario", "spec"]
    name: str
    tag: str
    ref: str = Field(description="`name:tag`.")
    digest: str = Field(description="`sha256:<64 hex>`.")
    size: int
    created_at: datetime

    @classmethod
    def of(cls, ref: Ref) -> Entry:
        return cls(
            kind=ref.kind,
            name=ref.name,
            tag=ref.tag,
            ref=ref.ref,
            digest=ref.digest,
            size=ref.size,
            created_at=ref.created_at,
        )


class EntryList(_Response):
    entries: list[Entry]


class ImportResult(_Response):
    kind: Literal["scenario", "spec"]
    name: str
    tag: str
    ref: str
    digest: str
    size: int
    created: bool = Field(description="False when name:tag already held these exact bytes.")
    dry_run: bool

    @classmethod
    def of(
        cls, kind: Literal["scenario", "spec"], name: str, tag: str, put: PutResult
    ) -> ImportResult:
        return cls(
            kind=kind,
            name=name,
            tag=tag,
            ref=f"{name}:{tag}",
            digest=put.digest,
            size=put.size,
            created=put.created,
            dry_run=put.dry_run,
        )


class Content(_Response):
    kind: Literal["scenario", "spec"]
    name: str | None = Field(description="Null when fetched by digest.")
    tag: str | None
    digest: str
    size: int
    encoding: Literal["utf-8", "base64"] = Field(
        description="`utf-8`: `content` is the text; `base64`: the bytes were not UTF-8."
    )
    content: str

    @classmethod
    def of(cls, blob: Blob) -> Content:
        encoding: Literal["utf-8", "base64"] = "utf-8"
        try:
            text = blob.data.decode("utf-8")
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(blob.data).decode("ascii"), "base64"
        return cls(
            kind=blob.kind,
            name=blob.name,
            tag=blob.tag,
            digest=blob.digest,
            size=len(blob.data),
            encoding=encoding,
            content=text,
        )
