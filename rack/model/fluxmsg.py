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
import time
from typing import Any

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
        if len(self.path) > MAX_HOPS:
            raise MessageLimitError(f"message {self.id} has {len(self.path)} hops; max {MAX_HOPS}")
        # Same checks as decode; this also bounds the nesting of `data`, which cbor2 would
        # otherwise recurse into until the process crashes (segfault at ~20k levels).
        try:
            _check_fields(
                self.id, self.ref_id, self.flags, self.ts, self.trace, self.src_id, self.raw,
                self.meta, self.data, MessageLimitError,
            )  # fmt: skip
        except MessageLimitError as exc:
            raise MessageLimitError(f"message {self.id} cannot be encoded: {exc}") from None
        try:
            blob = cbor2.dumps(
                [
                    WIRE_VERSION,
                    self.id,
                    self.ref_id,
                    self.trace,
                    self.src_id,
                    self.meta,
                    self.data,
                    self.flags,
                    self.raw,
                    [[h.gear, h.port, h.ts] for h in self.path],
                    self.ts,
                ]
            )
        except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
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
    return FluxMsg(
        mid,
        raw=raw,
        data=data,
        meta=meta,
        ref_id=ref_id,
        trace=trace,
        src_id=src_id,
        flags=flags,
        path=_hops(path),
        ts=ts,
    )


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
    for name, value in (("id", mid), ("ref_id", ref_id), ("flags", flags), ("ts", ts)):
        if type(value) is not int or not 0 <= value < _U64:
            raise error(f"field '{name}' must be an unsigned 64-bit integer, got {value!r}")
    if type(trace) is not str or type(src_id) is not str:
        raise error("fields 'trace' and 'src_id' must be text")
    if type(raw) is not bytes:
        raise error(f"field 'raw' must be a byte string, got {type(raw).__name__}")
    if type(meta) is not dict:
        raise error("field 'meta' must map text to text")
    for key, text in meta.items():
        if type(key) is not str or type(text) is not str:
            raise error(f"field 'meta' must map text to text, got {key!r}: {text!r}")
    if type(data) not in _SCALARS:
        _check_data(data, 0, error)


def _hops(path: Any) -> list[Hop]:
    if type(path) is not list:
        raise MessageDecodeError("field 'path' must be an array of hops")
    if len(path) > MAX_HOPS:
        raise MessageDecodeError(f"message has {len(path)} hops; max {MAX_HOPS}")
    hops = []
    for hop in path:
        if (
            type(hop) is not list
            or len(hop) != 3
            or type(hop[0]) is not str
            or type(hop[1]) is not str
            or type(hop[2]) is not int
            or not 0 <= hop[2] < _U64
        ):
            raise MessageDecodeError("each hop must be [gear: text, port: text, ts: uint]")
        hops.append(Hop(hop[0], hop[1], hop[2]))
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
