"""What the REST API works on: the mixer's store, registry, gear catalogue, orchestrator,
telemetry hub and the way to its racks' live taps, plus its limits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mixer.api.credentials import Credentials
from mixer.registry import RackRecord, Registry
from mixer.store import CasStore
from rack.gear.registry import GearRegistry

if TYPE_CHECKING:
    from mixer.orchestrator import Orchestrator
    from mixer.telemetry import TelemetryHub

DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # JSON bodies; documents inside are bounded again (1 MiB)


@dataclass(frozen=True, slots=True)
class TapAccess:
    """How the tap route reaches racks: the hub's URL with the mixer's own credentials (never
    handed out), and its bounds (`[api] max_taps`, `[api] tap_buffer`)."""

    hub_url: str
    max_taps: int = 4
    buffer: int = 256  # records waiting for one slow HTTP client; past that they are dropped
    answer_timeout: float = 5.0  # seconds for a rack to answer the opening request

    def __repr__(self) -> str:  # the URL carries the mixer's hub password
        return f"TapAccess(max_taps={self.max_taps}, buffer={self.buffer})"


@dataclass(frozen=True, slots=True)
class ApiContext:
    """Everything the handlers need. `auth_token=None` runs the API without authentication
    (only when the operator explicitly asked for an insecure mixer)."""

    store: CasStore
    registry: Registry
    gears: GearRegistry
    auth_token: str | None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    read_token: str | None = None  # read-only role: GET / List*, Get*, Watch* (never alone)
    # Called after an operator changed a rack's status (adopt, suspend, …): the mixer tells the
    # rack at once instead of at its next heartbeat. Must not raise.
    on_rack_change: Callable[[RackRecord], Awaitable[None]] | None = None
    # Scenario activation (None: the API answers activation requests 503, e.g. in unit tests
    # of other routes).
    orchestrator: Orchestrator | None = None
    # The OTLP telemetry hub's queries (None: `[telemetry] enabled = false`, or an API without
    # one; the telemetry routes answer 503).
    telemetry: TelemetryHub | None = None
    # Live taps through the hub (None: the tap route answers 503).
    taps: TapAccess | None = None

    @property
    def credentials(self) -> Credentials | None:
        """The tokens and their roles; None when the API runs without authentication."""
        if self.auth_token is None:
            return None
        return Credentials(self.auth_token, self.read_token)

    def __post_init__(self) -> None:
        if self.auth_token is not None and not self.auth_token.strip():
            raise ValueError("auth_token is empty; set a token, or None to run insecure")
        if self.read_token is not None and self.auth_token is None:
            raise ValueError("read_token needs auth_token (an admin token) as well")
        if self.taps is not None and (self.taps.max_taps < 0 or self.taps.buffer < 1):
            raise ValueError(f"taps need max_taps >= 0 and buffer >= 1, got {self.taps!r}")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be at least 1024, got {self.max_body_bytes}")
