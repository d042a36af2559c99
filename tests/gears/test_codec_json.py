"""The codec_json gear: decode and encode, strictness and bounds."""

from __future__ import annotations

import json
import re
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rack.errors import GearError
from rack.gear.testing import GearHarness
from rack.gears.codec_json import JsonCodecConfig, JsonCodecGear, depth_of


def codec(direction: str, **config: Any) -> JsonCodecGear:
    """A gear with its config set, for the synchronous encode/decode helpers."""
    gear = JsonCodecGear()
    gear.config = JsonCodecConfig.model_validate({"direction": direction, **config})
    return gear


async def test_decode_sets_data_and_keeps_raw() -> None:
    raw = '{"amount": 150, "name": "café", "tags": [1, 2.5, null, true]}'.encode()
    async with GearHarness(JsonCodecGear, {"direction": "decode"}) as h:
        [(port, msg)] = await h.process(h.msg(raw))
    assert port == "out"
    assert msg.data == {"amount": 150, "name": "café", "tags": [1, 2.5, None, True]}
    assert msg.raw == raw


async def test_encode_is_compact_utf8_and_keeps_data() -> None:
    data = {"b": [1, {"c": None}], "name": "café", "ok": False}
    async with GearHarness(JsonCodecGear, {"direction": "encode"}) as h:
        [(_, msg)] = await h.process(h.msg(b"old", data=data))
    assert msg.raw == '{"b":[1,{"c":null}],"name":"café","ok":false}'.encode()
    assert msg.data == data


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a": 1', "invalid JSON: Expecting ',' delimiter at char 7"),
        (b"", "invalid JSON: Expecting value at char 0"),
        (b'{"a": NaN}', "invalid JSON: NaN is not valid JSON"),
        (b"[Infinity]", "invalid JSON: Infinity is not valid JSON"),
        (b'"\xff"', "raw is not UTF-8 (byte 1)"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON nested deeper than 64"),
        (b"1" * 5000, "invalid JSON: Exceeds the limit"),
    ],
)
async def test_decode_rejects_bad_input_with_a_short_reason(raw: bytes, reason: str) -> None:
    async with GearHarness(JsonCodecGear, {"direction": "decode"}) as h:
        msg = h.msg(raw)
        with pytest.raises(GearError) as caught:
            await h.process(msg)
    assert str(caught.value).startswith(reason)
    assert msg.data is None


def test_decode_depth_limit_is_exact() -> None:
    gear = codec("decode", max_depth=3)
    assert gear.decode(b'[{"a": [1]}]') == [{"a": [1]}]
    with pytest.raises(GearError, match="nested deeper than 3"):
        gear.decode(b'[{"a": [[1]]}]')
    wide = json.dumps([{"k": i} for i in range(100)]).encode()  # many brackets, depth 2
    assert len(gear.decode(wide)) == 100


def test_depth_of() -> None:
    assert depth_of(1) == 0
    assert depth_of([]) == 1
    assert depth_of({"a": [1, {"b": {}}], "c": 2}) == 4


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"card": {"pan": b"4111"}}, "data.card.pan"),
        ([1, 2, b"x"], "data[2]"),
        ({"x": float("nan")}, "data.x"),
        (b"raw", "data"),
    ],
)
async def test_encode_names_the_value_json_cannot_hold(data: Any, where: str) -> None:
    async with GearHarness(JsonCodecGear, {"direction": "encode"}) as h:
        with pytest.raises(GearError, match=re.escape(f"cannot encode {where} as JSON")):
            await h.process(h.msg(b"", data=data))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_encode_then_decode_round_trips(value: Any) -> None:
    assert codec("decode").decode(codec("encode").encode(value)) == value


@pytest.mark.parametrize(
    "bad", [{}, {"direction": "both"}, {"direction": "decode", "max_depth": 65}]
)
def test_bad_config_is_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        JsonCodecGear.parse_config(bad)
