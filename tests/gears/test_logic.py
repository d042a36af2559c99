"""The logic gear: CEL filter / map / delete / routes, config errors and run-time errors."""

from __future__ import annotations

import re
from typing import Any

import pydantic
import pytest

from rack.errors import GearError
from rack.gear.testing import GearHarness
from rack.gears.logic import MAX_EXPR, LogicConfig, LogicGear
from rack.model.fluxmsg import FluxMsg


async def run(config: dict[str, Any], msg: FluxMsg) -> list[tuple[str, FluxMsg]]:
    async with GearHarness(LogicGear, config) as h:
        return await h.process(msg)


async def one(config: dict[str, Any], msg: FluxMsg) -> tuple[str, FluxMsg]:
    [result] = await run(config, msg)
    return result


async def fails(config: dict[str, Any], msg: FluxMsg) -> str:
    """The reason `process` failed (the harness would wrap an escaping error in a group)."""
    async with GearHarness(LogicGear, config) as h:
        with pytest.raises(GearError) as caught:
            await h.process(msg)
    return str(caught.value)


def config_error(config: dict[str, Any]) -> str:
    with pytest.raises(pydantic.ValidationError) as caught:
        LogicGear.parse_config(config)
    return str(caught.value)


# -- config validation (pre-flight) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"map": {"data.total": "data.amount +"}}, "map.data.total: Failed to parse expression"),
        ({"filter": "data.a >"}, "filter: Failed to parse expression"),
        ({"filter": "  "}, "filter: expression is empty"),
        ({"routes": [{"port": "p", "when": "(("}]}, "routes[0].when: Failed to parse"),
        ({"map": {"data.x": "1" * (MAX_EXPR + 1)}}, f"expression is {MAX_EXPR + 1} characters"),
        ({"map": {"dta.x": "1"}}, "map.dta.x: target 'dta.x' is not one of"),
        ({"map": {"data..x": "1"}}, "map.data..x: target"),
        ({"map": {"meta": "1"}}, "map.meta: target"),
        ({"delete": ["data"]}, "delete[0]: target 'data' is not one of"),
        ({"delete": ["raw"]}, "delete[0]: target 'raw'"),
        ({"routes": [{"port": "error", "when": "true"}]}, "routes[0].port: 'error' is reserved"),
        ({"default_port": "error"}, "'error' is reserved"),
        ({"routes": [{"port": "bad port", "when": "true"}]}, "String should match pattern"),
        ({"mapping": {}}, "Extra inputs are not permitted"),
    ],
)
def test_bad_config_is_rejected_naming_the_key(config: dict[str, Any], expected: str) -> None:
    assert expected in config_error(config)


