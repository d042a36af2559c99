"""io_tcp over real sockets on 127.0.0.1, driven through the real gear lifecycle (GearHarness).

An "echo" pump plays the rest of the rack: it takes what the gear emitted on `out` and hands it
back to `process` on `in`, so every frame a client sends comes back to that client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rack.errors import GearError
from rack.gear.testing import GearHarness
from rack.gears.io_tcp import TcpGear
from rack.gears.io_tcp import server as server_module
from rack.model.fluxmsg import FluxMsg

TIMEOUT = 5.0
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def gear_of(h: GearHarness) -> TcpGear:
    assert isinstance(h.gear, TcpGear)
    return h.gear


@contextlib.asynccontextmanager
async def server(config: dict[str, Any] | None = None, **kw: Any) -> AsyncIterator[GearHarness]:
    raw = {"mode": "server", "bind": "127.0.0.1:0", **(config or {})}
    async with GearHarness(TcpGear, raw, **kw) as h:
        yield h


@contextlib.asynccontextmanager
async def echo(h: GearHarness) -> AsyncIterator[None]:
    """Reply to every frame with its own payload, like a rack wiring `out` back to `in`."""

    async def pump() -> None:
        while True:
            await h.emitter.wait_for("out", 1, timeout=3600)
            for msg in h.emitter.take("out"):
                await h.process(msg, "in")

    task = asyncio.create_task(pump())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def client(h: GearHarness, **kw: Any) -> AsyncIterator[Stream]:
    host, port = gear_of(h).address
    reader, writer = await asyncio.open_connection(host, port, **kw)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server closed (EOF) or reset the connection."""
    try:
        async with asyncio.timeout(TIMEOUT):
            while await reader.read(65536):
                pass
    except ConnectionResetError:
        pass
    return True


def reply(to: FluxMsg, raw: bytes) -> FluxMsg:
    return FluxMsg(raw=raw, meta=dict(to.meta))


# -- server basics ------------------------------------------------------------------------------


async def test_start_is_ready_and_logs_the_bound_address(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fluxrig.gear")
    async with server() as h:
        host, port = gear_of(h).address
        assert host == "127.0.0.1"
        assert port > 0
        assert f"listening on 127.0.0.1:{port}" in caplog.text
        async with client(h) as (_, writer):  # listening already: connects without retry
            writer.write(b"hi\n")
            msg = await h.next_emitted()
        assert msg.raw == b"hi"
        assert msg.src_id == "test"
        assert set(msg.meta) == {"conn.id", "peer.ip", "peer.port"}
        assert msg.meta["peer.ip"] == "127.0.0.1"
        assert int(msg.meta["peer.port"]) == writer.get_extra_info("sockname")[1]
        assert h.stats.get("connections") == 1
        assert h.stats.get("bytes_in") == 3


async def test_fifty_concurrent_clients_get_their_own_replies_in_order() -> None:
    clients, frames = 50, 200

    async def talk(h: GearHarness, n: int) -> None:
        async with client(h) as (reader, writer):
            sent = [f"client{n}-frame{i}".encode() for i in range(frames)]
            for start in range(0, frames, 50):  # several writes, many frames each
                writer.write(b"".join(f + b"\n" for f in sent[start : start + 50]))
            got = [(await reader.readuntil(b"\n"))[:-1] for _ in range(frames)]
            assert got == sent

    async with server() as h, echo(h):
        async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
            for n in range(clients):
                tg.create_task(talk(h, n))
        assert h.stats.get("connections") == clients


@pytest.mark.parametrize(
    ("config", "frame"),
    [
        ({"framing": "delimiter"}, lambda p: p + b"\n"),
        ({"framing": "delimiter", "delimiter": "\\r\\n"}, lambda p: p + b"\r\n"),
        ({"framing": "delimiter", "delimiter": "<EOT>"}, lambda p: p + b"<EOT>"),
        ({"framing": "length_prefix2"}, lambda p: struct.pack(">H", len(p)) + p),
        ({"framing": "length_prefix4"}, lambda p: struct.pack(">I", len(p)) + p),
    ],
    ids=["lf", "crlf", "multibyte", "prefix2", "prefix4"],
)
async def test_framings_end_to_end(config: dict[str, Any], frame: Any) -> None:
    payloads = [b"one", b"two\r\x00", b"x" * 3000, b"", b"last"]
    stream = b"".join(frame(p) for p in payloads)
    async with server(config) as h, echo(h), client(h) as (reader, writer):
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(stream)):  # one byte per write: frames cut at every position
            writer.write(stream[i : i + 1])
            await writer.drain()
        writer.write(stream * 3)  # and many frames in one segment
        expected = stream * 4
        assert await reader.readexactly(len(expected)) == expected


