"""Live taps on a rack's wires (`fluxrig tail`): see `rack.tap.service` and docs/telemetry.md."""

from rack.tap.protocol import TapError, TapRequest
from rack.tap.service import TapService
from rack.tap.tap import Tap, TapRegistry

__all__ = ["Tap", "TapError", "TapRegistry", "TapRequest", "TapService"]
