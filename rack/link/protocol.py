"""The enrollment protocol between a rack and the mixer: subjects and message shapes (JSON).

Both sides import this module (the mixer depends on the rack, never the reverse), so the wire
format has one definition. Every message is a UTF-8 JSON object of at most `MAX_PAYLOAD` bytes.

    rack → mixer  request  fluxrig.agent.hello              Hello
    mixer → rack  reply                                     HelloReply | {"error": ErrorBody}
    rack → mixer  publish  fluxrig.event.heartbeat.<name>   Heartbeat (every heartbeat_interval)
    mixer → rack  publish  fluxrig.rack.<name>.status       StatusUpdate (on every status change)
    mixer → rack  publish  fluxrig.rack.<name>.scenario     ScenarioPush (the orchestrator)
    rack → mixer  publish  fluxrig.event.applied.<name>     ScenarioAck (after every push)
    mixer → rack  publish  fluxrig.rack.<name>.passport     a signed passport (CBOR bytes,
                                                            rack.model.passport; active racks)
    mixer → rack  publish  flux.ctrl.<name>.kill            KillSwitch (the rack was revoked)

Two paths (docs/security.md): a rack without a certificate talks to the hub's client port as the
anonymous enrollment user, which may only publish hellos (and read `_INBOX.*.*` replies): it
polls with hellos until the reply carries its `certificate` (active racks). From then on its
embedded nats-server is a leaf node of the hub over mTLS (the Snake) and the rack uses every
subject above through it, with its requests' replies on `_INBOX.<name>.>` (`inbox_prefix`).

`Hello` and `Heartbeat` carry `scenario`: the CAS digest of the scenario the rack runs (None
when it runs none), so the mixer re-pushes whenever a rack is not on the scenario it should run
(a lost push, a restarted rack, a resumed one). Scenario pushes may be up to
`MAX_SCENARIO_PAYLOAD` bytes (the document plus its envelope).

Error codes of a refused hello: `bad_request` (not JSON, not an object, a field missing or of
the wrong type, too large), `unauthorized` (no or a wrong bootstrap token), `bad_name` (the
name breaks the naming rule), `name_conflict` (the name belongs to another machine: different
public key), `retired` (the name belongs to a retired rack), `exhausted` (no MachineID left),
`internal` (the mixer failed; retry later).
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "APPLIED_SUBJECTS",
    "HEARTBEAT_SUBJECTS",
    "HELLO_SUBJECT",
    "MAX_PAYLOAD",
    "MAX_SCENARIO_PAYLOAD",
    "QUEUE_GROUP",
    "ErrorBody",
    "ErrorCode",
    "Heartbeat",
    "Hello",
    "HelloAttributes",
    "HelloReply",
    "KillSwitch",
    "PassportState",
    "ProtocolError",
    "ScenarioAck",
    "ScenarioPush",
    "StatusUpdate",
    "applied_subject",
    "decode",
    "encode",
    "error_of",
    "heartbeat_subject",
    "inbox_prefix",
    "kill_subject",
    "passport_subject",
    "scenario_subject",
    "status_subject",
]

HELLO_SUBJECT = "fluxrig.agent.hello"
HEARTBEAT_SUBJECTS = "fluxrig.event.heartbeat.*"
APPLIED_SUBJECTS = "fluxrig.event.applied.*"
QUEUE_GROUP = "mixer"
MAX_PAYLOAD = 64 * 1024
MAX_SCENARIO_PAYLOAD = 1024 * 1024 + MAX_PAYLOAD  # a scenario document (≤ 1 MiB) + envelope

ErrorCode = Literal[
    "bad_request",
    "unauthorized",
    "bad_name",
    "name_conflict",
    "retired",
    "revoked",
    "exhausted",
    "internal",
]


def inbox_prefix(rack: str) -> str:
    """The prefix of a rack's reply subjects: the hub lets rack `rack` read only these."""
    return f"_INBOX.{rack}"


def kill_subject(rack: str) -> str:
    """The kill switch: the mixer revoked this rack."""
    return f"flux.ctrl.{rack}.kill"


def heartbeat_subject(rack: str) -> str:
    return f"fluxrig.event.heartbeat.{rack}"


def status_subject(rack: str) -> str:
    return f"fluxrig.rack.{rack}.status"


def scenario_subject(rack: str) -> str:
    """Where the orchestrator pushes the rack's scenario."""
    return f"fluxrig.rack.{rack}.scenario"


def passport_subject(rack: str) -> str:
    """Where the mixer sends an active rack its signed passport."""
    return f"fluxrig.rack.{rack}.passport"


