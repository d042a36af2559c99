"""Property tests for the fluxMsg wire form: decode never fails with anything but its own error."""

from __future__ import annotations

import math
from typing import Any

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rack.errors import MessageDecodeError
from rack.model.fluxmsg import MAX_HOPS, FluxMsg, Hop

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
TEXT = st.text(max_size=20)

# JSON-like values plus byte strings; NaN is left out because it is not equal to itself.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.floats(allow_nan=False)
    | TEXT
    | st.binary(max_size=20)
)
DATA = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=20,
)
HOPS = st.builds(Hop, TEXT, TEXT, U64)
MESSAGES = st.builds(
    FluxMsg,
    U64,
    raw=st.binary(max_size=64),
    data=DATA,
    meta=st.dictionaries(TEXT, TEXT, max_size=5),
    ref_id=U64,
    trace=TEXT,
    src_id=TEXT,
    flags=U64,
    path=st.lists(HOPS, max_size=MAX_HOPS),
    ts=U64,
)


def decode_or_reject(blob: bytes) -> FluxMsg | None:
    """Decode `blob`; only `MessageDecodeError` may escape (and is swallowed here)."""
    try:
        msg = FluxMsg.decode(blob)
    except MessageDecodeError as exc:
        reason = str(exc)
    else:
        # Whatever decodes is a well-formed message that encodes back to a decodable blob.
        assert FluxMsg.decode(msg.encode()) == msg
        return msg
    assert reason  # every rejection says why
    return None


@FUZZ
@given(st.binary(max_size=256))
def test_arbitrary_bytes_decode_or_raise_decode_error(blob: bytes) -> None:
    decode_or_reject(blob)


@FUZZ
@given(st.binary(max_size=64))
def test_arbitrary_bytes_after_an_array_header_decode_or_raise_decode_error(tail: bytes) -> None:
    decode_or_reject(b"\x8b\x01" + tail)


@st.composite
def mutated_encodings(draw: st.DrawFn) -> bytes:
    blob = bytearray(draw(MESSAGES).encode())
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        at = draw(st.integers(min_value=0, max_value=max(len(blob) - 1, 0)))
        if kind == "flip" and blob:
            blob[at] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif kind == "set" and blob:
            blob[at] = draw(st.integers(min_value=0, max_value=255))
        elif kind == "truncate":
            del blob[at:]
        elif kind == "insert":
            blob[at:at] = draw(st.binary(min_size=1, max_size=9))
        elif kind == "delete":
            del blob[at : at + draw(st.integers(min_value=1, max_value=9))]
    return bytes(blob)


@FUZZ
@given(mutated_encodings())
def test_mutated_encodings_decode_or_raise_decode_error(blob: bytes) -> None:
    decode_or_reject(blob)


@FUZZ
@given(MESSAGES)
def test_generated_messages_round_trip(msg: FluxMsg) -> None:
    blob = msg.encode()
    back = FluxMsg.decode(blob)
    assert back == msg
    assert back.encode() == blob


@FUZZ
@given(MESSAGES)
def test_encode_writes_what_cbor2_writes(msg: FluxMsg) -> None:
    # `encode` writes the envelope itself (faster than cbor2.dumps): byte for byte the same.
    path = [[h.gear, h.port, h.ts] for h in msg.path]
    items = [1, msg.id, msg.ref_id, msg.trace, msg.src_id, msg.meta, msg.data, msg.flags]
    assert msg.encode() == cbor2.dumps([*items, msg.raw, path, msg.ts])


@FUZZ
@given(st.recursive(st.none() | st.integers() | TEXT, lambda c: st.lists(c, max_size=3)))
def test_any_cbor_value_in_any_slot_decodes_or_raises_decode_error(value: Any) -> None:
    items: list[Any] = [1, 1, 0, "", "", {}, None, 0, b"", [], 0]
    for slot in range(len(items)):
        candidate = list(items)
        candidate[slot] = value
        decode_or_reject(cbor2.dumps(candidate))


def test_float_edge_values_round_trip() -> None:
    for value in (0.0, -0.0, math.inf, -math.inf, 5e-324, 1.7976931348623157e308):
        back = FluxMsg.decode(FluxMsg(1, data=[value], ts=1).encode())
        assert back.data == [value]
        assert math.copysign(1, back.data[0]) == math.copysign(1, value)
