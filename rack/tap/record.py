"""What a tap sees of a message: a snapshot taken on the wire, the CEL filter over it, and the JSON
record a viewer receives.

The snapshot (`Sample`) is all the wire's path pays for: a tuple with a copy of `meta` (the next
gear may edit it), sharing `data` and `raw` (gears replace `data`, never edit it in place: the
fluxMsg contract). Everything else — the filter, JSON, base64 — runs in the tap's own task.

Filter variables: `data` (structured fields), `meta` (map of string), `raw` (the payload as text,
invalid UTF-8 replaced), `flux_id`, `ref_id`, `ts` (ns, when it crossed the wire), `gear` and
`port` (where it was emitted), `wire` (the tap's wire). Expressions are compiled by the `logic`
gear's compiler (`rack.gears.logic.compile_expr`: same engine, limits and cache).
"""

from __future__ import annotations

import base64
import datetime
import json
from typing import TYPE_CHECKING, Any

import cel

from rack.gears.logic import compile_expr
from rack.tap.protocol import TapError

if TYPE_CHECKING:
    from rack.tap.tap import Tap

__all__ = ["VARIABLES", "Filter", "Sample", "record"]

# (ts_ns, flux_id, ref_id, meta copy, data, raw): one tuple per tapped message.
Sample = tuple[int, int, int, dict[str, str], Any, bytes]

VARIABLES = ("data", "meta", "raw", "flux_id", "ref_id", "ts", "gear", "port", "wire")
EMPTY: dict[str, Any] = {
    "data": {}, "meta": {}, "raw": "", "flux_id": 0, "ref_id": 0, "ts": 0,
    "gear": "", "port": "", "wire": "",
}  # fmt: skip
MAX_RAW = 16 * 1024  # bytes of `raw` shown per message
MAX_RECORD = 128 * 1024  # a record larger than this shows a preview of `data` and `meta`
PREVIEW = 4 * 1024


class Filter:
    """A compiled CEL condition over a tapped message."""

    __slots__ = ("needs", "program", "source")

    def __init__(self, source: str, program: Any, needs: tuple[str, ...]) -> None:
        self.source = source
        self.program = program
        self.needs = needs

    @classmethod
    def compile(cls, source: str) -> Filter:
        """Compile `source`; `TapError("bad_filter")` with the compiler's message if it does not,
        or if it names something a tapped message does not have."""
        try:
            program = compile_expr(source)
        except ValueError as exc:
            raise TapError("bad_filter", f"filter does not compile: {exc}") from None
        names = set(program.variables())
        needs = tuple(v for v in VARIABLES if v in names)
        # Names that are no variable of a tapped message fail on every message: say so now. A
        # macro's own variable (`x` in `data.items.exists(x, x > 1)`) is bound when evaluated,
        # so only a name the engine reports as undefined on an empty message is refused.
        try:
            program.execute(cel.Context({name: EMPTY[name] for name in needs}))
        except Exception as exc:
            unknown = [n for n in names - set(VARIABLES) if f"'{n}'" in str(exc)]
            if unknown and "Undefined variable" in str(exc):
                raise TapError(
                    "bad_filter",
                    f"filter: unknown name '{unknown[0]}'; a tapped message has: "
                    f"{', '.join(VARIABLES)}",
                ) from None
        except BaseException as exc:  # a Rust panic on the empty message: not the filter's fault
            if type(exc).__name__ != "PanicException":
                raise
        return cls(source, program, needs)

    def matches(self, tap: Tap, sample: Sample) -> bool:
        """Whether the message passes; raises ValueError saying why the expression failed."""
        env = cel.Context({name: _variable(name, tap, sample) for name in self.needs})
        try:
            value = self.program.execute(env)
        except Exception as exc:
            raise ValueError(f"{type(exc).__name__}: {exc}") from None
        except BaseException as exc:
            if type(exc).__name__ != "PanicException":
                raise
            raise ValueError(f"CEL engine panic: {exc}") from None
        if type(value) is not bool:
            kind = "null" if value is None else type(value).__name__
            raise ValueError(f"filter must be true or false, got {kind}")
        return value


def _variable(name: str, tap: Tap, sample: Sample) -> Any:
    ts, flux_id, ref_id, meta, data, raw = sample
    if name == "data":
        return data
    if name == "meta":
        return meta
    if name == "raw":
        return raw.decode("utf-8", "replace")
    if name == "flux_id":
        return flux_id
    if name == "ref_id":
        return ref_id
    if name == "ts":
        return ts
    if name == "gear":
        return tap.source.gear
    if name == "port":
        return tap.source.port
    return tap.label


def record(tap: Tap, sample: Sample) -> bytes:
    """The JSON record of one tapped message (see docs/telemetry.md, "Live tap")."""
    ts, flux_id, ref_id, meta, data, raw = sample
    shown = raw[:MAX_RAW]
    try:
        text, encoding = shown.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(shown).decode("ascii"), "base64"
    body: dict[str, Any] = {
        "type": "msg",
        "ts": _iso(ts),
        "wire": tap.label,
        "flux_id": str(flux_id),
        "ref_id": str(ref_id),
        "meta": meta,
        "data": data,
        "raw": text,
        "raw_encoding": encoding,
        "raw_size": len(raw),
        "dropped_so_far": tap.dropped,
    }
    blob = _dumps(body)
    if len(blob) > MAX_RECORD:
        body["data"] = _dumps(data)[:PREVIEW].decode("utf-8", "ignore")
        body["meta"] = {"…": _dumps(meta)[:PREVIEW].decode("utf-8", "ignore")}
        body["truncated"] = True
        blob = _dumps(body)
    return blob


def _iso(ts_ns: int) -> str:
    when = datetime.datetime.fromtimestamp(ts_ns / 1e9, datetime.UTC)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json).encode()


def _json(value: Any) -> Any:
    """`data` may hold bytes (base64 here) and, on memory wires, anything a gear put there."""
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value)[:PREVIEW]
