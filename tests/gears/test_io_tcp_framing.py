"""io_tcp without sockets: the framers (every way a stream can be cut) and the config model."""

from __future__ import annotations

import struct

import pytest
from pydantic import ValidationError

from rack.errors import GearError
from rack.gear.docs import render_gear_page
from rack.gears.io_tcp import TcpConfig, TcpGear
from rack.gears.io_tcp.framing import DelimiterFramer, FrameTooLarge, LengthPrefixFramer


def feed_all(framer: DelimiterFramer | LengthPrefixFramer, chunks: list[bytes]) -> list[bytes]:
    frames: list[bytes] = []
    for chunk in chunks:
        frames += framer.feed(chunk)
    return frames


def every_split(stream: bytes) -> list[list[bytes]]:
    """The stream whole, byte by byte, and cut in two at every position."""
    cuts = [[stream], [bytes([b]) for b in stream]]
    cuts += [[stream[:i], stream[i:]] for i in range(1, len(stream))]
    return cuts


# -- delimiter ----------------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [b"\n", b"\r\n", b"\x03", b"END"])
def test_delimiter_frames_survive_any_segmentation(delimiter: bytes) -> None:
    frames = [b"alpha", b"", b"b" * 40, b"\r", b"last"]
    stream = b"".join(f + delimiter for f in frames) + b"tail"
    for chunks in every_split(stream):
        framer = DelimiterFramer(delimiter, 64)
        assert feed_all(framer, chunks) == frames
        assert framer.pending() == len(b"tail")


def test_delimiter_frames_are_bytes_and_remainder_is_kept() -> None:
    framer = DelimiterFramer(b"\r\n", 64)
    assert framer.feed(b"one\r\ntwo\r") == [b"one"]
    assert framer.pending() == 4
    frames = framer.feed(b"\nthree\r\n")
    assert frames == [b"two", b"three"]
    assert all(type(f) is bytes for f in frames)
    assert framer.pending() == 0


def test_delimiter_oversize_complete_frame() -> None:
    framer = DelimiterFramer(b"\n", 8)
    assert framer.feed(b"12345678\n") == [b"12345678"]  # exactly the limit is fine
    with pytest.raises(FrameTooLarge) as info:
        framer.feed(b"ok\n123456789\n")
    assert (info.value.size, info.value.limit) == (9, 8)


def test_delimiter_oversize_partial_frame_across_reads() -> None:
    framer = DelimiterFramer(b"\n", 8)
    assert framer.feed(b"1234") == []
    assert framer.feed(b"5678") == []
    with pytest.raises(FrameTooLarge, match="9 bytes exceeds max_frame_bytes=8"):
        framer.feed(b"9")


def test_delimiter_reply_gets_the_delimiter_appended() -> None:
    assert DelimiterFramer(b"\r\n", 8).parts(b"reply") == (b"reply", b"\r\n")


# -- length prefix ------------------------------------------------------------------------------


@pytest.mark.parametrize(("head", "fmt"), [(2, ">H"), (4, ">I")])
def test_length_prefix_frames_survive_any_segmentation(head: int, fmt: str) -> None:
    frames = [b"alpha", b"", b"\n\x00\xff" * 10, b"z"]
    stream = b"".join(struct.pack(fmt, len(f)) + f for f in frames) + struct.pack(fmt, 9) + b"par"
    for chunks in every_split(stream):
        framer = LengthPrefixFramer(head, 64)
        assert feed_all(framer, chunks) == frames
        assert framer.pending() == head + 3


def test_length_prefix_announced_oversize_is_rejected_before_the_body() -> None:
    framer = LengthPrefixFramer(4, 100)
    with pytest.raises(FrameTooLarge) as info:
        framer.feed(b"\x7f\xff\xff\xff")  # 2 GiB announced: rejected without buffering it
    assert info.value.size == 0x7FFFFFFF


def test_length_prefix_reply_gets_its_prefix() -> None:
    assert LengthPrefixFramer(2, 10).parts(b"abc") == (b"\x00\x03", b"abc")
    assert LengthPrefixFramer(4, 10).parts(b"") == (b"\x00\x00\x00\x00", b"")
    with pytest.raises(GearError, match="70000 bytes does not fit a 2-byte length prefix"):
        LengthPrefixFramer(2, 10).parts(b"x" * 70000)


# -- config -------------------------------------------------------------------------------------


def parse(**raw: object) -> TcpConfig:
    return TcpGear.parse_config(raw)


def test_config_defaults_and_escapes() -> None:
    cfg = parse(mode="server", bind=":8583", delimiter="\\r\\n")
    assert cfg.bind_address == ("", 8583)
    assert cfg.delimiter_bytes == b"\r\n"
    assert (cfg.framing, cfg.max_connections, cfg.idle_timeout) == ("delimiter", 1024, 300)
    assert cfg.max_frame_bytes == 65536
    assert parse(mode="server", bind=":1", delimiter="\\x03").delimiter_bytes == b"\x03"
    assert parse(mode="server", bind=":1", delimiter="\n").delimiter_bytes == b"\n"
    assert parse(mode="server", bind="[::1]:0").bind_address == ("::1", 0)
    assert parse(mode="client", connect="db.local:9000").connect_address == ("db.local", 9000)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"mode": "server"}, "mode 'server' needs 'bind'"),
        ({"mode": "client"}, "mode 'client' needs 'connect'"),
        ({"bind": ":1"}, "mode"),
        ({"mode": "server", "bind": "8583"}, "bind"),
        ({"mode": "server", "bind": ":99999"}, "bind"),
        ({"mode": "client", "connect": ":8583"}, "connect"),
        ({"mode": "client", "connect": "h:0"}, "connect"),
        ({"mode": "server", "bind": ":1", "connect": "h:1"}, "'connect' is only for mode 'client'"),
        ({"mode": "server", "bind": ":1", "delimiter": ""}, "delimiter"),
        ({"mode": "server", "bind": ":1", "delimiter": "\\q"}, "delimiter"),
        ({"mode": "server", "bind": ":1", "framing": "netstring"}, "framing"),
        ({"mode": "server", "bind": ":1", "max_frame_bytes": 0}, "max_frame_bytes"),
        ({"mode": "server", "bind": ":1", "bindd": ":2"}, "bindd"),
        ({"mode": "server", "bind": ":1", "tls": {}}, "tls.cert_file"),
        ({"mode": "server", "bind": ":1", "tls": {"cert_file": "c"}}, "tls.key_file"),
        (
            {"mode": "server", "bind": ":1", "tls": {"cert_file": "c", "key_file": "k",
                                                     "verify_client": True}},
            "tls.ca_file",
        ),
    ],
)  # fmt: skip
def test_config_errors_name_the_key(raw: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        TcpGear.parse_config(raw)
    assert needle in str(info.value)


def test_every_config_field_is_documented() -> None:
    schema = TcpConfig.model_json_schema()
    props = {**schema["properties"], **schema["$defs"]["TlsConfig"]["properties"]}
    undocumented = [name for name, prop in props.items() if not prop.get("description")]
    assert not undocumented
    page = render_gear_page("io_tcp", TcpGear)
    assert "`max_frame_bytes`" in page
    assert "`conn.id`" in page
