"""`TelemetryConfig`: whether a rack exports telemetry, where to, and how it samples traces.

Resolved once per rack from its settings and the standard OpenTelemetry variables:

- on/off: `OTEL_SDK_DISABLED=true` turns it off; else the `telemetry` setting decides; unset,
  it is on for a rack managed by the mixer (`mixer_url`) or when an OTLP endpoint variable is set.
- protocol: `OTEL_EXPORTER_OTLP_PROTOCOL` (or `..._TRACES_PROTOCOL`, `..._METRICS_PROTOCOL`),
  `http/protobuf` by default; `grpc` needs the `otlp-grpc` extra.
- endpoint: the SDK reads `OTEL_EXPORTER_OTLP_ENDPOINT` (and the per-signal ones, headers,
  timeout, certificates) itself; without them a managed rack sends to its mixer
  (`http://<mixer host>:4318`, or `:4317` over gRPC) and a standalone one to the SDK's default
  (localhost).
- sampling: `OTEL_TRACES_SAMPLER` (default `parentbased_traceidratio`) and
  `OTEL_TRACES_SAMPLER_ARG` (default: the `trace_ratio` setting).

Nothing here imports the OpenTelemetry SDK: a rack with telemetry off never loads it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from rack.errors import SettingsError
from rack.settings import RackSettings

__all__ = ["GRPC_EXTRA", "Protocol", "Signal", "TelemetryConfig"]

Protocol = Literal["grpc", "http/protobuf"]
Signal = Literal["traces", "metrics"]
GRPC_EXTRA = "otlp-grpc"
DEFAULT_SAMPLER = "parentbased_traceidratio"
# sampler name -> (ratio fixed by the name or None: from the argument, parent-based)
SAMPLERS: dict[str, tuple[float | None, bool]] = {
    "always_on": (1.0, False),
    "always_off": (0.0, False),
    "traceidratio": (None, False),
    "parentbased_always_on": (1.0, True),
    "parentbased_always_off": (0.0, True),
    "parentbased_traceidratio": (None, True),
}
_PORTS: dict[Protocol, int] = {"grpc": 4317, "http/protobuf": 4318}
_TRUE = ("true", "1", "yes", "on")


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """What `Telemetry` needs to start. `endpoints[signal]` None: the SDK's own (OTEL_* or its
    default); else the base URL chosen by the rack. `sampler` outside `SAMPLERS` is built by the
    SDK from OTEL_TRACES_SAMPLER (every message then goes through it: slower)."""

    enabled: bool
    reason: str
    protocols: dict[Signal, Protocol]
    endpoints: dict[Signal, str | None]
    sampler: str = DEFAULT_SAMPLER
    ratio: float = 0.01
    rate_limit: float = 20.0
    buffer: int = 2048
    stop_timeout: float = 5.0

    @property
    def known_sampler(self) -> bool:
        return self.sampler in SAMPLERS

    @property
    def parent_based(self) -> bool:
        return self.sampler.startswith("parentbased_")

    @classmethod
    def resolve(
        cls, settings: RackSettings, environ: Mapping[str, str] | None = None
    ) -> TelemetryConfig:
        """Raises `SettingsError` for an unusable OTEL_* value (protocol, sampler argument)."""
        env = os.environ if environ is None else environ
        enabled, reason = _enabled(settings, env)
        protocols: dict[Signal, Protocol] = {}
        endpoints: dict[Signal, str | None] = {}
        for signal in ("traces", "metrics"):
            protocols[signal] = _protocol(env, signal) if enabled else "http/protobuf"
            endpoints[signal] = _endpoint(env, signal, settings.mixer_url, protocols[signal])
        sampler, ratio = _sampler(env, settings.trace_ratio)
        return cls(
            enabled=enabled,
            reason=reason,
            protocols=protocols,
            endpoints=endpoints,
            sampler=sampler,
            ratio=ratio,
            rate_limit=settings.trace_rate_limit,
            buffer=settings.telemetry_buffer,
            stop_timeout=settings.telemetry_stop_timeout,
        )

    def describe(self) -> str:
        """For the log line at start: where each signal goes, and the sampling."""
        where = {
            f"{signal} {self.protocols[signal]} to "
            f"{self.endpoints[signal] or 'the OTEL_EXPORTER_OTLP_* endpoint (or the SDK default)'}"
            for signal in ("traces", "metrics")
        }
        sampling = f"{self.sampler} ({self.ratio:g})" if self.known_sampler else self.sampler
        limit = f", at most {self.rate_limit:g} new traces/s" if self.rate_limit else ""
        return f"{'; '.join(sorted(where))}; sampler {sampling}{limit}"


def _get(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def _endpoint_variables(signal: Signal) -> tuple[str, str]:
    return "OTEL_EXPORTER_OTLP_ENDPOINT", f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"


def _enabled(settings: RackSettings, env: Mapping[str, str]) -> tuple[bool, str]:
    if _get(env, "OTEL_SDK_DISABLED").lower() in _TRUE:
        return False, "OTEL_SDK_DISABLED is set"
    if settings.telemetry is not None:
        return settings.telemetry, f"setting telemetry = {str(settings.telemetry).lower()}"
    if settings.mixer_url:
        return True, "the rack is managed by the mixer"
    for signal in ("traces", "metrics"):
        for name in _endpoint_variables(signal):
            if _get(env, name):
                return True, f"{name} is set"
    return False, "standalone rack without OTEL_EXPORTER_OTLP_ENDPOINT or telemetry = true"


def _protocol(env: Mapping[str, str], signal: Signal) -> Protocol:
    specific = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
    name = specific if _get(env, specific) else "OTEL_EXPORTER_OTLP_PROTOCOL"
    value = _get(env, name).lower() or "http/protobuf"
    if value == "http/protobuf":
        return "http/protobuf"
    if value == "grpc":
        if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is None:
            raise SettingsError(
                f"{name}=grpc needs the OTLP/gRPC exporter, which the rack's base install leaves "
                f"out: install the '{GRPC_EXTRA}' extra (pip install 'fluxrig[{GRPC_EXTRA}]'), "
                "or use http/protobuf"
            )
        return "grpc"
    raise SettingsError(
        f"{name}={value!r} is not supported: use http/protobuf (the default) or grpc"
    )


def _endpoint(
    env: Mapping[str, str], signal: Signal, mixer_url: str | None, protocol: Protocol
) -> str | None:
    if any(_get(env, name) for name in _endpoint_variables(signal)) or not mixer_url:
        return None  # the SDK reads the variables itself, or uses its default
    host = urlsplit(mixer_url).hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{_PORTS[protocol]}"


def _sampler(env: Mapping[str, str], trace_ratio: float) -> tuple[str, float]:
    name = _get(env, "OTEL_TRACES_SAMPLER").lower() or DEFAULT_SAMPLER
    fixed, _ = SAMPLERS.get(name, (1.0, False))
    if fixed is not None:
        return name, fixed
    arg = _get(env, "OTEL_TRACES_SAMPLER_ARG")
    if not arg:
        return name, trace_ratio
    try:
        ratio = float(arg)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise SettingsError(
            f"OTEL_TRACES_SAMPLER_ARG={arg!r} is not a ratio between 0 and 1 (sampler {name})"
        )
    return name, ratio