def applied_subject(rack: str) -> str:
    """Where the rack says whether it applied a pushed scenario."""
    return f"fluxrig.event.applied.{rack}"


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the text says what is wrong with it."""


class _Message(BaseModel):
    # Unknown keys are ignored: a newer peer may add fields without breaking an older one.
    model_config = ConfigDict(extra="ignore", frozen=True)


M = TypeVar("M", bound=_Message)


class HelloAttributes(_Message):
    """What the rack says about itself; stored as the registry's `attributes`."""

    model_config = ConfigDict(extra="allow", frozen=True)

    hostname: str | None = None
    pid: int | None = None
    python: str | None = None
    public_key: str | None = None


class PassportState(_Message):
    """What a rack's stored passport says (so the mixer renews it in time): unix seconds, and
    the digest of the scenario it carries."""

    issued_at: int
    expires_at: int
    scenario: str | None = None


class Hello(_Message):
    """The rack's announcement; the mixer checks the name (NAME_PATTERN of scenarios), the
    bootstrap `token` (when the mixer has one) and keeps the `csr` to certify the rack's key."""

    name: str
    version: str | None = None
    scenario: str | None = None  # CAS digest of the scenario the rack runs
    token: str | None = Field(default=None, max_length=1024, repr=False)
    csr: str | None = Field(default=None, max_length=16 * 1024)  # PEM, CN = the rack's name
    passport: PassportState | None = None
    attributes: HelloAttributes = Field(default_factory=HelloAttributes)


class HelloReply(_Message):
    """`certificate` (PEM, for the rack's key), `ca` (the cluster CA, PEM) and `leafnode_port`
    (the hub's Snake port) come when the rack may open the Snake: it is adopted."""

    status: str
    machine_id: int = Field(ge=1, le=65535)
    entity_id: int
    heartbeat_interval: float = Field(gt=0)
    certificate: str | None = Field(default=None, max_length=16 * 1024)
    ca: str | None = Field(default=None, max_length=16 * 1024)
    leafnode_port: int | None = Field(default=None, ge=1, le=65535)


class KillSwitch(_Message):
    """The mixer revoked the rack: stop every gear, forget the passport and certificate."""

    reason: str = Field(default="revoked", max_length=1024)


class ErrorBody(_Message):
    code: str
    message: str


class HeartbeatStats(_Message):
    model_config = ConfigDict(extra="allow", frozen=True)

    cpu_percent: float | None = None
    rss_bytes: int | None = None
    load1: float | None = None
    gears: int | None = None


class Heartbeat(_Message):
    """`status` is what the rack believes its status is: the mixer corrects it when it differs."""

    name: str
    ts: float
    status: str | None = None
    scenario: str | None = None  # CAS digest of the scenario the rack runs
    passport: PassportState | None = None
    stats: HeartbeatStats = Field(default_factory=HeartbeatStats)


class StatusUpdate(_Message):
    status: str
    machine_id: int


class ScenarioPush(_Message):
    """The scenario a rack must run: the whole stored document (the rack keeps the gears whose
    `deploy` is its name or empty). `digest` None (and no document) means: run no gears.
    `activation` numbers the mixer's activation this push belongs to; the ack repeats it."""

    activation: int
    digest: str | None = None
    ref: str | None = None
    document: str | None = Field(default=None, max_length=1024 * 1024)
    rollback: bool = False  # a failed activation puts the rack back on this one

    @model_validator(mode="after")
    def _whole(self) -> ScenarioPush:
        if (self.digest is None) != (self.document is None):
            raise ValueError("`digest` and `document` come together (both or neither)")
        return self


class ScenarioAck(_Message):
    """The rack's answer to a push: applied (`ok`), or not, with the reason; `report` says
    which gears started, restarted, stopped or stayed."""

    name: str
    activation: int
    digest: str | None = None  # the pushed scenario this answer is about
    running: str | None = None  # what the rack runs now (`digest` if ok, else its previous one)
    ok: bool
    error: str | None = None
    report: str | None = None


def encode(message: BaseModel | dict[str, Any]) -> bytes:
    if isinstance(message, BaseModel):
        return message.model_dump_json(exclude_none=True).encode()
    return json.dumps(message, separators=(",", ":")).encode()


def decode(kind: type[M], data: bytes, what: str, *, limit: int = MAX_PAYLOAD) -> M:
    """Parse `data` as a `kind`; ProtocolError says what is wrong, naming the field."""
    if len(data) > limit:
        raise ProtocolError(f"{what} is {len(data)} bytes; the limit is {limit}")
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{what} is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(raw).__name__}")
    try:
        return kind.model_validate(raw)
    except ValidationError as exc:
        raise ProtocolError(f"{what}: {_problems(exc)}") from None


def error_of(data: bytes) -> ErrorBody | None:
    """The `error` of a reply, if it is an error reply."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(raw, dict) and isinstance(raw.get("error"), dict):
        try:
            return ErrorBody.model_validate(raw["error"])
        except ValidationError:
            return None
    return None


def _problems(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "(message)"
        if err["type"] == "missing":
            parts.append(f"field '{field}' is missing")
        else:
            parts.append(f"field '{field}': {str(err['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)