async def test_half_open_client_still_gets_its_replies(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fluxrig.gear")
    async with server() as h, echo(h), client(h) as (reader, writer):
        writer.write(b"a\nb\nc\npartial")
        writer.write_eof()  # shutdown(SHUT_WR): the server sees EOF, but we can still read
        assert await reader.readexactly(6) == b"a\nb\nc\n"
        assert "partial frame of 7 bytes" in caplog.text


# -- replies that cannot go out ------------------------------------------------------------------


async def test_reply_to_a_closed_connection_names_it() -> None:
    async with server() as h:
        async with client(h) as (_, writer):
            writer.write(b"question\n")
            msg = await h.next_emitted()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # RST: the server learns at once
        async with asyncio.timeout(TIMEOUT):
            await gear_of(h).wait_connections(0)
        conn_id = msg.meta["conn.id"]
        with pytest.raises(GearError, match=f"connection '{conn_id}' is gone"):
            await h.process(reply(msg, b"answer"))


async def test_reply_without_conn_id_is_an_error() -> None:
    async with server() as h:
        with pytest.raises(GearError, match=r"message has no conn\.id meta"):
            await h.process(h.msg(b"orphan"))


# -- protection ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "bad"),
    [
        ({"max_frame_bytes": 32}, b"y" * 100),  # no delimiter in sight
        ({"max_frame_bytes": 32}, b"z" * 33 + b"\n"),
        ({"framing": "length_prefix4", "max_frame_bytes": 32}, b"\xff\xfe\x00\x01garbage"),
    ],
    ids=["partial", "complete", "prefix-garbage"],
)
async def test_oversize_or_garbage_closes_only_that_connection(
    config: dict[str, Any], bad: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    good_frame = struct.pack(">I", 2) + b"ok" if "framing" in config else b"ok\n"
    async with server(config) as h, echo(h), client(h) as (good_r, good_w):
        good_w.write(good_frame)
        assert await good_r.readexactly(len(good_frame)) == good_frame
        async with client(h) as (bad_r, bad_w):
            bad_w.write(bad)
            assert await closed_by_server(bad_r)
        good_w.write(good_frame)
        assert await good_r.readexactly(len(good_frame)) == good_frame
        assert h.stats.get("oversize") == 1
        assert "exceeds max_frame_bytes=32" in caplog.text


async def test_idle_connection_is_closed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fluxrig.gear")
    async with server({"idle_timeout": 0.2}) as h, client(h) as (reader, _):
        async with asyncio.timeout(TIMEOUT):
            await gear_of(h).wait_connections(1)
        loop = asyncio.get_running_loop()
        opened = loop.time()
        assert await closed_by_server(reader)
        assert loop.time() - opened >= 0.2
        assert "idle for" in caplog.text


async def test_half_closed_connection_is_closed_once_replies_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "HALF_CLOSED_TIMEOUT", 0.2)
    async with (
        server({"idle_timeout": 0}) as h,
        echo(h),
        client(h) as (reader, writer),
        client(h) as (quiet_reader, quiet_writer),
    ):
        quiet_writer.write(b"open\n")  # idle, but not half-closed: stays (idle_timeout is off)
        assert await quiet_reader.readline() == b"open\n"
        writer.write(b"last\n")
        writer.write_eof()
        assert await reader.readexactly(5) == b"last\n"
        assert await closed_by_server(reader)
        async with asyncio.timeout(TIMEOUT):
            await gear_of(h).wait_connections(1)
        (conn,) = gear_of(h).connections.values()
        assert not conn.half_closed


