"""Live taps on a rack's wires (`fluxrig tail`): the rack's side is `rack.tap.service`, a
viewer's side `rack.tap.client` (over NATS) or `rack.api_client.ApiClient.stream` (through the
mixer's REST API); see docs/telemetry.md."""

from rack.tap.client import TapClient, TapUnanswered
from rack.tap.protocol import TapError, TapRequest
from rack.tap.service import TapService
from rack.tap.tap import Tap, TapRegistry

__all__ = [
    "Tap",
    "TapClient",
    "TapError",
    "TapRegistry",
    "TapRequest",
    "TapService",
    "TapUnanswered",
]
