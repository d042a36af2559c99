"""TLS for the mixer's APIs: one server certificate for REST (aiohttp) and gRPC.

    tls = ServerTls.load(cert_path, key_path)       # PEM files; MixerError naming a bad one
    web.TCPSite(runner, host, port, ssl_context=tls.ssl_context())
    server.add_secure_port(address, tls.grpc_credentials())

`[api] tls = true` turns it on; the certificate is `[api] tls_cert`/`tls_key` when given, else
the hub's server certificate from the cluster PKI (valid for localhost and the hub's address,
signed by the cluster CA: clients trust `<state_dir>/pki/ca.crt`). TLS 1.2 at least.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from mixer.errors import MixerError

__all__ = ["ServerTls"]


@dataclass(frozen=True, slots=True)
class ServerTls:
    cert_path: Path
    key_path: Path
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> ServerTls:
        """Read and check the pair (an SSL context loads it, so a mismatch fails here)."""
        try:
            cert, key = cert_path.read_bytes(), key_path.read_bytes()
        except OSError as exc:
            raise MixerError(
                f"cannot read the API's TLS certificate or key ({exc.filename}): "
                f"{exc.strerror or exc}; check [api] tls_cert and tls_key"
            ) from exc
        tls = cls(cert_path, key_path, cert, key)
        tls.ssl_context()
        return tls

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_path, self.key_path)
        except (ssl.SSLError, OSError) as exc:
            raise MixerError(
                f"the API's TLS certificate {self.cert_path} and key {self.key_path} do not "
                f"load together: {exc}; check [api] tls_cert and tls_key"
            ) from exc
        return context

    def grpc_credentials(self) -> Any:
        return grpc.ssl_server_credentials([(self.key_pem, self.cert_pem)])