async def test_max_connections_refuses_the_extra_one(caplog: pytest.LogCaptureFixture) -> None:
    async with (
        server({"max_connections": 2}) as h,
        echo(h),
        client(h) as (r1, w1),
        client(h) as (r2, w2),
    ):
        async with asyncio.timeout(TIMEOUT):
            await gear_of(h).wait_connections(2)
        async with client(h) as (r3, _):
            assert await closed_by_server(r3)
        for reader, writer in ((r1, w1), (r2, w2)):
            writer.write(b"still here\n")
            assert await reader.readline() == b"still here\n"
        assert h.stats.get("refused") == 1
        assert h.stats.gauges["open_connections"] == 2
        assert "max_connections=2 reached" in caplog.text


# -- back-pressure ------------------------------------------------------------------------------


async def test_full_emitter_pauses_reading_until_there_is_room() -> None:
    async with server(emitter_capacity=4) as h, client(h) as (_, writer):
        writer.write(b"1\n2\n3\n4\n")
        await h.emitter.wait_for("out", 4)
        (conn,) = gear_of(h).connections.values()
        assert conn.reading_paused
        writer.write(b"5\n6\n7\n")
        with pytest.raises(TimeoutError):  # nothing more is read while downstream is full
            await h.emitter.wait_for("out", 5, timeout=0.2)
        assert [m.raw for m in h.emitter.take("out")] == [b"1", b"2", b"3", b"4"]
        msgs = await h.emitter.wait_for("out", 3)
        assert [m.raw for m in msgs] == [b"5", b"6", b"7"]
        assert not conn.reading_paused


async def test_peer_not_reading_replies_pauses_reading_its_requests() -> None:
    big = b"r" * (1 << 20)
    async with server() as h, client(h) as (reader, writer):
        writer.write(b"q\n")
        msg = await h.next_emitted()
        (conn,) = gear_of(h).connections.values()
        # Small fixed kernel buffers (no autotuning), so only the transport's buffer can grow.
        server_sock = conn.transport.get_extra_info("socket")
        server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        written = 0
        while not conn.reading_paused:  # the client reads nothing: the write buffer fills
            await h.process(reply(msg, big))
            conn.flush()  # replies go out once per loop iteration; do not wait for it
            written += len(big) + 1
            assert written < 64 * len(big)
        await h.process(reply(msg, big))  # far above the low-water mark: stays paused
        written += len(big) + 1
        writer.write(b"more\n")
        with pytest.raises(TimeoutError):
            await h.emitter.wait_for("out", 1, timeout=0.2)
        assert conn.reading_paused
        await reader.readexactly(written)  # the client catches up ...
        assert (await h.next_emitted()).raw == b"more"  # ... and is read again
        assert not conn.reading_paused


# -- lifecycle ----------------------------------------------------------------------------------


async def test_drain_stops_accepting_but_replies_still_go_out() -> None:
    async with server() as h, client(h) as (reader, writer):
        address = gear_of(h).address
        writer.write(b"in flight\n")
        msg = await h.next_emitted()
        await h.gear.drain()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*address)
        await h.process(reply(msg, b"answer"))
        assert await reader.readline() == b"answer\n"
        assert next(iter(gear_of(h).connections.values())).reading_paused


async def test_stop_is_idempotent_and_closes_connections() -> None:
    async with server() as h, client(h) as (reader, _):
        async with asyncio.timeout(TIMEOUT):
            await gear_of(h).wait_connections(1)
        await h.gear.stop()
        await h.gear.stop()
        assert await closed_by_server(reader)
        assert not gear_of(h).connections


async def test_bind_conflict_is_a_gear_error() -> None:
    async with server() as h:
        port = gear_of(h).address[1]
        with pytest.raises(GearError, match=f"cannot listen on bind '127.0.0.1:{port}'"):
            async with server({"bind": f"127.0.0.1:{port}"}):
                pass


# -- client mode --------------------------------------------------------------------------------


