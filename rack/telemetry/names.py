"""The names fluxrig's telemetry uses: attributes, metrics, the instrumentation scope.

The attribute names mirror `mixer.telemetry.attributes` (the mixer's OTLP hub promotes them to
columns); the rack never imports the mixer, so they are repeated here and a test keeps the two
lists equal.
"""

from __future__ import annotations

# -- attributes the hub promotes to columns (mixer/telemetry/attributes.py) ----------------------

SERVICE_NAME = "service.name"
RACK = "fluxrig.rack"
ENTITY_ID = "fluxrig.entity_id"
SCENARIO = "fluxrig.scenario"
SCENARIO_HASH = "fluxrig.scenario_hash"
GEAR = "fluxrig.gear"
WIRE = "fluxrig.wire"
FLUX_ID = "fluxrig.flux_id"

# -- other attributes ------------------------------------------------------------------------------

PORT = "fluxrig.port"  # the input port of a hop, the output port of an ingress
DIRECTION = "fluxrig.direction"  # messages: `in` or `out`
SIGNAL = "fluxrig.signal"  # telemetry buffer: `spans` or `metrics`

SERVICE = "fluxrig-rack"
SCOPE = "fluxrig.rack"

# -- metrics ---------------------------------------------------------------------------------------

MESSAGES = "fluxrig.gear.messages"
ERRORS = "fluxrig.gear.errors"
DROPPED = "fluxrig.gear.dropped"
QUEUE_DEPTH = "fluxrig.gear.queue.depth"
PROCESS_DURATION = "fluxrig.gear.process.duration"
GEAR_PREFIX = "fluxrig.gear."  # + a counter or gauge a gear keeps in its GearStats
WIRE_PENDING = "fluxrig.wire.pending"
WIRE_COUNTERS = ("delivered", "acked", "failed", "dead_lettered")  # fluxrig.wire.<name>
TELEMETRY_DROPPED = "fluxrig.telemetry.dropped"
TELEMETRY_BUFFERED = "fluxrig.telemetry.buffered"

# Upper bounds (seconds) of the process-duration buckets: 10 µs … 10 s, 1-2.5-5 steps.
DURATION_BOUNDS: tuple[float, ...] = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
