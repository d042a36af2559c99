"""fluxID (time-ordered, strictly increasing) and fluxEntityID (type + MachineID) contracts."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest

from rack.model.ids import (
    EPOCH_MS,
    MAX_MACHINE_ID,
    EntityId,
    EntityType,
    FluxIdGenerator,
    parse_flux_id,
)

MS = 1_000_000  # ns
T0 = (EPOCH_MS + 86_400_000) * MS  # 2025-01-02, in ns


class FakeClock:
    """A clock the test moves by hand (ns since the epoch)."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def take(gen: FluxIdGenerator, n: int) -> list[int]:
    return [gen.next_id() for _ in range(n)]


def assert_strictly_increasing(ids: list[int]) -> None:
    assert all(a < b for a, b in itertools.pairwise(ids))


# -- fluxID ----------------------------------------------------------------------------------


def test_ids_strictly_increase_over_100k_calls() -> None:
    gen = FluxIdGenerator(42)
    ids = take(gen, 100_000)
    assert_strictly_increasing(ids)
    assert all(0 <= i < 1 << 64 for i in ids)
    assert {parse_flux_id(i).machine_id for i in ids} == {42}


def test_call_is_next_id() -> None:
    clock = FakeClock()
    gen = FluxIdGenerator(1, clock=clock)
    first = gen()
    assert gen.next_id() == first + 1


def test_two_generators_with_different_machine_ids_never_collide() -> None:
    clock = FakeClock()  # the same clock: identical timestamps and sequences on both
    a, b = FluxIdGenerator(1, clock=clock), FluxIdGenerator(2, clock=clock)
    ids_a, ids_b = [], []
    for step in range(5_000):
        if step % 7 == 0:
            clock.now += MS
        ids_a.append(a.next_id())
        ids_b.append(b.next_id())
    assert len(set(ids_a) | set(ids_b)) == 10_000


def test_machine_ids_0_and_max_are_usable() -> None:
    for machine_id in (0, MAX_MACHINE_ID):
        flux_id = FluxIdGenerator(machine_id, clock=FakeClock()).next_id()
        assert parse_flux_id(flux_id).machine_id == machine_id


def test_monotonic_when_the_clock_steps_back() -> None:
    clock = FakeClock()
    gen = FluxIdGenerator(7, clock=clock)
    ids = take(gen, 3)
    clock.now -= 5_000 * MS  # NTP steps the wall clock back 5 s
    ids += take(gen, 300)  # also crosses a sequence roll-over while stepped back
    clock.now += 1 * MS  # still behind the generator's own time
    ids += take(gen, 3)
    assert_strictly_increasing(ids)
    clock.now = T0 + 60_000 * MS  # the clock is ahead again: ids follow it
    later = gen.next_id()
    assert later > ids[-1]
    assert parse_flux_id(later).unix_ms == T0 // MS + 60_000
    assert parse_flux_id(later).sequence == 0


