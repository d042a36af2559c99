"""The io_tcp config model: the single source for validation, JSON schema and the docs page."""

from __future__ import annotations

import codecs
import warnings
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from rack.gear import GearConfig

Framing = Literal["delimiter", "length_prefix2", "length_prefix4"]


def parse_hostport(value: str, *, allow_any_host: bool, allow_port_zero: bool) -> tuple[str, int]:
    """Split "host:port" (IPv6 as "[::1]:port"); raises ValueError with what is wrong."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise ValueError(f'\'{value}\' is not host:port (e.g. "127.0.0.1:8583" or ":8583")')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host and not allow_any_host:
        raise ValueError(f"'{value}' has no host; write host:port (e.g. \"10.0.0.5:8583\")")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"'{value}' has no valid port number ('{port_text}')") from None
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"port {port} in '{value}' is outside {low}..65535")
    return host, port


def decode_delimiter(value: str) -> bytes:
    """The delimiter's bytes: backslash escapes ("\\r\\n", "\\x03") are decoded first."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            text = codecs.decode(value.encode("latin-1", "backslashreplace"), "unicode_escape")
    except (UnicodeDecodeError, DeprecationWarning) as exc:
        raise ValueError(f"delimiter {value!r} has an invalid escape sequence ({exc})") from None
    if all(ord(ch) < 256 for ch in text):
        return text.encode("latin-1")
    return text.encode("utf-8")


class TlsConfig(GearConfig):
    """TLS for io_tcp. Server: cert_file + key_file, optionally ca_file + verify_client (mTLS).
    Client: ca_file to trust the server, cert_file + key_file to present a client certificate."""

    cert_file: Path | None = Field(
        None, description="PEM certificate chain (server: required; client: for mTLS)."
    )
    key_file: Path | None = Field(
        None, description="PEM private key of `cert_file` (server: required; client: for mTLS)."
    )
    ca_file: Path | None = Field(
        None,
        description="PEM CA bundle. Server: CAs that sign client certificates (with "
        "`verify_client`). Client: CAs to trust for the server (default: system CAs).",
    )
    verify_client: bool = Field(
        False, description="Server only: require a client certificate signed by `ca_file` (mTLS)."
    )
    server_hostname: str | None = Field(
        None,
        description="Client only: the name to verify the server certificate against "
        "(default: the host of `connect`).",
    )

    @model_validator(mode="after")
    def _pairs(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file must be given together")
        if self.verify_client and self.ca_file is None:
            raise ValueError("tls.verify_client needs tls.ca_file (the CA of client certificates)")
        return self


class TcpConfig(GearConfig):
    """Config of the io_tcp gear."""

    mode: Literal["server", "client"] = Field(
        description="`server` listens on `bind` and answers each connection; `client` dials "
        "`connect` and keeps that one connection up (reconnecting with back-off)."
    )
    bind: str | None = Field(
        None,
        description='Server: "host:port" to listen on; ":8583" means all IPv4 interfaces '
        '(IPv6: "[::]:8583"); port 0 picks a free port (logged as "listening on HOST:PORT").',
    )
    connect: str | None = Field(None, description='Client: "host:port" of the server to dial.')
    framing: Framing = Field(
        "delimiter",
        description="How the byte stream is cut into messages: `delimiter` (frames end with "
        "`delimiter`, which is not part of the message), `length_prefix2` / `length_prefix4` "
        "(a 2- or 4-byte big-endian length before each frame, not counting itself).",
    )
    delimiter: str = Field(
        "\n",
        description='Frame terminator for `framing: delimiter`; escapes such as "\\r\\n" or '
        '"\\x03" are decoded. Replies get it appended.',
    )
    max_connections: int = Field(
        1024,
        ge=1,
        description="Server: connections beyond this many are accepted and closed at once "
        "(counted as `refused`).",
    )
    idle_timeout: float = Field(
        300.0,
        ge=0,
        description="Server: close a connection after this many seconds without data in either "
        "direction; 0 turns it off. A connection the peer half-closed is closed after 30 s "
        "without replies (or this, if shorter).",
    )
    reconnect_wait: float = Field(
        1.0,
        gt=0,
        description="Client: first wait in seconds before redialing; doubles on each failure "
        "up to 30 s, and starts over once connected.",
    )
    max_frame_bytes: int = Field(
        65536,
        ge=1,
        description="Largest frame accepted; a longer frame (or a length prefix announcing one) "
        "closes that connection (counted as `oversize`).",
    )
    tls: TlsConfig | None = Field(None, description="TLS settings; omit for plain TCP.")

    @field_validator("bind")
    @classmethod
    def _check_bind(cls, value: str | None) -> str | None:
        if value is not None:
            parse_hostport(value, allow_any_host=True, allow_port_zero=True)
        return value

    @field_validator("connect")
    @classmethod
    def _check_connect(cls, value: str | None) -> str | None:
        if value is not None:
            parse_hostport(value, allow_any_host=False, allow_port_zero=False)
        return value

    @field_validator("delimiter")
    @classmethod
    def _check_delimiter(cls, value: str) -> str:
        if not decode_delimiter(value):
            raise ValueError('delimiter must not be empty (e.g. "\\n" or "\\r\\n")')
        return value

    @model_validator(mode="after")
    def _check_mode(self) -> TcpConfig:
        if self.mode == "server":
            if self.bind is None:
                raise ValueError("mode 'server' needs 'bind' (e.g. bind: \":8583\")")
            if self.connect is not None:
                raise ValueError("'connect' is only for mode 'client'; a server uses 'bind'")
            if self.tls is not None and self.tls.cert_file is None:
                raise ValueError("a TLS server needs tls.cert_file and tls.key_file")
            if self.tls is not None and self.tls.server_hostname is not None:
                raise ValueError("tls.server_hostname is only for mode 'client'")
        else:
            if self.connect is None:
                raise ValueError("mode 'client' needs 'connect' (e.g. connect: \"10.0.0.5:8583\")")
            if self.bind is not None:
                raise ValueError("'bind' is only for mode 'server'; a client uses 'connect'")
            if self.tls is not None and self.tls.verify_client:
                raise ValueError("tls.verify_client is only for mode 'server'")
        return self

    @property
    def delimiter_bytes(self) -> bytes:
        return decode_delimiter(self.delimiter)

    @property
    def bind_address(self) -> tuple[str, int]:
        """(host, port) to listen on; host "" means all interfaces."""
        assert self.bind is not None
        return parse_hostport(self.bind, allow_any_host=True, allow_port_zero=True)

    @property
    def connect_address(self) -> tuple[str, int]:
        assert self.connect is not None
        return parse_hostport(self.connect, allow_any_host=False, allow_port_zero=False)
