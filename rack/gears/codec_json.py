"""The `codec_json` gear: JSON bytes in `raw` ⇄ structured `data`.

Decoding is strict RFC 8259 over UTF-8 (no `NaN`/`Infinity`) and bounded in nesting depth; the
depth is only walked when the payload holds more brackets than `max_depth`, so small documents
pay nothing for the check. Encoding is compact (no spaces after `,` and `:`) UTF-8, unescaped.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import Field

from rack.errors import GearError
from rack.gear.base import Gear, GearConfig, Output
from rack.gear.context import GearContext
from rack.model.fluxmsg import MAX_DATA_DEPTH, FluxMsg


class JsonCodecConfig(GearConfig):
    direction: Literal["decode", "encode"] = Field(
        description="`decode`: JSON in `raw` → `data`. `encode`: `data` → compact JSON in `raw`."
    )
    max_depth: int = Field(
        default=MAX_DATA_DEPTH,
        ge=1,
        le=MAX_DATA_DEPTH,
        description="Decode only: reject documents whose arrays/objects nest deeper than this.",
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def depth_of(value: Any) -> int:
    """How deep arrays/objects nest in `value` (a scalar is 0, `[]` is 1); iterative."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if type(node) is dict else node if type(node) is list else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def unencodable_path(value: Any, path: str = "data") -> str | None:
    """Where in `value` the first value JSON cannot hold sits (e.g. `data.card[2]`), if any."""
    if type(value) is float:
        return None if math.isfinite(value) else path
    if value is None or type(value) in (str, int, bool):
        return None
    if type(value) is dict:
        for key, child in value.items():
            if not isinstance(key, str | int | float | bool):
                return f"{path} (key {key!r})"
            found = unencodable_path(child, f"{path}.{key}")
            if found:
                return found
        return None
    if type(value) in (list, tuple):
        for i, child in enumerate(value):
            found = unencodable_path(child, f"{path}[{i}]")
            if found:
                return found
        return None
    return path


class JsonCodecGear(Gear[JsonCodecConfig]):
    """Converts between JSON and structured fields. `decode` parses `raw` (UTF-8 JSON) into `data`,
    keeping `raw`; invalid UTF-8, invalid JSON, `NaN`/`Infinity` or nesting beyond `max_depth`
    fail the message with a short reason. `encode` serialises `data` as compact JSON into `raw`,
    keeping `data`; values JSON cannot hold (byte strings, NaN) fail the message, naming where
    they are. Failed messages go to `error` with `error.reason`.
    """

    type_name = "codec_json"
    summary = "JSON bytes in raw ⇄ structured data (strict, depth-bounded)."
    config_model = JsonCodecConfig

    def __init__(self) -> None:
        self._decode = True

    async def init(self, ctx: GearContext[JsonCodecConfig]) -> None:
        await super().init(ctx)
        self._decode = self.config.direction == "decode"

    async def process(self, msg: FluxMsg, port: str) -> Output:
        if self._decode:
            msg.data = self.decode(msg.raw)
        else:
            msg.raw = self.encode(msg.data)
        return msg

    def decode(self, raw: bytes) -> Any:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GearError(f"raw is not UTF-8 (byte {exc.start})") from None
        try:
            value = _DECODER.decode(text)
        except json.JSONDecodeError as exc:
            raise GearError(f"invalid JSON: {exc.msg} at char {exc.pos}") from None
        except ValueError as exc:  # NaN/Infinity, integers too long to convert
            raise GearError(f"invalid JSON: {exc}") from None
        except RecursionError:
            raise GearError(f"JSON nested deeper than {self.config.max_depth}") from None
        limit = self.config.max_depth
        if raw.count(b"[") + raw.count(b"{") > limit and depth_of(value) > limit:
            raise GearError(f"JSON nested deeper than {limit}")
        return value

    def encode(self, data: Any) -> bytes:
        try:
            return _ENCODER.encode(data).encode()
        except (TypeError, ValueError) as exc:
            where = unencodable_path(data) or "data"
            raise GearError(f"cannot encode {where} as JSON: {exc}") from None
        except RecursionError:
            raise GearError("cannot encode data as JSON: nested too deep") from None
