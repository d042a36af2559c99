"""Mixer settings: flags > `FLUXRIG_*` environment > fluxrig-mixer.toml > defaults.

    settings = load_mixer_settings(Path("fluxrig-mixer.toml"), {"api.port": 9090})

fluxrig-mixer.toml::

    [mixer]
    state_dir = "/var/lib/fluxrig-mixer"
    startup_scenario = "payment-flow:v1.0.0"

    [api]
    port = 8090
    auth_token = "..."              # or FLUXRIG_API_TOKEN

    [enrollment]
    auto_adopt = true

Every key `[section] key` is also read from `FLUXRIG_SECTION_KEY` (e.g. `FLUXRIG_API_PORT`,
`FLUXRIG_ENROLLMENT_AUTO_ADOPT`); the API token also from `FLUXRIG_API_TOKEN`. Flags use dotted
keys (`api.port`). The layering, and the errors naming key and source, are
`rack.config_layers`'s.

The mixer refuses to start without an API token unless `[api] insecure` (`--insecure`) says to
run without authentication; a token shorter than 16 characters is refused. The token is a
`SecretStr`: it never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mixer.telemetry.config import TelemetrySection
from rack.config_layers import EnvSource, TomlSource, existing, load_layered

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "ENV_ALIASES",
    "ENV_PREFIX",
    "FLAG_NAMES",
    "MIN_TOKEN_LENGTH",
    "ApiSection",
    "EnrollmentSection",
    "HubSection",
    "MixerSection",
    "MixerSettings",
    "OrchestratorSection",
    "load_mixer_settings",
]

DEFAULT_CONFIG_FILE = Path("fluxrig-mixer.toml")
ENV_PREFIX = "FLUXRIG_"
ENV_ALIASES = {
    "api.auth_token": "FLUXRIG_API_TOKEN",
    "enrollment.bootstrap_token": "FLUXRIG_BOOTSTRAP_TOKEN",
}
MIN_TOKEN_LENGTH = 16
MIB = 1024 * 1024
NO_TOKEN = (
    "no API token: set [api] auth_token or FLUXRIG_API_TOKEN, or pass --insecure to run "
    "without authentication"
)
NO_BOOTSTRAP_TOKEN = (
    "no bootstrap token: set [enrollment] bootstrap_token or FLUXRIG_BOOTSTRAP_TOKEN (racks "
    "present it in their hello), or pass --insecure to let any rack enroll"
)
# How `fluxrig-mixer` spells the flag of each dotted key (for error messages).
FLAG_NAMES = {
    "mixer.state_dir": "--state-dir",
    "mixer.log_level": "--log-level",
    "mixer.log_format": "--log-format",
    "mixer.startup_scenario": "-s/--scenario",
    "mixer.local_rack": "--local-rack",
    "hub.port": "--nats-port",
    "api.port": "--api-port",
    "api.grpc_port": "--grpc-port",
    "api.insecure": "--insecure",
}

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


def _port(default: int, what: str) -> Any:
    return Field(default=default, ge=0, le=65535, description=f"{what} (0 = any free port).")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MixerSection(_Section):
    """`[mixer]`: where the mixer keeps its state, how it logs, what it loads at start."""

    state_dir: Path = Field(
        default=Path(".fluxrig-mixer"),
        description="Directory of the mixer's state: DuckDB database `mixer.duckdb`, CAS blobs "
        "`cas/`, the NATS hub's JetStream store `hub/`.",
    )
    log_level: LogLevel = Field(
        default="INFO", description="Lowest level logged: DEBUG, INFO, WARNING or ERROR."
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="Log line format: `text` for people, `json` for collectors."
    )
    startup_scenario: str = Field(
        default="",
        description="Scenario loaded at start (`-s`): empty resumes the last active one "
        "(nothing if none); a file path (contains `/` or ends in .yaml/.yml, optional "
        "`file://`) is pre-flighted and imported, fatal on error; `name:tag` is resolved "
        "from the store, fatal if missing.",
    )

    local_rack: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$",
        description="Name of a rack the mixer starts and supervises beside itself (`--local-"
        "rack`, the standard tier): it enrolls over the hub, is adopted at once and runs the "
        "active scenario. Its state lives in `<state_dir>/racks/<name>`.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class HubSection(_Section):
    """`[hub]`: the embedded nats-server hub (JetStream) that racks connect to.

    Named `hub`, not `nats`, so its variables (`FLUXRIG_HUB_PORT`, …) never configure a rack
    started from the same environment (the rack's embedded server reads `FLUXRIG_NATS_*`)."""

    host: str = Field(default="127.0.0.1", description="Listen address of the NATS hub.")
    port: int = _port(4222, "Client port of the NATS hub")
    leafnodes: bool = Field(
        default=True,
        description="Open the leaf-node listener racks' Snakes connect to (false: no listener).",
    )
    leafnode_port: int = _port(7422, "Leaf-node port of the NATS hub (used when `leafnodes`)")
    store_dir: Path | None = Field(
        default=None,
        description="JetStream store of the hub; default `<state_dir>/hub`.",
    )
    start_timeout: float = Field(
        default=10.0, gt=0, le=600, description="Seconds the hub has to become ready."
    )


class ApiSection(_Section):
    """`[api]`: the REST and gRPC APIs and their credential."""

    host: str = Field(default="127.0.0.1", description="Listen address of the REST and gRPC APIs.")
    port: int = _port(8090, "Port of the REST API")
    grpc_port: int = _port(8091, "Port of the gRPC API")
    auth_token: SecretStr | None = Field(
        default=None,
        description="Bearer token every API request except health must carry (at least 16 "
        "characters; also from FLUXRIG_API_TOKEN). Never logged.",
    )
    read_token: SecretStr | None = Field(
        default=None,
        description="Optional second bearer token with the read-only role: REST GET (but the "
        "live tap, which shows message payloads) and the read-only telemetry SQL query, gRPC "
        "List/Get/Watch/Query calls only (the rest answers 403 / PERMISSION_DENIED). At least "
        "16 characters, different from `auth_token`. Never logged.",
    )
    insecure: bool = Field(
        default=False,
        description="Allow starting without `auth_token` (the APIs then accept requests without "
        "authentication) and without `[enrollment] bootstrap_token` (any rack may enroll). "
        "Configured tokens are still enforced.",
    )
    tls: bool = Field(
        default=False,
        description="Serve the REST and gRPC APIs over TLS, with `tls_cert`/`tls_key`, or by "
        "default the hub's certificate from the cluster PKI (clients trust "
        "`<state_dir>/pki/ca.crt`: `fluxrig --api-ca`, FLUXRIG_API_CA).",
    )
    tls_cert: Path | None = Field(default=None, description="PEM certificate (chain) of the APIs.")
    tls_key: Path | None = Field(default=None, description="PEM private key of `tls_cert`.")
    max_body_bytes: int = Field(
        default=MIB,
        ge=1024,
        le=64 * MIB,
        description="Largest request body the REST API accepts, in bytes.",
    )
    max_taps: int = Field(
        default=4,
        ge=0,
        le=256,
        description="Live taps (`GET /api/v1/racks/{name}/tap`, `fluxrig tail --api-url`) that "
        "may run through the REST API at once; more answer 503. 0 refuses them all. Each rack "
        "bounds its own taps too (its `max_taps`).",
    )
    tap_buffer: int = Field(
        default=256,
        ge=1,
        le=65536,
        description="Tapped messages that may wait for one slow REST client; past that the mixer "
        "drops them (counted in the stream) instead of slowing its hub connection, the rack or "
        "the wire. A record is at most 128 KiB.",
    )

    @field_validator("auth_token", "read_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"an API token needs at least {MIN_TOKEN_LENGTH} characters; generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return value

    @property
    def token(self) -> str | None:
        """The token in clear, for the API's authentication check only (never log it)."""
        return None if self.auth_token is None else self.auth_token.get_secret_value()

    @property
    def reader_token(self) -> str | None:
        """The read-only token in clear, for the authentication check only."""
        return None if self.read_token is None else self.read_token.get_secret_value()

    @model_validator(mode="after")
    def _roles(self) -> ApiSection:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key come together (both or neither)")
        if self.read_token is not None:
            if self.auth_token is None:
                raise ValueError("read_token needs auth_token (the admin token) as well")
            if self.read_token.get_secret_value() == self.auth_token.get_secret_value():
                raise ValueError("read_token must differ from auth_token")
        return self


class EnrollmentSection(_Section):
    """`[enrollment]`: how racks join and how their presence is tracked."""

    auto_adopt: bool = Field(
        default=False,
        description="Adopt every rack that says hello (status `active` at once) instead of "
        "leaving it `pending` until adopted by a scenario or an operator.",
    )
    heartbeat_interval: float = Field(
        default=5.0, gt=0, le=3600, description="Seconds between a rack's heartbeats."
    )
    max_missed: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Heartbeats a rack may miss before the mixer marks it `offline`.",
    )
    bootstrap_token: SecretStr | None = Field(
        default=None,
        description="Secret a rack must present in its hello to enroll (at least 16 "
        "characters; also from FLUXRIG_BOOTSTRAP_TOKEN; compared in constant time). Required "
        "unless `[api] insecure`. Never logged.",
    )
    passport_ttl: float = Field(
        default=7 * 24 * 3600.0,
        ge=60,
        le=366 * 24 * 3600.0,
        description="Seconds a rack's passport is valid; the mixer renews it when less than "
        "half is left (a rack keeps running on it while the mixer is away).",
    )

    @field_validator("bootstrap_token")
    @classmethod
    def _token_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"a bootstrap token needs at least {MIN_TOKEN_LENGTH} characters; generate one "
                "with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return value

    @property
    def token(self) -> str | None:
        """The bootstrap token in clear, for the hello check only (never log it)."""
        return None if self.bootstrap_token is None else self.bootstrap_token.get_secret_value()


class OrchestratorSection(_Section):
    """`[orchestrator]`: how scenario activations reach the racks."""

    apply_timeout: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Seconds an activation waits for every active rack to say it applied the "
        "scenario (longer than the racks' `start_timeout`); a rack that does not answer in "
        "time fails the activation and the fleet goes back to the previous scenario.",
    )
    push_retry: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds before a rack that reports another scenario than the active one "
        "is pushed the active scenario again (a lost push, a restarted rack).",
    )


