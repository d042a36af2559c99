"""The REST API's bodies: pydantic models that validate requests and shape responses.

These models are the only source of the OpenAPI schemas (`mixer.api.http.openapi`), so the
document cannot drift from what the handlers accept and return. Request models forbid unknown
keys and coerce nothing (`strict`): `"dry_run": "yes"` is a 422, not a silent `True`.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mixer.activations import ActivationRecord, ActivationState, DeploymentState, RackProvenance
from mixer.registry import RackRecord, RackStatus
from mixer.store import Blob, PutResult, Ref
from rack.model.scenario import NAME_PATTERN

if TYPE_CHECKING:
    from mixer import rollout

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


# --- activation, the active scenario, provenance ------------------------------------------------


class Activation(_Response):
    """One activation request and how it ended (`activating` while racks are answering)."""

    id: int
    ref: str | None = Field(description="`name:tag` activated; null when activated by digest.")
    digest: str = Field(description="`sha256:<64 hex>` of the scenario document.")
    scenario: str = Field(description="The scenario's own name.")
    state: ActivationState = Field(
        description="`active` (what the fleet runs), `superseded` (was active), `failed` (a rack "
        "could not apply it: rolled back), `rejected` (pre-flight refused it: nothing pushed)."
    )
    requested_at: datetime
    finished_at: datetime | None
    error: str | None = Field(description="Why it failed or was rejected.")
    previous: int | None = Field(description="The activation that was active when it started.")

    @classmethod
    def of(cls, rec: ActivationRecord) -> Activation:
        return cls(
            id=rec.id,
            ref=rec.ref,
            digest=rec.digest,
            scenario=rec.scenario,
            state=rec.state,
            requested_at=rec.requested_at,
            finished_at=rec.finished_at,
            error=rec.error,
            previous=rec.previous,
        )


class RackOutcome(_Response):
    rack: str
    state: Literal["applied", "failed", "timeout"] = Field(
        description="`timeout`: the rack did not answer within [orchestrator] apply_timeout."
    )
    error: str | None
    report: str | None = Field(description="What the rack started, restarted, stopped or kept.")

    @classmethod
    def of(cls, outcome: rollout.RackOutcome) -> RackOutcome:
        return cls(
            rack=outcome.rack, state=outcome.state, error=outcome.error, report=outcome.report
        )


class ActivationResult(_Response):
    """A successful activation: every active rack applied the scenario."""

    activation: Activation
    racks: list[RackOutcome] = Field(description="What each active rack answered.")
    adopted: list[str] = Field(description="Racks adopted because the scenario names them.")
    unknown: list[str] = Field(
        description="Racks the scenario names that never enrolled (adopted when they do)."
    )

    @classmethod
    def of(cls, result: rollout.ActivationResult) -> ActivationResult:
        return cls(
            activation=Activation.of(result.activation),
            racks=[RackOutcome.of(o) for o in result.racks],
            adopted=list(result.adopted),
            unknown=list(result.unknown),
        )


class ActivationList(_Response):
    activations: list[Activation] = Field(description="Newest first.")


class HistoryQuery(_Query):
    limit: int = Field(default=50, ge=1, le=1000, description="At most this many, newest first.")


class Provenance(_Response):
    """Which scenario a rack runs since when, and how the newest push to it went."""

    rack: str
    digest: str | None = Field(description="The scenario it last applied (null: none yet).")
    ref: str | None
    activation: int | None
    since: datetime | None = Field(description="When it said it applied `digest`.")
    applied: bool = Field(description="It runs the active scenario (`digest` is the active one).")
    last_activation: int = Field(description="The newest push's activation (0: run nothing).")
    last_digest: str | None
    last_state: DeploymentState = Field(description="`pushed`: no answer to it yet.")
    last_error: str | None
    pushed_at: datetime

    @classmethod
    def of(cls, row: RackProvenance, active: ActivationRecord | None) -> Provenance:
        return cls(
            rack=row.rack,
            digest=row.digest,
            ref=row.ref,
            activation=row.activation,
            since=row.since,
            applied=active is not None and row.digest == active.digest,
            last_activation=row.last_activation,
            last_digest=row.last_digest,
            last_state=row.last_state,
            last_error=row.last_error,
            pushed_at=row.pushed_at,
        )

    @classmethod
    def rows(
        cls, rows: Sequence[RackProvenance], active: ActivationRecord | None
    ) -> list[Provenance]:
        return [cls.of(r, active) for r in rows]


class ProvenanceQuery(_Query):
    rack: str | None = Field(default=None, pattern=NAME_PATTERN, description="Only this rack.")


class ProvenanceList(_Response):
    racks: list[Provenance] = Field(description="Racks ever pushed a scenario, by name.")


class ActiveScenario(_Response):
    active: Activation | None = Field(description="Null: no scenario was ever activated.")
    racks: list[Provenance] = Field(description="Racks ever pushed a scenario, by name.")
