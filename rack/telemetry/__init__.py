"""OpenTelemetry for every gear and wire, exported over OTLP (docs/telemetry.md, "Rack telemetry").

- `config`: on/off, protocol, endpoint and sampling from the settings and OTEL_* (no SDK import).
- `providers`: `Telemetry`, the SDK providers of one rack, started at its first scenario.
- `tracing`: one span per fluxMsg hop, the traceparent carried in `FluxMsg.trace`.
- `metrics`: per gear and per wire instruments, read from the runtime's counters.
- `outbox`: the bounded buffer and sender thread between the SDK and the exporters.
- `names`: attribute and metric names (the mixer's hub promotes the attributes to columns).

Only `config` and `names` are imported by a rack whose telemetry is off: the SDK is loaded when
telemetry starts.
"""

from rack.telemetry.config import TelemetryConfig

__all__ = ["TelemetryConfig"]