class MixerSettings(BaseSettings):
    """How the mixer runs. `MixerSettings()` reads the environment and ./fluxrig-mixer.toml;
    `load_mixer_settings` adds flags and errors that name the source of a bad value."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    mixer: MixerSection = Field(
        default_factory=MixerSection, description="State, logging, startup scenario."
    )
    hub: HubSection = Field(default_factory=HubSection, description="Embedded NATS hub.")
    api: ApiSection = Field(default_factory=ApiSection, description="REST and gRPC APIs.")
    enrollment: EnrollmentSection = Field(
        default_factory=EnrollmentSection, description="Rack enrollment and presence."
    )
    orchestrator: OrchestratorSection = Field(
        default_factory=OrchestratorSection, description="Scenario activation and pushes."
    )
    telemetry: TelemetrySection = Field(
        default_factory=TelemetrySection,
        description="OTLP telemetry hub: receivers, DuckDB tables, Parquet archive, forwarding.",
    )

    @model_validator(mode="after")
    def _checks(self) -> MixerSettings:
        if self.api.auth_token is None and not self.api.insecure:
            raise ValueError(NO_TOKEN)
        if self.enrollment.bootstrap_token is None and not self.api.insecure:
            raise ValueError(NO_BOOTSTRAP_TOKEN)
        ports = {
            "hub.port": self.hub.port,
            "api.port": self.api.port,
            "api.grpc_port": self.api.grpc_port,
        }
        if self.hub.leafnodes:
            ports["hub.leafnode_port"] = self.hub.leafnode_port
        if self.telemetry.enabled:
            ports["telemetry.grpc_port"] = self.telemetry.grpc_port
            ports["telemetry.http_port"] = self.telemetry.http_port
        seen: dict[int, str] = {}
        for key, port in ports.items():
            if port and port in seen:
                raise ValueError(f"{seen[port]} and {key} are both {port}; give each its own port")
            seen[port] = key
        return self

    @property
    def hub_store(self) -> Path:
        """The NATS hub's JetStream store directory."""
        return self.hub.store_dir or self.mixer.state_dir / "hub"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """`MixerSettings()`: keyword arguments > environment > ./fluxrig-mixer.toml."""
        return (
            init_settings,
            EnvSource(settings_cls, ENV_PREFIX, ENV_ALIASES),
            TomlSource(settings_cls, existing(DEFAULT_CONFIG_FILE), None),
        )


def load_mixer_settings(config_file: Path | None, flags: dict[str, Any]) -> MixerSettings:
    """Settings from `flags` (dotted keys; None = not given), environment, file, defaults.

    `config_file` None means ./fluxrig-mixer.toml when it exists; a named file must exist.
    Raises `SettingsError` naming the key and source of every bad value.
    """
    return load_layered(
        MixerSettings,
        file=config_file,
        default_file=DEFAULT_CONFIG_FILE,
        table=None,
        env_prefix=ENV_PREFIX,
        flags=flags,
        env_aliases=ENV_ALIASES,
        flag_names=FLAG_NAMES,
        what="mixer settings",
    )
