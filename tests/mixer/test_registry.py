"""The rack registry against a real DuckDB file: enrollment, adoption, presence, lifecycle."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from mixer.errors import (
    MachineIdsExhaustedError,
    MigrationError,
    RackConflictError,
    RackNameError,
    RackNotFoundError,
)
from mixer.migrations import Migration, apply_migrations
from mixer.registry import RackStatus, Registry
from rack.model.ids import EntityId, EntityType

INTERVAL = 5.0  # heartbeat interval, seconds
MISSED = 3  # heartbeats missed before a rack is offline


class Clock:
    """A controllable, timezone-aware clock."""

    def __init__(self) -> None:
        self.now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "mixer.duckdb"


@pytest.fixture
def reg(db_path: Path, clock: Clock) -> Iterator[Registry]:
    with Registry(db_path, clock=clock) as registry:
        yield registry


def _go_offline(reg: Registry, clock: Clock) -> None:
    clock.advance(MISSED * INTERVAL + 1)
    reg.sweep(MISSED, INTERVAL)


# -- enrollment ------------------------------------------------------------------------------


def test_hello_enrolls_pending_racks_with_increasing_machine_ids(
    reg: Registry, clock: Clock
) -> None:
    east = reg.hello("rack-east", version="1.2.0", attributes={"mac": "aa:bb"})
    west = reg.hello("rack-west", version="1.2.0", attributes={})

    assert (east.machine_id, west.machine_id) == (1, 2)
    assert east.status is RackStatus.PENDING
    assert not east.adopted
    assert east.entity == EntityId(EntityType.RACK, 1)
    assert east.entity_id == int(EntityId(EntityType.RACK, 1))
    assert east.type_id == int(EntityType.RACK) == 3
    assert east.attributes == {"mac": "aa:bb"}
    assert east.stats == {}
    assert east.last_seen == clock.now
    assert reg.get("rack-east") == east
    assert [r.name for r in reg.list()] == ["rack-east", "rack-west"]


def test_hello_of_a_known_rack_keeps_its_machine_id_and_refreshes_it(
    reg: Registry, clock: Clock
) -> None:
    first = reg.hello("rack-east", version="1.0.0", attributes={"mac": "aa"})
    clock.advance(30)
    again = reg.hello("rack-east", version="1.1.0", attributes={"mac": "bb"})

    assert again.machine_id == first.machine_id
    assert again.version == "1.1.0"
    assert again.attributes == {"mac": "bb"}
    assert again.last_seen == clock.now
    assert again.created_at == first.created_at
    assert len(reg.list()) == 1


@pytest.mark.parametrize("bad", ["", "rack.east", "rack east", "-rack", "x" * 64, "rack>"])
def test_malformed_rack_names_are_rejected(reg: Registry, bad: str) -> None:
    with pytest.raises(RackNameError, match="invalid rack name"):
        reg.hello(bad)


def test_record_is_a_frozen_value(reg: Registry) -> None:
    rec = reg.hello("rack-east")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.name = "other"  # type: ignore[misc]


# -- adoption paths --------------------------------------------------------------------------


def test_manual_adoption_activates_a_pending_rack_and_is_idempotent(reg: Registry) -> None:
    reg.hello("rack-east")
    adopted = reg.adopt("rack-east")
    assert adopted.status is RackStatus.ACTIVE
    assert adopted.adopted
    assert reg.adopt("rack-east") == adopted
    assert reg.list(status="active") == [adopted]
    assert reg.list(RackStatus.PENDING) == []


def test_auto_adopt_activates_new_and_pending_racks(reg: Registry) -> None:
    assert reg.hello("rack-new", auto_adopt=True).status is RackStatus.ACTIVE
    reg.hello("rack-waiting")
    rec = reg.hello("rack-waiting", auto_adopt=True)
    assert rec.status is RackStatus.ACTIVE
    assert rec.adopted


def test_auto_adopt_does_not_override_a_suspension(reg: Registry) -> None:
    reg.hello("rack-east", auto_adopt=True)
    reg.suspend("rack-east")
    assert reg.hello("rack-east", auto_adopt=True).status is RackStatus.SUSPENDED


def test_adoption_by_a_scenario_naming_racks(reg: Registry, clock: Clock) -> None:
    reg.hello("rack-pending")
    reg.hello("rack-offline")
    _go_offline(reg, clock)
    reg.hello("rack-active", auto_adopt=True)
    reg.hello("rack-suspended", auto_adopt=True)
    reg.suspend("rack-suspended")
    reg.hello("rack-retired")
    reg.retire("rack-retired")

    result = reg.adopt_named(
        [
            "rack-pending",
            "rack-offline",
            "rack-active",
            "rack-suspended",
            "rack-retired",
            "rack-ghost",
            "rack-pending",
        ]
    )

    assert [r.name for r in result.adopted] == ["rack-pending", "rack-offline"]
    assert all(r.status is RackStatus.ACTIVE and r.adopted for r in result.adopted)
    assert {r.name: r.status for r in result.unchanged} == {
        "rack-active": RackStatus.ACTIVE,
        "rack-suspended": RackStatus.SUSPENDED,
        "rack-retired": RackStatus.RETIRED,
    }
    assert result.unknown == ("rack-ghost",)
    assert reg.get("rack-suspended").status is RackStatus.SUSPENDED


# -- heartbeats and presence -----------------------------------------------------------------


def test_heartbeat_updates_stats_and_last_seen(reg: Registry, clock: Clock) -> None:
    reg.hello("rack-east", auto_adopt=True)
    clock.advance(INTERVAL)
    rec = reg.heartbeat("rack-east", {"cpu": 12.5, "mem": 1024})
    assert rec.stats == {"cpu": 12.5, "mem": 1024}
    assert rec.last_seen == clock.now
    assert rec.status is RackStatus.ACTIVE
    assert reg.get("rack-east").stats == {"cpu": 12.5, "mem": 1024}


def test_heartbeat_from_an_unknown_rack_is_refused(reg: Registry) -> None:
    with pytest.raises(RackNotFoundError, match="rack-ghost"):
        reg.heartbeat("rack-ghost", {"cpu": 1})


def test_missed_heartbeats_take_racks_offline_and_a_heartbeat_brings_them_back(
    reg: Registry, clock: Clock
) -> None:
    reg.hello("rack-active", auto_adopt=True)
    reg.hello("rack-pending")
    reg.hello("rack-alive", auto_adopt=True)

    clock.advance(MISSED * INTERVAL)  # exactly at the limit: not yet missed
    reg.heartbeat("rack-alive", {"cpu": 1})
    assert reg.sweep(MISSED, INTERVAL) == []

    clock.advance(1)
    changed = reg.sweep(MISSED, INTERVAL)
    assert [(r.name, r.status) for r in changed] == [
        ("rack-active", RackStatus.OFFLINE),
        ("rack-pending", RackStatus.OFFLINE),
    ]
    assert reg.get("rack-alive").status is RackStatus.ACTIVE
    assert reg.sweep(MISSED, INTERVAL) == []  # already offline: reported once

    assert reg.heartbeat("rack-active", {"cpu": 3}).status is RackStatus.ACTIVE
    back = reg.heartbeat("rack-pending", {"cpu": 4})
    assert back.status is RackStatus.PENDING
    assert not back.adopted


def test_hello_also_brings_an_offline_rack_back(reg: Registry, clock: Clock) -> None:
    reg.hello("rack-east", auto_adopt=True)
    _go_offline(reg, clock)
    assert reg.get("rack-east").status is RackStatus.OFFLINE
    assert reg.hello("rack-east").status is RackStatus.ACTIVE


def test_sweep_leaves_suspended_and_retired_racks_alone(reg: Registry, clock: Clock) -> None:
    reg.hello("rack-s", auto_adopt=True)
    reg.suspend("rack-s")
    reg.hello("rack-r")
    reg.retire("rack-r")
    clock.advance(3600)
    assert reg.sweep(MISSED, INTERVAL) == []


def test_sweep_rejects_nonsense_parameters(reg: Registry) -> None:
    with pytest.raises(ValueError, match="max_missed"):
        reg.sweep(0, INTERVAL)


# -- operator lifecycle ----------------------------------------------------------------------


def test_suspend_and_resume(reg: Registry, clock: Clock) -> None:
    reg.hello("rack-east", auto_adopt=True)
    suspended = reg.suspend("rack-east")
    assert suspended.status is RackStatus.SUSPENDED
    assert reg.suspend("rack-east") == suspended  # idempotent

    clock.advance(1)
    beat = reg.heartbeat("rack-east", {"cpu": 2})
    assert beat.status is RackStatus.SUSPENDED  # heartbeats never reactivate it
    assert beat.stats == {"cpu": 2}

    assert reg.resume("rack-east").status is RackStatus.ACTIVE
    assert reg.resume("rack-east").status is RackStatus.ACTIVE  # idempotent


def test_a_suspended_never_adopted_rack_resumes_to_pending(reg: Registry, clock: Clock) -> None:
    reg.hello("rack-east")
    _go_offline(reg, clock)
    reg.suspend("rack-east")
    assert reg.resume("rack-east").status is RackStatus.PENDING


def test_retire_is_final_for_that_name(reg: Registry) -> None:
    reg.hello("rack-east", auto_adopt=True)
    retired = reg.retire("rack-east")
    assert retired.status is RackStatus.RETIRED
    assert reg.retire("rack-east") == retired

    with pytest.raises(RackConflictError, match="rack 'rack-east' was retired; rename"):
        reg.hello("rack-east")
    with pytest.raises(RackConflictError, match="retired"):
        reg.heartbeat("rack-east", {"cpu": 1})


def test_rename_keeps_machine_id_and_frees_the_old_name(reg: Registry) -> None:
    east = reg.hello("rack-east", auto_adopt=True)
    renamed = reg.rename("rack-east", "rack-nyc-01")
    assert (renamed.name, renamed.machine_id, renamed.status) == (
        "rack-nyc-01",
        east.machine_id,
        RackStatus.ACTIVE,
    )
    with pytest.raises(RackNotFoundError):
        reg.get("rack-east")
    assert reg.hello("rack-east").machine_id == 2  # the old name is a new rack now


def test_rename_to_a_taken_name_is_refused(reg: Registry) -> None:
    reg.hello("rack-a")
    reg.hello("rack-b")
    with pytest.raises(RackConflictError, match="to 'rack-b': that name is taken by MachineID 2"):
        reg.rename("rack-a", "rack-b")
    with pytest.raises(RackNameError):
        reg.rename("rack-a", "bad name")
    with pytest.raises(RackNotFoundError):
        reg.rename("rack-ghost", "rack-c")


def test_renaming_a_retired_rack_lets_its_name_enroll_again(reg: Registry) -> None:
    reg.hello("rack-east")
    reg.retire("rack-east")
    reg.rename("rack-east", "rack-east-old")
    fresh = reg.hello("rack-east")
    assert (fresh.status, fresh.machine_id) == (RackStatus.PENDING, 2)


@pytest.mark.parametrize(
    ("setup", "action", "message"),
    [
        ("pending", "suspend", "it is pending; suspend applies to racks that are active, offline"),
        ("pending", "resume", "it is pending; resume applies to racks that are active, suspended"),
        ("suspended", "adopt", "it is suspended; adopt applies to .*; resume it instead"),
        ("retired", "adopt", "it is retired; adopt applies to racks that are active, offline"),
        ("retired", "suspend", "it is retired; suspend applies"),
        ("retired", "resume", "it is retired; resume applies"),
        ("offline", "resume", "it is offline; resume applies"),
    ],
)
def test_illegal_transitions_say_what_is_allowed(
    reg: Registry, clock: Clock, setup: str, action: str, message: str
) -> None:
    reg.hello("rack-x", auto_adopt=setup in ("suspended", "offline"))
    if setup == "suspended":
        reg.suspend("rack-x")
    elif setup == "retired":
        reg.retire("rack-x")
    elif setup == "offline":
        _go_offline(reg, clock)
    before = reg.get("rack-x")
    with pytest.raises(RackConflictError, match=f"cannot {action} rack 'rack-x': {message}"):
        getattr(reg, action)("rack-x")
    assert reg.get("rack-x") == before


@pytest.mark.parametrize("action", ["adopt", "suspend", "resume", "retire", "get"])
def test_operations_on_unknown_racks_raise_not_found(reg: Registry, action: str) -> None:
    with pytest.raises(RackNotFoundError, match="no rack named 'rack-ghost'"):
        getattr(reg, action)("rack-ghost")


# -- identity: two racks claiming one name ---------------------------------------------------


def test_two_racks_claiming_the_same_name_with_different_keys(reg: Registry) -> None:
    first = reg.hello("rack-east", attributes={"public_key": "ed25519:AAA"}, auto_adopt=True)
    with pytest.raises(RackConflictError, match="rack name 'rack-east' is already taken"):
        reg.hello("rack-east", attributes={"public_key": "ed25519:BBB"})
    assert reg.get("rack-east") == first  # the impostor changed nothing

    same = reg.hello("rack-east", attributes={"public_key": "ed25519:AAA", "mac": "aa"})
    assert same.machine_id == first.machine_id


def test_a_pending_rack_is_protected_by_its_key_too(reg: Registry) -> None:
    reg.hello("rack-east", attributes={"public_key": "k1"})
    with pytest.raises(RackConflictError, match="different public key"):
        reg.hello("rack-east", attributes={"public_key": "k2"})


def test_first_key_is_bound_and_kept_when_a_hello_omits_it(reg: Registry) -> None:
    reg.hello("rack-east")
    bound = reg.hello("rack-east", attributes={"public_key": "k1"})  # no key stored yet: same rack
    assert bound.public_key == "k1"
    assert reg.hello("rack-east", attributes={"mac": "aa"}).attributes == {
        "mac": "aa",
        "public_key": "k1",
    }
    with pytest.raises(RackConflictError):
        reg.hello("rack-east", attributes={"public_key": "k2"})


# -- MachineIDs ------------------------------------------------------------------------------


def test_machine_ids_of_retired_racks_are_never_reused(reg: Registry) -> None:
    reg.hello("rack-a")
    reg.hello("rack-b")
    reg.retire("rack-a")
    reg.rename("rack-a", "rack-a-old")
    assert reg.hello("rack-c").machine_id == 3
    assert reg.hello("rack-a").machine_id == 4


def test_exhausted_machine_ids(db_path: Path, clock: Clock) -> None:
    with Registry(db_path, clock=clock, max_machine_id=3) as reg:
        assert [reg.hello(f"rack-{i}").machine_id for i in range(3)] == [1, 2, 3]
        reg.retire("rack-0")
        with pytest.raises(MachineIdsExhaustedError, match=r"rack-3.*1\.\.3 are allocated"):
            reg.hello("rack-3")
        assert len(reg.list()) == 3


def test_allocation_takes_the_lowest_free_machine_id(db_path: Path, clock: Clock) -> None:
    with Registry(db_path, clock=clock) as reg:
        reg.hello("rack-a")
    with duckdb.connect(str(db_path)) as conn:  # a row written by some other tool, with a gap
        conn.execute(
            "INSERT INTO registry (entity_id, type_id, machine_id, name, status, created_at, "
            "updated_at) VALUES (?, 3, 3, 'rack-c', 'pending', now(), now())",
            [int(EntityId(EntityType.RACK, 3))],
        )
    with Registry(db_path, clock=clock) as reg:
        assert [reg.hello(n).machine_id for n in ("rack-b", "rack-d")] == [2, 4]


def test_concurrent_hellos_get_distinct_machine_ids(reg: Registry) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        records = list(pool.map(reg.hello, [f"rack-{i}" for i in range(40)]))
    assert sorted(r.machine_id for r in records) == list(range(1, 41))


# -- persistence and migrations --------------------------------------------------------------


def test_restarting_the_mixer_keeps_the_registry(db_path: Path, clock: Clock) -> None:
    with Registry(db_path, clock=clock) as reg:
        reg.hello("rack-east", version="1.0", attributes={"public_key": "k1"}, auto_adopt=True)
        reg.heartbeat("rack-east", {"cpu": 7})
        reg.hello("rack-west")
        before = reg.list()
    with duckdb.connect(str(db_path)) as conn:
        migrations_before = conn.execute("SELECT * FROM schema_migrations").fetchall()
    assert [row[:2] for row in migrations_before] == [("registry", 1)]

    clock.advance(60)
    with Registry(db_path, clock=clock) as reg:
        assert reg.list() == before
        assert reg.hello("rack-north").machine_id == 3
        with pytest.raises(RackConflictError):
            reg.hello("rack-east", attributes={"public_key": "k2"})
    with duckdb.connect(str(db_path)) as conn:
        assert conn.execute("SELECT * FROM schema_migrations").fetchall() == migrations_before


def test_registry_shares_a_callers_connection(tmp_path: Path, clock: Clock) -> None:
    with duckdb.connect(str(tmp_path / "shared.duckdb")) as conn:
        with Registry(conn, clock=clock) as reg:
            reg.hello("rack-east")
        assert conn.execute("SELECT name FROM registry").fetchall() == [("rack-east",)]


def test_a_newer_schema_is_refused(db_path: Path) -> None:
    with duckdb.connect(str(db_path)) as conn:
        apply_migrations(conn, "registry", [Migration(1, "t", ("CREATE TABLE registry (x INT)",))])
        conn.execute("INSERT INTO schema_migrations VALUES ('registry', 2, now())")
    with pytest.raises(MigrationError, match="schema version 2, newer than the 1"):
        Registry(db_path)


def test_a_failing_migration_is_rolled_back(db_path: Path) -> None:
    steps = [
        Migration(1, "ok", ("CREATE TABLE a (x INT)",)),
        Migration(2, "broken", ("CREATE TABLE b (x INT)", "SELECT * FROM nowhere")),
    ]
    with duckdb.connect(str(db_path)) as conn:
        with pytest.raises(MigrationError, match=r"'demo' migration 2 \(broken\) failed"):
            apply_migrations(conn, "demo", steps)
        tables = conn.execute("SELECT table_name FROM information_schema.tables").fetchall()
        assert ("a",) not in tables
        assert apply_migrations(conn, "demo", steps[:1]) == [1]
        assert apply_migrations(conn, "demo", steps[:1]) == []


def test_migrations_must_be_numbered_in_order(db_path: Path) -> None:
    with duckdb.connect(str(db_path)) as conn, pytest.raises(MigrationError, match=r"1\.\.2"):
        apply_migrations(conn, "demo", [Migration(2, "x", ()), Migration(1, "y", ())])


def test_the_clock_must_be_timezone_aware(db_path: Path) -> None:
    with Registry(db_path, clock=datetime.now) as reg, pytest.raises(ValueError, match="aware"):
        reg.hello("rack-east")
