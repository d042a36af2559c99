"""The gear contract: five phases (init, start, process, drain, stop), ports, a config model.

A gear subclasses `Gear[MyConfig]`, sets `type_name`, `summary`, `config_model` and its ports, and
overrides the phases it needs::

    class Upper(Gear[UpperConfig]):
        type_name = "upper"
        summary = "Upper-cases the raw payload."
        config_model = UpperConfig

        async def process(self, msg: FluxMsg, port: str) -> Output:
            msg.raw = msg.raw.upper()
            return msg                      # to the default output port, "out"

`process` may return nothing (`None`), one message (to `out`), a `(port, msg)` pair, or a list
of messages and pairs. Raising sends the message to the gear's `error` port when it is wired
(with `meta["error.reason"]`), else the rack counts and logs it; the rack keeps running.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from rack.model.fluxmsg import FluxMsg

if TYPE_CHECKING:
    from rack.gear.context import GearContext

ERROR_PORT = "error"
DEFAULT_IN = "in"
DEFAULT_OUT = "out"


class GearConfig(BaseModel):
    """Base of every gear's config model: unknown keys are rejected, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ConfigT = TypeVar("ConfigT", bound=GearConfig)

Output = FluxMsg | tuple[str, FluxMsg] | Sequence[FluxMsg | tuple[str, FluxMsg]] | None


def normalize_output(result: Output) -> list[tuple[str, FluxMsg]]:
    """What `process` returned, as `(port, msg)` pairs (used by the runtime and the harness)."""
    if result is None:
        return []
    if isinstance(result, FluxMsg):
        return [(DEFAULT_OUT, result)]
    if isinstance(result, tuple):
        return [result]
    return [(DEFAULT_OUT, item) if isinstance(item, FluxMsg) else item for item in result]


@dataclass(frozen=True, slots=True)
class Ports:
    """Port names of one gear instance. Every gear also has the output port `error`."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class Emitter(Protocol):
    """How a gear injects messages into its output wires (given to `start`).

    `emit(msg)` hands the message over at once and returns False when a downstream wire is full:
    the caller should then stop producing (e.g. pause reading a socket) until `await
    emit.ready()`. `await emit.send(msg)` does both: it waits for room, then hands over.
    Nothing is ever dropped by a full wire; back-pressure travels upstream instead.
    """

    def __call__(self, msg: FluxMsg, port: str = DEFAULT_OUT) -> bool: ...

    async def send(self, msg: FluxMsg, port: str = DEFAULT_OUT) -> None: ...

    async def ready(self) -> None: ...


class Gear(Generic[ConfigT]):
    """Base class of every gear. Subclasses declare the class attributes below."""

    type_name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    config_model: ClassVar[type[GearConfig]] = GearConfig
    inputs: ClassVar[tuple[str, ...]] = (DEFAULT_IN,)
    outputs: ClassVar[tuple[str, ...]] = (DEFAULT_OUT,)

    ctx: GearContext[ConfigT]
    config: ConfigT

    @classmethod
    def parse_config(cls, raw: dict[str, Any] | None) -> ConfigT:
        """Validate raw config (from YAML/TOML) with the gear's model; raises pydantic's error."""
        return cls.config_model.model_validate(raw or {})  # type: ignore[return-value]

    @classmethod
    def ports(cls, config: ConfigT) -> Ports:
        """Ports of an instance with this config. Override when ports depend on config."""
        outputs = cls.outputs if ERROR_PORT in cls.outputs else (*cls.outputs, ERROR_PORT)
        return Ports(cls.inputs, outputs)

    async def init(self, ctx: GearContext[ConfigT]) -> None:
        """Phase 1: take the context and validated config; prepare, but open nothing yet."""
        self.ctx = ctx
        self.config = ctx.config

    async def start(self, emit: Emitter) -> None:
        """Phase 2: open listeners/dialers; keep `emit` to inject messages. Return once ready."""

    async def process(self, msg: FluxMsg, port: str) -> Output:
        """Phase 3: handle one message that arrived on input `port`."""
        return None

    async def drain(self) -> None:
        """Phase 4: stop accepting new input; in-flight work is still delivered to `process`."""

    async def stop(self) -> None:
        """Phase 5: release every resource. Must be idempotent."""
