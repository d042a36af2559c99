"""fluxMsg: the one internal signal, and its CBOR wire form.

The wire form is a CBOR array (compact and fast to decode)::

    [1, id, ref_id, trace, src_id, meta, data, flags, raw, path, ts]

with `path` a list of `[gear, port, ts_ns]` hops. Decoding checks the size limit first, then the
shape and every field's type; any failure is a `MessageDecodeError`, never another exception.
Encoding runs the same field checks, so it never produces bytes that decoding would reject.

Decoding is hardened against hostile input: map keys must be strings (no hash-collision floods of
integer keys), duplicate keys, trailing bytes and CBOR value sharing (tags 28/29, which can expand
a few hundred bytes into an exponentially large graph) are rejected.
"""

from __future__ import annotations

import io
import struct
import time
from typing import Any, NoReturn

import cbor2

from rack.errors import MessageDecodeError, MessageError, MessageLimitError

MAX_HOPS = 64
MAX_BYTES = 2 * 1024 * 1024
MAX_DATA_DEPTH = 64
WIRE_VERSION = 1
_U64 = 1 << 64


class Hop:
    """One step of a message's path: which gear emitted it on which port, and when (ns)."""

    __slots__ = ("gear", "port", "ts")

    def __init__(self, gear: str, port: str, ts: int) -> None:
        self.gear = gear
        self.port = port
        self.ts = ts

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Hop) and (self.gear, self.port, self.ts) == (
            other.gear,
            other.port,
            other.ts,
        )

    def __hash__(self) -> int:
        return hash((self.gear, self.port, self.ts))

    def __repr__(self) -> str:
        return f"Hop({self.gear!r}, {self.port!r}, {self.ts})"