def test_expression_at_the_length_limit_is_accepted() -> None:
    expr = "1" + " + 1" * ((MAX_EXPR - 1) // 4)
    assert len(expr) <= MAX_EXPR
    assert LogicGear.parse_config({"map": {"data.x": expr}}).map["data.x"] == expr


def test_ports_follow_the_routes() -> None:
    cfg = LogicConfig.model_validate(
        {
            "default_port": "rest",
            "routes": [
                {"port": "big", "when": "true"},
                {"port": "out", "when": "true"},
                {"port": "big", "when": "false"},
            ],
        }
    )
    ports = LogicGear.ports(cfg)
    assert ports.inputs == ("in",)
    assert ports.outputs == ("out", "rest", "big", "error")
    assert LogicGear.ports(LogicConfig()).outputs == ("out", "error")


# -- filter --------------------------------------------------------------------------------------


async def test_filter_drops_and_counts() -> None:
    config = {"filter": "data.amount > 100"}
    async with GearHarness(LogicGear, config) as h:
        assert await h.process(h.msg(data={"amount": 50})) == []
        kept = h.msg(data={"amount": 150})
        assert await h.process(kept) == [("out", kept)]
        assert h.stats.get("filtered") == 1


async def test_filter_must_be_a_bool() -> None:
    assert re.search(
        "filter: must be true or false, got int",
        await fails({"filter": "data.amount"}, FluxMsg(1, data={"amount": 1})),
    )


# -- map -----------------------------------------------------------------------------------------


async def test_map_sets_nested_fields_without_touching_shared_data() -> None:
    shared = {"amount": 150, "card": {"brand": "visa"}}
    config = {"map": {"data.card.fee.total": "data.amount * 2", "data.new.x": "'y'"}}
    _, msg = await one(config, FluxMsg(1, data=shared))
    assert msg.data == {
        "amount": 150,
        "card": {"brand": "visa", "fee": {"total": 300}},
        "new": {"x": "y"},
    }
    assert shared == {"amount": 150, "card": {"brand": "visa"}}


async def test_map_creates_data_when_absent_and_replaces_it_whole() -> None:
    _, msg = await one({"map": {"data.a.b": "1"}}, FluxMsg(1))
    assert msg.data == {"a": {"b": 1}}
    _, msg = await one({"map": {"data": "{'x': [1, 2]}"}}, FluxMsg(1, data={"old": 1}))
    assert msg.data == {"x": [1, 2]}


async def test_map_steps_see_earlier_results_in_order() -> None:
    config = {
        "map": {
            "data.a": "data.x + 1",
            "meta.a": "string(data.a * 10)",
            "data.b": "meta.a + '!'",
            "raw": "bytes(data.b)",
        },
        "routes": [{"port": "seen", "when": "raw == b'20!' && data.b == '20!'"}],
    }
    port, msg = await one(config, FluxMsg(1, data={"x": 1}))
    assert (port, msg.data, msg.meta, msg.raw) == (
        "seen",
        {"x": 1, "a": 2, "b": "20!"},
        {"a": "20"},
        b"20!",
    )


@pytest.mark.parametrize(
    ("expr", "text"),
    [("'s'", "s"), ("true", "true"), ("false", "false"), ("42", "42"), ("1.5", "1.5"),
     ("7u", "7"), ("b'hi'", "hi")],
)  # fmt: skip
async def test_map_converts_meta_values_to_text(expr: str, text: str) -> None:
    _, msg = await one({"map": {"meta.conn.id": expr}}, FluxMsg(1, meta={"keep": "me"}))
    assert msg.meta == {"keep": "me", "conn.id": text}


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("[1]", "meta.k: meta values must be a string, number or bool, got list"),
        ("{'a': 1}", "meta.k: meta values must be a string, number or bool, got dict"),
        ("null", "got null"),
        ("b'\\xff'", "meta.k: bytes for meta must be UTF-8"),
    ],
)
async def test_map_rejects_meta_values_that_are_not_scalars(expr: str, reason: str) -> None:
    assert re.search(reason.replace("[", r"\["), await fails({"map": {"meta.k": expr}}, FluxMsg(1)))


async def test_map_raw_takes_strings_and_bytes_only() -> None:
    _, msg = await one({"map": {"raw": "'héllo'"}}, FluxMsg(1))
    assert msg.raw == "héllo".encode()
    assert re.search(
        "map.raw: raw must be a string or bytes, got int",
        await fails({"map": {"raw": "1"}}, FluxMsg(1)),
    )


async def test_map_rejects_values_data_cannot_hold() -> None:
    assert re.search(
        "map.data.d: cannot store a timedelta in data",
        await fails({"map": {"data.d": "duration('1s')"}}, FluxMsg(1)),
    )
    assert re.search(
        "map keys in data must be strings", await fails({"map": {"data.d": "{1: 'a'}"}}, FluxMsg(1))
    )


async def test_map_into_a_non_map_fails() -> None:
    assert re.search(
        r"cannot set a field inside data\.a, which is int, not a map",
        await fails({"map": {"data.a.b": "1"}}, FluxMsg(1, data={"a": 5})),
    )


# -- run-time errors -----------------------------------------------------------------------------


