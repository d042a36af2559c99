"""64-bit identifiers: the time-ordered fluxID and the fluxEntityID.

fluxID layout (most significant bit first)::

    | 40 bits: ms since 2025-01-01 UTC | 16 bits: machine id | 8 bits: sequence |

40 bits of milliseconds last until 2059. IDs from one generator are strictly increasing: when the
wall clock steps back, or more than 256 IDs are asked for within one millisecond, the generator
keeps counting from its own last timestamp ("borrowing" future milliseconds) instead of repeating
or waiting. IDs from different machine ids can never collide, so racks need no coordination.

fluxEntityID layout::

    | 8 bits: 0 | 8 bits: entity type | 16 bits: machine id | 32 bits: instance (0 for nodes) |
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
TIME_BITS = 40
MACHINE_BITS = 16
SEQ_BITS = 8
MAX_MACHINE_ID = (1 << MACHINE_BITS) - 1
_SEQ_MASK = (1 << SEQ_BITS) - 1
_MACHINE_SHIFT = SEQ_BITS
_TIME_SHIFT = SEQ_BITS + MACHINE_BITS
_MAX_TICK = (1 << TIME_BITS) - 1


def _check_machine_id(machine_id: int, *, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if not isinstance(machine_id, int) or not low <= machine_id <= MAX_MACHINE_ID:
        raise ValueError(
            f"machine id must be an integer in {low}..{MAX_MACHINE_ID}, got {machine_id!r}"
        )


class FluxIdGenerator:
    """Generates time-ordered, strictly increasing 64-bit fluxIDs for one machine id.

    Machine id 0 is reserved for standalone racks that have not been enrolled.
    """

    __slots__ = ("_clock", "_last_tick", "_prefix", "_seq", "machine_id")

    def __init__(self, machine_id: int = 0, clock: object = None) -> None:
        _check_machine_id(machine_id, allow_zero=True)
        self.machine_id = machine_id
        self._prefix = machine_id << _MACHINE_SHIFT
        self._clock = clock if callable(clock) else time.time_ns
        self._last_tick = -1
        self._seq = 0

    def next_id(self) -> int:
        tick = self._clock() // 1_000_000 - EPOCH_MS
        if tick > self._last_tick:
            self._last_tick = tick
            self._seq = 0
        else:
            # Same millisecond, or the clock stepped back: keep counting from our own tick.
            self._seq += 1
            if self._seq > _SEQ_MASK:
                self._last_tick += 1
                self._seq = 0
        if self._last_tick > _MAX_TICK or self._last_tick < 0:
            raise OverflowError("the clock is outside the fluxID time range (2025..2059)")
        return (self._last_tick << _TIME_SHIFT) | self._prefix | self._seq

    __call__ = next_id


@dataclass(frozen=True, slots=True)
class FluxIdParts:
    unix_ms: int
    machine_id: int
    sequence: int


def parse_flux_id(flux_id: int) -> FluxIdParts:
    """Split a fluxID into its timestamp (unix ms), machine id and sequence."""
    if not 0 <= flux_id < 1 << 64:
        raise ValueError(f"a fluxID is an unsigned 64-bit integer, got {flux_id!r}")
    return FluxIdParts(
        unix_ms=(flux_id >> _TIME_SHIFT) + EPOCH_MS,
        machine_id=(flux_id >> _MACHINE_SHIFT) & MAX_MACHINE_ID,
        sequence=flux_id & _SEQ_MASK,
    )


class EntityType(enum.IntEnum):
    """Entity types of the registry (seed: identity & registry)."""

    MIXER = 2
    RACK = 3
    SNAKE = 8


@dataclass(frozen=True, slots=True)
class EntityId:
    """A 64-bit fluxEntityID: entity type + 16-bit MachineID (+ a 32-bit instance, 0 for nodes)."""

    type: EntityType
    machine_id: int
    instance: int = 0

    def __post_init__(self) -> None:
        _check_machine_id(self.machine_id, allow_zero=False)
        if not 0 <= self.instance < 1 << 32:
            raise ValueError(f"instance must fit in 32 bits, got {self.instance!r}")

    def __int__(self) -> int:
        return (int(self.type) << 48) | (self.machine_id << 32) | self.instance

    @classmethod
    def from_int(cls, value: int) -> EntityId:
        if not 0 <= value < 1 << 56:
            raise ValueError(f"not a fluxEntityID: {value!r}")
        try:
            etype = EntityType((value >> 48) & 0xFF)
        except ValueError as exc:
            raise ValueError(f"not a fluxEntityID: unknown entity type in {value!r}") from exc
        return cls(etype, (value >> 32) & MAX_MACHINE_ID, value & 0xFFFF_FFFF)

    def __str__(self) -> str:
        return f"{self.type.name.lower()}:{self.machine_id}"