class PeerServer:
    """A plain asyncio server standing in for the remote end of a client-mode gear."""

    def __init__(self) -> None:
        self.port = 0
        self._accepted: asyncio.Queue[Stream] = asyncio.Queue()
        self._streams: list[Stream] = []
        self._server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._on_connect, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._streams.append((reader, writer))
        await self._accepted.put((reader, writer))

    async def accept(self) -> Stream:
        return await asyncio.wait_for(self._accepted.get(), TIMEOUT)

    async def aclose(self) -> None:
        """Stop listening and close every accepted connection (like a server going down)."""
        streams, self._streams = self._streams, []
        for _, writer in streams:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_client_mode_reconnects_after_the_server_restarts() -> None:
    peer = PeerServer()
    await peer.start()
    config = {"mode": "client", "connect": f"127.0.0.1:{peer.port}", "reconnect_wait": 0.02}
    try:
        async with GearHarness(TcpGear, config) as h:
            reader, writer = await peer.accept()
            writer.write(b"hello\n")
            first = await h.next_emitted()
            assert first.raw == b"hello"
            await h.process(h.msg(b"world"))  # no conn.id needed: there is one connection
            assert await reader.readline() == b"world\n"

            await peer.aclose()  # the server goes down ...
            async with asyncio.timeout(TIMEOUT):
                await gear_of(h).wait_connections(0)
            with pytest.raises(GearError, match=f"not connected to 127.0.0.1:{peer.port}"):
                await h.process(h.msg(b"lost"))

            await peer.start(peer.port)  # ... and comes back on the same port
            reader, writer = await peer.accept()
            writer.write(b"again\n")
            second = await h.next_emitted()
            assert second.raw == b"again"
            assert second.meta["conn.id"] != first.meta["conn.id"]
            await h.process(h.msg(b"back"))
            assert await reader.readline() == b"back\n"
    finally:
        await peer.aclose()


async def test_client_start_does_not_wait_for_a_down_server() -> None:
    port = free_port()
    config = {"mode": "client", "connect": f"127.0.0.1:{port}", "reconnect_wait": 0.01}
    async with asyncio.timeout(1), GearHarness(TcpGear, config) as h:
        with pytest.raises(GearError, match="not connected"):
            await h.process(h.msg(b"too early"))
        assert gear_of(h).address == ("127.0.0.1", port)
        peer = PeerServer()
        try:
            await peer.start(port)
            await peer.accept()
            async with asyncio.timeout(TIMEOUT):
                await gear_of(h).wait_connections(1)
        finally:
            await peer.aclose()


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, used as server cert, client cert and CA."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_tls_with_client_certificates_between_two_gears(cert: tuple[Path, Path]) -> None:
    cert_file, key_file = (str(p) for p in cert)
    tls = {"cert_file": cert_file, "key_file": key_file, "ca_file": cert_file}
    async with server({"tls": {**tls, "verify_client": True}}) as srv, echo(srv):
        host, port = gear_of(srv).address
        config = {"mode": "client", "connect": f"{host}:{port}", "tls": tls}
        async with GearHarness(TcpGear, config, name="dialer") as cli:
            async with asyncio.timeout(TIMEOUT):
                await gear_of(cli).wait_connections(1)
            for i in range(20):
                await cli.process(cli.msg(f"secret {i}".encode()))
            msgs = await cli.emitter.wait_for("out", 20)
            assert [m.raw for m in msgs] == [f"secret {i}".encode() for i in range(20)]
        async with asyncio.timeout(TIMEOUT):
            await gear_of(srv).wait_connections(0)


async def test_tls_server_rejects_a_client_without_certificate(cert: tuple[Path, Path]) -> None:
    cert_file, key_file = (str(p) for p in cert)
    tls = {"cert_file": cert_file, "key_file": key_file, "ca_file": cert_file,
           "verify_client": True}  # fmt: skip
    async with server({"tls": tls}) as h, echo(h):
        context = ssl.create_default_context(cafile=cert_file)
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            async with client(h, ssl=context) as (reader, writer):
                writer.write(b"hello\n")
                await reader.readline()
        assert not gear_of(h).connections
        assert h.stats.get("connections") == 0


async def test_tls_config_with_missing_files_is_a_gear_error(tmp_path: Path) -> None:
    tls = {"cert_file": str(tmp_path / "nope.pem"), "key_file": str(tmp_path / "nope.key")}
    with pytest.raises(GearError, match="cannot load cert_file="):
        async with server({"tls": tls}):
            pass


# -- uvloop (the loop the rack runs on) ---------------------------------------------------------


def test_echo_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> bytes:
        async with server() as h, echo(h), client(h) as (reader, writer):
            writer.write(b"a\nb\n" * 100)
            return await reader.readexactly(400)

    assert uvloop.run(scenario()) == b"a\nb\n" * 100