async def test_eval_error_names_the_key_and_leaves_the_message_unchanged() -> None:
    config = {"map": {"meta.x": "'set'", "data.total": "data.missing * 2"}}
    msg = FluxMsg(1, data={"amount": 1}, meta={"k": "v"})
    assert re.search(r"map\.data\.total: no such key 'missing'", await fails(config, msg))
    assert (msg.data, msg.meta) == ({"amount": 1}, {"k": "v"})


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("'a' + 1", "map.data.x: TypeError: Unsupported operation"),
        ("1 / 0", "map.data.x: ZeroDivisionError"),
        ("nope + 1", "map.data.x: RuntimeError: Undefined variable or function: 'nope'"),
    ],
)
async def test_eval_errors_become_gear_errors(expr: str, reason: str) -> None:
    assert re.search(reason, await fails({"map": {"data.x": expr}}, FluxMsg(1, data={})))


# -- delete --------------------------------------------------------------------------------------


async def test_delete_removes_fields_and_ignores_missing_ones() -> None:
    shared = {"a": {"b": 1, "c": 2}, "d": 3}
    config = {"delete": ["data.a.b", "data.zz.y", "data.d.x", "meta.gone", "meta.nope"]}
    _, msg = await one(config, FluxMsg(1, data=shared, meta={"gone": "1", "keep": "2"}))
    assert msg.data == {"a": {"c": 2}, "d": 3}
    assert msg.meta == {"keep": "2"}
    assert shared == {"a": {"b": 1, "c": 2}, "d": 3}


async def test_delete_runs_after_map_and_before_routes() -> None:
    config = {
        "map": {"data.tmp": "1", "data.kept": "has(data.tmp)"},
        "delete": ["data.tmp"],
        "routes": [{"port": "leak", "when": "has(data.tmp)"}],
    }
    port, msg = await one(config, FluxMsg(1, data={}))
    assert (port, msg.data) == ("out", {"kept": True})


# -- routes and variables ------------------------------------------------------------------------

ROUTES = {
    "default_port": "small",
    "routes": [
        {"port": "huge", "when": "data.amount > 1000"},
        {"port": "big", "when": "data.amount > 100"},
        {"port": "never", "when": "data.amount > 1000"},
    ],
}


@pytest.mark.parametrize(("amount", "port"), [(5000, "huge"), (500, "big"), (5, "small")])
async def test_first_true_route_wins(amount: int, port: str) -> None:
    got, _ = await one(ROUTES, FluxMsg(1, data={"amount": amount}))
    assert got == port


async def test_route_must_be_a_bool() -> None:
    assert re.search(
        r"routes\[0\]\.when: must be true or false, got str",
        await fails({"routes": [{"port": "p", "when": "'yes'"}]}, FluxMsg(1)),
    )


async def test_expressions_see_every_message_field() -> None:
    msg = FluxMsg(7, raw=b"abc", ref_id=3, src_id="pos", flags=4, ts=123, meta={"k": "v"})
    config = {
        "filter": "id == 7 && ref_id == 3 && src_id == 'pos' && flags == 4 && ts == 123",
        "map": {"data.prev": "data", "data.n": "size(raw)", "data.k": "meta.k"},
    }
    _, out = await one(config, msg)
    assert out.data == {"prev": None, "n": 3, "k": "v"}


async def test_typical_config_end_to_end() -> None:
    config = {
        "filter": "data.amount > 100",
        "map": {"data.total": "data.amount * 2", "meta.kind": "data.kind"},
        "routes": [{"port": "big", "when": "data.total > 1000"}],
    }
    async with GearHarness(LogicGear, config) as h:
        results = [
            await h.process(h.msg(data={"amount": amount, "kind": "card"}))
            for amount in (50, 150, 600)
        ]
    assert results[0] == []
    assert [(port, m.data["total"], m.meta["kind"]) for [(port, m)] in results[1:]] == [
        ("out", 300, "card"),
        ("big", 1200, "card"),
    ]
