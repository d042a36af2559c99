"""The attribute names fluxrig puts on its telemetry, and the columns the hub promotes them to.

The rack sets them (`rack.telemetry.names` defines them, for both sides); the hub copies
them into columns of its tables so that "every span of gear `decode` on rack `edge-1`" is a
plain `WHERE`, not a JSON lookup.

Resource attributes (one set per rack process):

| attribute               | column          | tables                        |
|-------------------------|-----------------|-------------------------------|
| `service.name`          | `service_name`  | spans, metric_points, logs    |
| `fluxrig.rack`          | `rack`          | spans, metric_points, logs    |
| `fluxrig.entity_id`     | `entity_id`     | spans                         |
| `fluxrig.scenario`      | `scenario`      | spans, metric_points          |
| `fluxrig.scenario_hash` | `scenario_hash` | spans                         |

Span, data point and log record attributes:

| attribute         | column    | tables                     |
|-------------------|-----------|----------------------------|
| `fluxrig.gear`    | `gear`    | spans, metric_points, logs |
| `fluxrig.wire`    | `wire`    | metric_points              |
| `fluxrig.flux_id` | `flux_id` | spans                      |

A column takes the attribute of the span, point or record when it has one, else the resource's
(so a rack may also put `fluxrig.gear` on a per-gear resource). Values are stored as text
(`fluxrig.entity_id` and `fluxrig.flux_id` are 64-bit numbers: send them as strings or ints).
The attributes stay in the `attributes` / `resource` JSON columns as well.
"""

from __future__ import annotations

from rack.telemetry.names import (
    ENTITY_ID,
    FLUX_ID,
    GEAR,
    RACK,
    SCENARIO,
    SCENARIO_HASH,
    SERVICE_NAME,
    WIRE,
)

__all__ = [
    "ENTITY_ID",
    "FLUX_ID",
    "GEAR",
    "PROMOTED",
    "RACK",
    "SCENARIO",
    "SCENARIO_HASH",
    "SERVICE_NAME",
    "WIRE",
]


# column name -> attribute name, for every promoted attribute
PROMOTED: dict[str, str] = {
    "service_name": SERVICE_NAME,
    "rack": RACK,
    "entity_id": ENTITY_ID,
    "scenario": SCENARIO,
    "scenario_hash": SCENARIO_HASH,
    "gear": GEAR,
    "wire": WIRE,
    "flux_id": FLUX_ID,
}