def test_more_than_256_ids_in_one_ms_borrow_the_next_ms() -> None:
    clock = FakeClock()
    gen = FluxIdGenerator(3, clock=clock)
    ids = take(gen, 256 * 3 + 10)
    assert_strictly_increasing(ids)
    parts = [parse_flux_id(i) for i in ids]
    assert [p.sequence for p in parts[:256]] == list(range(256))
    assert {p.unix_ms for p in parts[:256]} == {T0 // MS}
    assert parts[256].unix_ms == T0 // MS + 1
    assert parts[256].sequence == 0
    assert parts[-1].unix_ms == T0 // MS + 3
    assert parts[-1].sequence == 9
    # when the real clock reaches the borrowed ms, ids keep counting after the borrowed ones
    clock.now += 2 * MS
    nxt = gen.next_id()
    assert nxt > ids[-1]
    assert parse_flux_id(nxt).unix_ms == T0 // MS + 3


def test_a_new_ms_resets_the_sequence() -> None:
    clock = FakeClock()
    gen = FluxIdGenerator(3, clock=clock)
    take(gen, 5)
    clock.now += MS
    assert parse_flux_id(gen.next_id()).sequence == 0


def test_parse_recovers_machine_id_and_timestamp() -> None:
    before = time.time_ns() // MS
    flux_id = FluxIdGenerator(4321).next_id()
    after = time.time_ns() // MS
    parts = parse_flux_id(flux_id)
    assert parts.machine_id == 4321
    assert before <= parts.unix_ms <= after
    assert parts.sequence == 0


def test_parse_with_an_injected_clock_is_exact() -> None:
    clock = FakeClock(T0 + 123 * MS + 999_999)  # sub-ms part is dropped
    parts = parse_flux_id(FluxIdGenerator(9, clock=clock).next_id())
    assert (parts.unix_ms, parts.machine_id, parts.sequence) == (T0 // MS + 123, 9, 0)


@pytest.mark.parametrize("bad", [-1, 1 << 64, 1 << 70])
def test_parse_rejects_non_u64(bad: int) -> None:
    with pytest.raises(ValueError, match="unsigned 64-bit"):
        parse_flux_id(bad)


@pytest.mark.parametrize("machine_id", [-1, MAX_MACHINE_ID + 1, 1 << 20])
def test_machine_id_out_of_range_is_rejected(machine_id: int) -> None:
    with pytest.raises(ValueError, match=r"machine id must be an integer in 0\.\.65535"):
        FluxIdGenerator(machine_id)


def test_non_integer_machine_id_is_rejected() -> None:
    with pytest.raises(ValueError, match="machine id"):
        FluxIdGenerator("1")  # type: ignore[arg-type]


def test_clock_before_the_epoch_is_refused() -> None:
    gen = FluxIdGenerator(1, clock=FakeClock((EPOCH_MS - 10) * MS))
    with pytest.raises(OverflowError, match="fluxID time range"):
        gen.next_id()


def test_clock_past_2059_is_refused() -> None:
    gen = FluxIdGenerator(1, clock=FakeClock((EPOCH_MS + (1 << 40)) * MS))
    with pytest.raises(OverflowError, match="fluxID time range"):
        gen.next_id()


def test_last_millisecond_of_the_range_is_usable() -> None:
    clock = FakeClock((EPOCH_MS + (1 << 40) - 1) * MS)
    flux_id = FluxIdGenerator(MAX_MACHINE_ID, clock=clock).next_id()
    assert flux_id == (1 << 64) - 1 - 0xFF
    assert parse_flux_id(flux_id).unix_ms == EPOCH_MS + (1 << 40) - 1


# -- fluxEntityID ----------------------------------------------------------------------------


def entity_cases() -> Iterator[tuple[EntityType, int, int]]:
    for etype in EntityType:
        for machine_id in (1, 2, 0x1234, MAX_MACHINE_ID):
            for instance in (0, 1, (1 << 32) - 1):
                yield etype, machine_id, instance


@pytest.mark.parametrize("etype", list(EntityType))
def test_entity_id_round_trip_for_each_type(etype: EntityType) -> None:
    for kind, machine_id, instance in entity_cases():
        if kind is not etype:
            continue
        entity = EntityId(kind, machine_id, instance)
        packed = int(entity)
        assert 0 <= packed < 1 << 56  # the top byte is always 0
        assert (packed >> 48) & 0xFF == int(kind)
        assert (packed >> 32) & 0xFFFF == machine_id
        assert EntityId.from_int(packed) == entity


def test_entity_type_values_match_the_design() -> None:
    assert {t.name: int(t) for t in EntityType} == {"MIXER": 2, "RACK": 3, "SNAKE": 8}


def test_entity_id_str() -> None:
    assert str(EntityId(EntityType.RACK, 17)) == "rack:17"
    assert str(EntityId(EntityType.MIXER, 1)) == "mixer:1"


def test_entity_ids_are_values() -> None:
    assert EntityId(EntityType.RACK, 5) == EntityId(EntityType.RACK, 5, 0)
    assert len({EntityId(EntityType.RACK, 5), EntityId(EntityType.RACK, 5)}) == 1
    with pytest.raises(AttributeError):
        EntityId(EntityType.RACK, 5).machine_id = 6  # type: ignore[misc]


@pytest.mark.parametrize("machine_id", [0, -1, MAX_MACHINE_ID + 1])
def test_entity_id_rejects_bad_machine_id(machine_id: int) -> None:
    with pytest.raises(ValueError, match=r"machine id must be an integer in 1\.\.65535"):
        EntityId(EntityType.RACK, machine_id)


@pytest.mark.parametrize("instance", [-1, 1 << 32])
def test_entity_id_rejects_bad_instance(instance: int) -> None:
    with pytest.raises(ValueError, match="instance must fit in 32 bits"):
        EntityId(EntityType.SNAKE, 1, instance)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(-1, id="negative"),
        pytest.param(1 << 56, id="top-byte-set"),
        pytest.param((1 << 64) - 1, id="all-ones"),
        pytest.param(0, id="zero"),
        pytest.param((3 << 48) | 5, id="rack-machine-0"),
        pytest.param((1 << 48) | (5 << 32), id="unknown-type-1"),
        pytest.param((0xFF << 48) | (5 << 32), id="unknown-type-255"),
        pytest.param((9 << 48) | (5 << 32), id="unknown-type-9"),
    ],
)
def test_entity_id_from_int_rejects_garbage(value: int) -> None:
    with pytest.raises(ValueError, match=r"(not a fluxEntityID|machine id)"):
        EntityId.from_int(value)
