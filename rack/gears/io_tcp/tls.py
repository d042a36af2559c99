"""SSL contexts from the `tls` config (server: cert + key, optional mTLS; client: CA + mTLS)."""

from __future__ import annotations

import ssl

from rack.errors import GearError

from .config import TcpConfig, TlsConfig


def _server_context(tls: TlsConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tls.ca_file)
    assert tls.cert_file is not None  # the config model requires it for a server
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.verify_client:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _client_context(tls: TlsConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    if tls.cert_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


def ssl_context(config: TcpConfig) -> ssl.SSLContext | None:
    """The SSL context for `config`, or None for plain TCP; GearError names the files."""
    tls = config.tls
    if tls is None:
        return None
    try:
        return _server_context(tls) if config.mode == "server" else _client_context(tls)
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(
            f"{key}={value}"
            for key, value in (
                ("cert_file", tls.cert_file),
                ("key_file", tls.key_file),
                ("ca_file", tls.ca_file),
            )
            if value is not None
        )
        raise GearError(f"io_tcp tls: cannot load {files or 'system CAs'}: {exc}") from exc
