"""Cutting a TCP byte stream into frames, in bulk: one `feed` per socket read returns every frame
completed by that read (a C-level `bytes.split` or a loop over length prefixes), and keeps the
unfinished remainder for the next read. `parts` frames one outgoing payload without copying it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Protocol

from rack.errors import GearError

from .config import TcpConfig


class FrameTooLarge(Exception):
    """A frame (complete, partial, or announced by a length prefix) exceeds max_frame_bytes."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds max_frame_bytes={limit}")
        self.size = size
        self.limit = limit


class Framer(Protocol):
    def feed(self, data: bytes) -> list[bytes]:
        """Frames completed by `data` (possibly none); raises FrameTooLarge."""
        ...

    def parts(self, payload: bytes) -> tuple[bytes, bytes]:
        """`payload` with framing applied, as two pieces to write in order (no copy of the
        payload); raises GearError if it cannot be framed."""
        ...

    def pending(self) -> int:
        """Bytes of an unfinished frame held back."""
        ...

    def reset(self) -> None:
        """Forget the unfinished frame."""
        ...


class DelimiterFramer:
    """Frames end with a delimiter (one or more bytes), which is not part of the frame."""

    __slots__ = ("_buf", "_delim", "_max")

    def __init__(self, delimiter: bytes, max_frame_bytes: int) -> None:
        self._delim = delimiter
        self._max = max_frame_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        delim = self._delim
        if buf:
            # Only rescan the tail of what we hold: a delimiter may straddle the two reads.
            start = max(len(buf) - len(delim) + 1, 0)
            buf += data
            if buf.find(delim, start) < 0:
                if len(buf) > self._max:
                    raise FrameTooLarge(len(buf), self._max)
                return []
            data = bytes(buf)
            buf.clear()
        frames = data.split(delim)
        tail = frames.pop()
        if len(data) > self._max:  # else no piece of it can be too long
            biggest = max(len(tail), *map(len, frames)) if frames else len(tail)
            if biggest > self._max:
                raise FrameTooLarge(biggest, self._max)
        if tail:
            buf += tail
        return frames

    def parts(self, payload: bytes) -> tuple[bytes, bytes]:
        return payload, self._delim

    def pending(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        self._buf.clear()


class LengthPrefixFramer:
    """Each frame is preceded by its length as a 2- or 4-byte big-endian unsigned integer."""

    __slots__ = ("_buf", "_head", "_max", "_need", "_pack", "_unpack")

    def __init__(self, head: int, max_frame_bytes: int) -> None:
        fmt = struct.Struct(">H" if head == 2 else ">I")
        self._head = head
        self._unpack = fmt.unpack_from
        self._pack = fmt.pack
        self._max = max_frame_bytes
        self._buf = bytearray()
        self._need = head  # bytes the buffer must hold before parsing can make progress

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return []
            data = bytes(buf)
            buf.clear()
        head, unpack, limit = self._head, self._unpack, self._max
        frames: list[bytes] = []
        pos, end = 0, len(data)
        need = head
        while end - pos >= head:
            (size,) = unpack(data, pos)
            if size > limit:
                raise FrameTooLarge(size, limit)
            stop = pos + head + size
            if stop > end:
                need = head + size
                break
            frames.append(data[pos + head : stop])
            pos = stop
        if pos < end:
            buf += memoryview(data)[pos:]
        self._need = need
        return frames

    def parts(self, payload: bytes) -> tuple[bytes, bytes]:
        try:
            return self._pack(len(payload)), payload
        except struct.error:
            top = (1 << (8 * self._head)) - 1
            raise GearError(
                f"reply of {len(payload)} bytes does not fit a {self._head}-byte length prefix "
                f"(max {top})"
            ) from None

    def pending(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        self._buf.clear()
        self._need = self._head


def framer_factory(config: TcpConfig) -> Callable[[], Framer]:
    """Makes a fresh framer (one per connection) for `config.framing`."""
    limit = config.max_frame_bytes
    if config.framing == "delimiter":
        delimiter = config.delimiter_bytes
        return lambda: DelimiterFramer(delimiter, limit)
    head = 2 if config.framing == "length_prefix2" else 4
    return lambda: LengthPrefixFramer(head, limit)
