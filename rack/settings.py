"""Rack settings: flags > `FLUXRIG_*` environment > `[rack]` table of fluxrig.toml > defaults.

    settings = load_settings(Path("fluxrig.toml"), {"log_level": "DEBUG"})

fluxrig.toml::

    [rack]
    name = "edge-1"
    queue_depth = 4096

A bad value raises `SettingsError` naming the key and where it came from (flag, environment
variable, or file); so does an unknown key in `[rack]` or among the flags. The layering itself
is `rack.config_layers`, shared with the mixer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from rack.config_layers import TomlSource, existing, load_layered
from rack.model.scenario import NAME_PATTERN

DEFAULT_CONFIG_FILE = Path("fluxrig.toml")
ENV_PREFIX = "FLUXRIG_"
TABLE = "rack"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class RackSettings(BaseSettings):
    """How one rack runs (not what it runs: that is the scenario)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="forbid", frozen=True
    )

    name: str = Field(
        default="standalone",
        pattern=NAME_PATTERN,
        description="Rack name: selects the scenario's gears deployed to this rack and names "
        "it towards the mixer.",
    )
    state_dir: Path = Field(
        default=Path(".fluxrig"),
        description="Directory for the rack's local state (passport, JetStream store).",
    )
    log_level: LogLevel = Field(
        default="INFO", description="Lowest level logged: DEBUG, INFO, WARNING or ERROR."
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="Log line format: `text` for people, `json` for collectors."
    )
    grace_period: float = Field(
        default=10.0,
        ge=0,
        description="Seconds a stopping rack lets gears drain in-flight messages before it "
        "cancels them.",
    )
    start_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds every gear has to finish `start` before the rack gives up.",
    )
    queue_depth: int = Field(
        default=1024,
        ge=1,
        description="Capacity of each memory wire's inbox; a full inbox pushes back upstream.",
    )
    restart_backoff_initial: float = Field(
        default=0.1, gt=0, description="Seconds before the first restart of a failed gear."
    )
    restart_backoff_max: float = Field(
        default=30.0,
        gt=0,
        description="Upper bound in seconds of the doubling delay between restarts of a gear.",
    )
    watch: bool = Field(
        default=True, description="Reload the scenario when its file changes (standalone rack)."
    )
    watch_interval: float = Field(
        default=1.0, gt=0, description="Seconds between checks of the scenario file for changes."
    )
    machine_id: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="16-bit machine id embedded in every fluxID (the mixer's registry assigns "
        "it; 0 for a standalone rack).",
    )
    nats_url: str | None = Field(
        default=None,
        pattern=r"^(nats|tls)://\S+$",
        description="Use this NATS server for standard wires instead of starting the rack's "
        "embedded nats-server (e.g. nats://127.0.0.1:4222).",
    )
    mixer_url: str | None = Field(
        default=None,
        pattern=r"^(nats|tls)://\S+$",
        description="NATS URL of the mixer's hub (e.g. nats://mixer:4222): with no scenario "
        "file, the rack enrolls there and runs the scenario the mixer pushes once adopted.",
    )
    bootstrap_token: SecretStr | None = Field(
        default=None,
        description="The mixer's enrollment secret, presented in the rack's hello (also from "
        "FLUXRIG_BOOTSTRAP_TOKEN). Never logged.",
    )
    nats_connect_timeout: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Seconds to keep trying to reach NATS when a scenario with standard wires is "
        "applied; past that the scenario is not applied.",
    )
    nats_host: str = Field(
        default="127.0.0.1",
        description="Listen address of the embedded nats-server (started only when the scenario "
        "has standard wires and `nats_url` is unset).",
    )
    nats_port: int = Field(
        default=4223,
        ge=0,
        le=65535,
        description="Client port of the embedded nats-server (0 = any free port; the URL is "
        "written to `<state_dir>/nats.url`).",
    )
    telemetry: bool | None = Field(
        default=None,
        description="Export traces and metrics with OpenTelemetry over OTLP (endpoint, protocol "
        "and headers from the standard OTEL_* variables). Unset: on for a rack managed by the "
        "mixer (default endpoint http://<mixer host>:4318) or when OTEL_EXPORTER_OTLP_ENDPOINT is "
        "set, off otherwise. See docs/telemetry.md.",
    )
    trace_ratio: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Fraction of the messages entering the rack (emitted by an I/O gear or a "
        "generator) that are traced; a traced message is traced through every gear, wire and "
        "rack it crosses. OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG override it.",
    )
    trace_rate_limit: float = Field(
        default=20.0,
        ge=0,
        description="At most this many new traces per second on the rack, whatever the ratio: "
        "a traced message costs the rack ~0.2 ms per span, so this bounds tracing's share of "
        "a busy rack's CPU (0 = no limit).",
    )
    telemetry_buffer: int = Field(
        default=2048,
        ge=1,
        le=1_000_000,
        description="Spans (and, separately, metric data points) kept while the OTLP endpoint "
        "cannot be reached; past it the oldest are dropped and counted "
        "(`fluxrig.telemetry.dropped`). Sent when the endpoint is back. Each kept span is ~11 "
        "objects the garbage collector walks: a large buffer slows a busy rack during outages.",
    )
    telemetry_stop_timeout: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Seconds a stopping rack waits for its last telemetry to be exported.",
    )
    max_taps: int = Field(
        default=8,
        ge=0,
        le=1000,
        description="Live taps (`fluxrig tail`) that may run at once on this rack; 0 refuses "
        "every tap.",
    )
    tap_queue_depth: int = Field(
        default=256,
        ge=1,
        le=65536,
        description="Messages a live tap holds for its viewer; past that they are dropped (and "
        "counted), never waited for: a slow viewer does not slow the wire.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _backoff(self) -> RackSettings:
        if self.restart_backoff_max < self.restart_backoff_initial:
            raise ValueError(
                f"restart_backoff_max ({self.restart_backoff_max}) is below "
                f"restart_backoff_initial ({self.restart_backoff_initial})"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """`RackSettings()`: keyword arguments > environment > ./fluxrig.toml `[rack]`."""
        return (
            init_settings,
            env_settings,
            TomlSource(settings_cls, existing(DEFAULT_CONFIG_FILE), TABLE),
        )


def load_settings(config_file: Path | None, overrides: dict[str, Any]) -> RackSettings:
    """Settings from flags (`overrides`; None values ignored), environment, file, defaults.

    `config_file` None means ./fluxrig.toml when it exists; a named file must exist.
    """
    return load_layered(
        RackSettings,
        file=config_file,
        default_file=DEFAULT_CONFIG_FILE,
        table=TABLE,
        env_prefix=ENV_PREFIX,
        flags=overrides,
        what="rack settings",
    )