class FluxMsg:
    """A message crossing the rack. Mutable by the gear that holds it; copy before sharing.

    Fields: `id` (fluxID), `ref_id` (correlation/parent id, 0 if none), `trace` (W3C traceparent,
    "" if none), `src_id` (name of the emitting gear), `meta` (str→str: `conn.id`, `peer.ip`, …),
    `data` (structured fields after a codec), `flags` (bit set), `raw` (original wire bytes),
    `path` (hops), `ts` (creation time, ns since the epoch).
    """

    __slots__ = ("data", "flags", "id", "meta", "path", "raw", "ref_id", "src_id", "trace", "ts")

    def __init__(
        self,
        id: int = 0,
        *,
        raw: bytes = b"",
        data: Any = None,
        meta: dict[str, str] | None = None,
        ref_id: int = 0,
        trace: str = "",
        src_id: str = "",
        flags: int = 0,
        path: list[Hop] | None = None,
        ts: int | None = None,
    ) -> None:
        self.id = id
        self.ref_id = ref_id
        self.trace = trace
        self.src_id = src_id
        self.meta = {} if meta is None else meta
        self.data = data
        self.flags = flags
        self.raw = raw
        self.path = [] if path is None else path
        self.ts = time.time_ns() if ts is None else ts

    def copy(self) -> FluxMsg:
        """A copy safe to hand to another gear: meta and path are new containers.

        `data` is shared: gears that mutate nested data must replace it, not edit it in place.
        """
        return FluxMsg(
            self.id,
            raw=self.raw,
            data=self.data,
            meta=dict(self.meta),
            ref_id=self.ref_id,
            trace=self.trace,
            src_id=self.src_id,
            flags=self.flags,
            path=list(self.path),
            ts=self.ts,
        )

    def add_hop(self, gear: str, port: str) -> None:
        """Record that `gear` emitted this message on `port`; enforces the hop limit."""
        if len(self.path) >= MAX_HOPS:
            raise MessageLimitError(
                f"message {self.id} exceeds {MAX_HOPS} hops (last: {self.path[-1].gear}); "
                "is there a wiring loop?"
            )
        self.path.append(Hop(gear, port, time.time_ns()))
        self.src_id = gear

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FluxMsg):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in FluxMsg.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"FluxMsg(id={self.id}, src_id={self.src_id!r}, meta={self.meta!r}, "
            f"raw={self.raw[:32]!r}{'…' if len(self.raw) > 32 else ''}, data={self.data!r})"
        )

    # -- wire form ---------------------------------------------------------------------------

    def encode(self) -> bytes:
        """CBOR wire form. Raises `MessageLimitError` past 64 hops or 2 MiB, or when a field
        would not decode (non-text meta, non-JSON data, data nested deeper than 64, ...)."""
        path = self.path
        if len(path) > MAX_HOPS:
            raise MessageLimitError(f"message {self.id} has {len(path)} hops; max {MAX_HOPS}")
        mid, ref_id, flags, ts = self.id, self.ref_id, self.flags, self.ts
        trace, meta, data, raw = self.trace, self.meta, self.data, self.raw
        names = _NAMES  # cached encodings of names, looked up inline (see `_name`)
        # Same checks as decode; this also bounds the nesting of `data`, which cbor2 would
        # otherwise recurse into until the process crashes (segfault at ~20k levels).
        try:
            _check_fields(
                mid, ref_id, flags, ts, trace, self.src_id, raw, meta, data, MessageLimitError
            )
            # The envelope is written here, byte for byte what `cbor2.dumps` of the 11-item
            # array writes (definite lengths, shortest heads); only a non-empty `meta` and a
            # non-null `data` go through cbor2, which spends more on each array (three in a
            # typical message) than on anything else. Inline, the usual cases: 64-bit fluxIDs
            # and timestamps, zero `ref_id` and `flags` (a call per field would cost as much).
            parts = [
                _ENVELOPE_START,
                _HEAD_64(_UINT_64, mid) if mid > _MAX_U32 else _head(_UINT, mid),
                _ONE_BYTE[ref_id] if ref_id < 24 else _head(_UINT, ref_id),
                _text(trace) if trace else _EMPTY_TEXT,
                names.get(self.src_id) or _name(self.src_id),
                cbor2.dumps(meta) if meta else _EMPTY_MAP,
                _NULL if data is None else cbor2.dumps(data),
                _ONE_BYTE[flags] if flags < 24 else _head(_UINT, flags),
                _head(_BYTES, len(raw)),
                raw,
                _ARRAY_HEADS[len(path)],
            ]
            for hop in path:
                gear, port, hop_ts = hop.gear, hop.port, hop.ts
                if (
                    type(gear) is not str
                    or type(port) is not str
                    or type(hop_ts) is not int
                    or not 0 <= hop_ts < _U64
                ):
                    raise MessageLimitError(f"{hop!r} must be (gear: text, port: text, ts: uint)")
                parts += (
                    _HOP_START,
                    names.get(gear) or _name(gear),
                    names.get(port) or _name(port),
                    _HEAD_64(_UINT_64, hop_ts) if hop_ts > _MAX_U32 else _head(_UINT, hop_ts),
                )
            parts.append(_HEAD_64(_UINT_64, ts) if ts > _MAX_U32 else _head(_UINT, ts))
            blob = b"".join(parts)
        except MessageLimitError as exc:
            raise MessageLimitError(f"message {self.id} cannot be encoded: {exc}") from None
        except (cbor2.CBOREncodeError, TypeError, ValueError, struct.error) as exc:
            raise MessageLimitError(f"message {self.id} cannot be encoded: {exc}") from exc
        if len(blob) > MAX_BYTES:
            raise MessageLimitError(f"message {self.id} is {len(blob)} bytes; max {MAX_BYTES}")
        return blob

    @classmethod
    def decode(cls, blob: bytes | bytearray | memoryview) -> FluxMsg:
        """Parse the CBOR wire form. Any malformed input raises `MessageDecodeError`."""
        size = blob.nbytes if isinstance(blob, memoryview) else len(blob)
        if size > MAX_BYTES:
            raise MessageDecodeError(f"message is {size} bytes; max {MAX_BYTES}")
        fp = io.BytesIO(blob)
        try:
            items = cbor2.CBORDecoder(fp, **_DECODER_OPTIONS).decode()
        except Exception as exc:  # cbor2 raises several types, incl. RecursionError/MemoryError
            cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
            raise MessageDecodeError(f"not valid CBOR: {exc}{cause}") from exc
        if fp.tell() != size:
            raise MessageDecodeError(f"{size - fp.tell()} bytes of trailing data after the fluxMsg")
        return _from_items(items)


