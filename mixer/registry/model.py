"""The registry's data: rack statuses, the `RackRecord` value, and the `registry` table schema.

Status transitions (anything not listed raises RackConflictError naming what is allowed)::

    from \\ op  hello/heartbeat   adopt   suspend    resume            retire   sweep (missed)
    (new)       pending*          -       -          -                 -        -
    pending     pending*          active  -          -                 retired  offline
    active      active            active  suspended  active            retired  offline
    offline     active | pending  active  suspended  -                 retired  offline
    suspended   suspended         -       suspended  active | pending  retired  suspended
    retired     refused           -       -          -                 retired  retired

    hello(auto_adopt=True) turns the starred `pending` into `active`.
    `active | pending`: `active` if the rack was ever adopted, else `pending` — going offline or
    being suspended never adopts a rack and never forgets an adoption (the `adopted` column).

`rename` keeps status and MachineID in every status (renaming a retired rack frees its name).
A retired rack keeps its row, so its MachineID is never handed out again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mixer.migrations import Migration
from rack.model.ids import EntityId


class RackStatus(enum.StrEnum):
    """Where a rack is in its lifecycle (seed: identity & registry, plus suspended/retired)."""

    PENDING = "pending"  # enrolled, heartbeat only: no gears, no telemetry
    ACTIVE = "active"  # adopted: receives its passport and scenario
    OFFLINE = "offline"  # missed too many heartbeats
    SUSPENDED = "suspended"  # stopped by an operator; heartbeats do not reactivate it
    RETIRED = "retired"  # decommissioned for good; its MachineID is never reused


# Which statuses each operation accepts (for the error messages and the checks).
ADOPTABLE = frozenset({RackStatus.PENDING, RackStatus.OFFLINE, RackStatus.ACTIVE})
SUSPENDABLE = frozenset({RackStatus.ACTIVE, RackStatus.OFFLINE, RackStatus.SUSPENDED})
RESUMABLE = frozenset({RackStatus.SUSPENDED, RackStatus.ACTIVE})
SWEEPABLE = frozenset({RackStatus.ACTIVE, RackStatus.PENDING})


@dataclass(frozen=True, slots=True)
class RackRecord:
    """One row of the `registry` table. Timestamps are timezone-aware (UTC)."""

    entity_id: int
    type_id: int
    machine_id: int
    name: str
    status: RackStatus
    adopted: bool
    version: str | None
    attributes: dict[str, Any]
    stats: dict[str, Any]
    last_seen: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def entity(self) -> EntityId:
        """The fluxEntityID as a structured value (type + MachineID)."""
        return EntityId.from_int(self.entity_id)

    @property
    def public_key(self) -> str | None:
        """The rack's public key as announced in its hello attributes, if any."""
        key = self.attributes.get("public_key")
        return str(key) if key is not None else None


COLUMNS = (
    "entity_id, type_id, machine_id, name, status, adopted, version, attributes, stats, "
    "last_seen, created_at, updated_at"
)

REGISTRY_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="create the registry table",
        statements=(
            """
            CREATE TABLE registry (
                entity_id  UBIGINT   PRIMARY KEY,
                type_id    USMALLINT NOT NULL,
                machine_id USMALLINT NOT NULL UNIQUE,
                name       TEXT      NOT NULL UNIQUE,
                status     TEXT      NOT NULL CHECK (status IN
                               ('pending', 'active', 'offline', 'suspended', 'retired')),
                adopted    BOOLEAN   NOT NULL DEFAULT false,
                version    TEXT,
                attributes JSON      NOT NULL DEFAULT '{}',
                stats      JSON      NOT NULL DEFAULT '{}',
                last_seen  TIMESTAMP,
                created_at TIMESTAMP NOT NULL,
                updated_at TIMESTAMP NOT NULL
            )
            """,
        ),
    ),
)
