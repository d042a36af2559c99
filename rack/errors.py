"""The rack's exception tree. Every error the rack raises on purpose derives from `FluxError`.

FluxError
├── MessageError            a fluxMsg is malformed or breaks a hard limit
│   ├── MessageDecodeError  bytes are not a valid CBOR fluxMsg
│   └── MessageLimitError   too many hops or too many bytes
├── ScenarioError           a scenario cannot be loaded or fails pre-flight validation
├── PassportError           a passport cannot be trusted, read or written
├── GearError               a gear failed (config, start, or processing one message)
│   ├── GearConfigError     config rejected by the gear's config model
│   └── UnknownGearError    no gear registered under that type name
├── SettingsError           rack settings are invalid
├── NatsServerError         the nats-server child cannot be found, started or kept running
├── ApiError                the mixer's REST API refused a request or cannot be reached
└── RackError               the runtime itself cannot go on (e.g. nothing to run)
"""

from __future__ import annotations

from dataclasses import dataclass


class FluxError(Exception):
    """Base of every error fluxrig raises on purpose."""


class MessageError(FluxError):
    """A fluxMsg is malformed or breaks a hard limit."""


class MessageDecodeError(MessageError):
    """Bytes are not a valid CBOR-encoded fluxMsg."""


class MessageLimitError(MessageError):
    """A fluxMsg exceeds the hop or size limit."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One pre-flight validation problem, located by its YAML path (e.g. `gears[1].config.bind`)."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path} (line {self.line})" if self.line else self.path
        return f"{where}: {self.message}"


class ScenarioError(FluxError):
    """A scenario cannot be loaded or fails pre-flight validation; `problems` lists every one."""

    def __init__(self, summary: str, problems: list[Problem] | None = None) -> None:
        self.summary = summary
        self.problems = list(problems or [])
        detail = "".join(f"\n  - {p}" for p in self.problems)
        super().__init__(f"{summary}{detail}")


class PassportError(FluxError):
    """A passport cannot be trusted, read or written; the message says why and what to do."""


class GearError(FluxError):
    """A gear failed: bad config, failed start, or failed to process one message."""


class GearConfigError(GearError):
    """A gear's config was rejected by its config model."""


class UnknownGearError(GearError):
    """No gear is registered under the requested type name."""


class SettingsError(FluxError):
    """Rack settings (fluxrig.toml, FLUXRIG_* environment, flags) are invalid."""


class NatsServerError(FluxError):
    """The nats-server child process cannot be found, did not start, or died.

    `exit_code` is the child's exit status (None if it never ran or was still running);
    `log_lines` holds its fatal lines ([FTL]/[ERR]) followed by the last lines it wrote.
    """

    def __init__(
        self, message: str, *, exit_code: int | None = None, log_lines: list[str] | None = None
    ) -> None:
        self.exit_code = exit_code
        self.log_lines = list(log_lines or [])
        super().__init__(message)


class RackError(FluxError):
    """The rack runtime cannot go on."""


class ApiError(FluxError):
    """The mixer's REST API refused a request, or cannot be reached (`status` None).

    `code` is the API's stable error code (`rack_conflict`, `invalid_scenario`, ...);
    `details` are its located problems, shown one per line after the message.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        details: list[Problem] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = list(details or [])
        super().__init__(message + "".join(f"\n  - {d}" for d in self.details))