# -- encoding helpers: CBOR heads and strings, as cbor2 writes them -------------------------

_UINT, _BYTES, _TEXT, _ARRAY = 0x00, 0x40, 0x60, 0x80  # CBOR major types 0, 2, 3, 4 (<< 5)
_ENVELOPE_START = bytes((_ARRAY | 11, WIRE_VERSION))
_HOP_START = bytes((_ARRAY | 3,))
_EMPTY_TEXT, _EMPTY_MAP, _NULL = b"\x60", b"\xa0", b"\xf6"
_ONE_BYTE = tuple(bytes((b,)) for b in range(256))
_HEAD_8 = struct.Struct(">BB").pack
_HEAD_16 = struct.Struct(">BH").pack
_HEAD_32 = struct.Struct(">BI").pack
_HEAD_64 = struct.Struct(">BQ").pack
_UINT_64, _MAX_U32 = _UINT | 27, 0xFFFF_FFFF  # head of a uint that takes 8 bytes, and below
_ARRAY_HEADS = tuple(
    _ONE_BYTE[_ARRAY | n] if n < 24 else _HEAD_8(_ARRAY | 24, n) for n in range(MAX_HOPS + 1)
)


def _head(major: int, n: int) -> bytes:
    """The head of a CBOR item: major type and argument `n` (0 <= n < 2**64), shortest form.

    Small values and 64-bit ones (fluxIDs, timestamps) are tested first: the usual cases.
    Out of range, `struct.error`."""
    if n < 24:
        return _ONE_BYTE[major | n]
    if n >= 0x1_0000_0000:
        return _HEAD_64(major | 27, n)
    if n < 0x100:
        return _HEAD_8(major | 24, n)
    if n < 0x1_0000:
        return _HEAD_16(major | 25, n)
    return _HEAD_32(major | 26, n)


def _text(value: str) -> bytes:
    """A CBOR text string (UTF-8; a lone surrogate raises `UnicodeEncodeError`)."""
    utf8 = value.encode()
    return _head(_TEXT, len(utf8)) + utf8


_NAMES: dict[str, bytes] = {}
_MAX_NAMES = 4096
_MAX_NAME = 128


def _name(value: str) -> bytes:
    """`_text` of a gear or port name: the same few names in every message, so their encodings
    are kept (a bounded cache, cleared when full; long strings are not kept)."""
    blob = _NAMES.get(value)
    if blob is None:
        blob = _text(value)
        if len(blob) <= _MAX_NAME:
            if len(_NAMES) >= _MAX_NAMES:
                _NAMES.clear()
            _NAMES[value] = blob
    return blob


def _reject_shared(*_: Any) -> Any:
    raise ValueError("CBOR value sharing (tags 28/29) is not allowed in a fluxMsg")


# Requires cbor2 >= 6.1 (allow_duplicate_keys). strict_hashable_types: map keys must be text or
# bytes, whose hashes are randomised, so a map of colliding integer keys cannot take O(n^2).
_DECODER_OPTIONS: dict[str, Any] = {
    "strict_hashable_types": True,
    "allow_duplicate_keys": False,
    "semantic_decoders": {28: _reject_shared, 29: _reject_shared},
}


def _from_items(items: Any) -> FluxMsg:
    if not isinstance(items, list) or len(items) != 11:
        raise MessageDecodeError("a fluxMsg is a CBOR array of 11 items")
    version, mid, ref_id, trace, src_id, meta, data, flags, raw, path, ts = items
    if version != WIRE_VERSION or type(version) is not int:
        raise MessageDecodeError(f"unsupported fluxMsg wire version {version!r}")
    _check_fields(mid, ref_id, flags, ts, trace, src_id, raw, meta, data, MessageDecodeError)
    # Every slot set here, so `__init__` (keyword arguments, defaults) is skipped: once per
    # message received from a standard wire, this saves ~0.6 µs of the ~5 µs a decode takes.
    msg = _new_object(FluxMsg)
    msg.id = mid
    msg.ref_id = ref_id
    msg.trace = trace
    msg.src_id = src_id
    msg.meta = meta
    msg.data = data
    msg.flags = flags
    msg.raw = raw
    msg.path = _hops(path)
    msg.ts = ts
    return msg


_new_object = object.__new__


def _check_fields(
    mid: Any,
    ref_id: Any,
    flags: Any,
    ts: Any,
    trace: Any,
    src_id: Any,
    raw: Any,
    meta: Any,
    data: Any,
    error: type[MessageError],
) -> None:
    # Hot path (every encode and decode): the usual case in one expression. Same rules as the
    # per-field checks below, which run only to name what is wrong: the bitwise or of four ints
    # is in [0, 2**64) exactly when each of them is (a negative one makes it negative, one of
    # 2**64 or more sets a bit at or above bit 64).
    if not (
        type(mid) is int
        and type(ref_id) is int
        and type(flags) is int
        and type(ts) is int
        and 0 <= (mid | ref_id | flags | ts) < _U64
        and type(trace) is str
        and type(src_id) is str
        and type(raw) is bytes
        and type(meta) is dict
    ):
        _explain_fields(mid, ref_id, flags, ts, trace, src_id, raw, meta, error)
    if meta:
        for key, text in meta.items():
            if type(key) is not str or type(text) is not str:
                raise error(f"field 'meta' must map text to text, got {key!r}: {text!r}")
    if type(data) not in _SCALARS:
        _check_data(data, 0, error)


def _explain_fields(
    mid: Any,
    ref_id: Any,
    flags: Any,
    ts: Any,
    trace: Any,
    src_id: Any,
    raw: Any,
    meta: Any,
    error: type[MessageError],
) -> NoReturn:
    """Raise `error` naming the first scalar field (or meta) of the wrong type or range."""
    for name, value in (("id", mid), ("ref_id", ref_id), ("flags", flags), ("ts", ts)):
        if type(value) is not int or not 0 <= value < _U64:
            raise error(f"field '{name}' must be an unsigned 64-bit integer, got {value!r}")
    if type(trace) is not str or type(src_id) is not str:
        raise error("fields 'trace' and 'src_id' must be text")
    if type(raw) is not bytes:
        raise error(f"field 'raw' must be a byte string, got {type(raw).__name__}")
    raise error("field 'meta' must map text to text")


def _hops(path: Any) -> list[Hop]:
    if type(path) is not list:
        raise MessageDecodeError("field 'path' must be an array of hops")
    if len(path) > MAX_HOPS:
        raise MessageDecodeError(f"message has {len(path)} hops; max {MAX_HOPS}")
    hops = []
    for hop in path:
        if type(hop) is not list or len(hop) != 3:
            raise MessageDecodeError("each hop must be [gear: text, port: text, ts: uint]")
        gear, port, ts = hop
        if (
            type(gear) is not str
            or type(port) is not str
            or type(ts) is not int
            or not 0 <= ts < _U64
        ):
            raise MessageDecodeError("each hop must be [gear: text, port: text, ts: uint]")
        hops.append(Hop(gear, port, ts))
    return hops


_SCALARS = frozenset((str, bytes, int, float, bool, type(None)))


def _check_data(value: Any, depth: int, error: type[MessageError]) -> None:
    """`data` may hold JSON-like values plus byte strings, at most 64 containers deep."""
    if depth >= MAX_DATA_DEPTH:
        raise error(f"field 'data' is nested deeper than {MAX_DATA_DEPTH}")
    kind = type(value)
    if kind in _SCALARS:
        return
    if kind is list:
        for item in value:
            if type(item) not in _SCALARS:  # scalars inline: no call per leaf
                _check_data(item, depth + 1, error)
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise error("keys in field 'data' must be text")
            if type(item) not in _SCALARS:
                _check_data(item, depth + 1, error)
        return
    raise error(f"field 'data' holds an unsupported value of type {kind.__name__}")
