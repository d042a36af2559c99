"""Serving the mixer's two APIs (`[api]`): the REST API (aiohttp) and the gRPC API, on the same
context, token and TLS.

    tls = await asyncio.to_thread(load_tls, settings.api, pki)
    url = await serve_rest(stack, settings.api, context, tls)
    target = await serve_grpc(stack, settings.api, context, watch, tls)

Each registers its own close on `stack` (the mixer's exit stack) once it listens.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

from aiohttp import web

from mixer.api.grpc import GrpcApi
from mixer.api.grpc.watch import RackWatch
from mixer.api.http import ApiContext, build_app
from mixer.api.tls import ServerTls
from mixer.errors import MixerError
from mixer.pki import ClusterPki
from mixer.settings import ApiSection

__all__ = ["load_tls", "serve_grpc", "serve_rest"]

log = logging.getLogger("fluxrig.mixer")


def load_tls(api: ApiSection, pki: ClusterPki | None) -> ServerTls | None:
    """Blocking: the APIs' certificate (`[api] tls_cert`/`tls_key`, else the hub's), or None."""
    if not api.tls:
        return None
    if api.tls_cert is not None and api.tls_key is not None:
        return ServerTls.load(api.tls_cert, api.tls_key)
    if pki is None:
        raise MixerError("[api] tls needs the cluster PKI or [api] tls_cert and tls_key")
    return ServerTls.load(pki.hub_cert_path, pki.hub_key_path)


async def serve_rest(
    stack: AsyncExitStack, api: ApiSection, context: ApiContext, tls: ServerTls | None
) -> str:
    """The REST API (mixer.api.http) on [api] host:port; its URL."""
    runner = web.AppRunner(build_app(context), access_log=None, handle_signals=False)
    await runner.setup()
    stack.push_async_callback(_closing, "REST API", runner.cleanup)
    ssl_context = tls.ssl_context() if tls is not None else None
    try:
        await web.TCPSite(runner, api.host, api.port, ssl_context=ssl_context).start()
    except OSError as exc:
        raise MixerError(
            f"REST API cannot listen on {api.host}:{api.port}: {exc.strerror or exc}; "
            "choose another [api] port (--api-port)"
        ) from exc
    host, port = runner.addresses[0][:2]
    scheme = "https" if ssl_context is not None else "http"
    url = f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
    log.info("REST API listening on %s", url)
    return url


async def serve_grpc(
    stack: AsyncExitStack,
    api: ApiSection,
    context: ApiContext,
    watch: RackWatch,
    tls: ServerTls | None,
) -> str:
    """The gRPC API (mixer.api.grpc) on [api] host:grpc_port, with health and reflection; its
    target."""
    grpc_api = GrpcApi(context, api.host, api.grpc_port, watch=watch, tls=tls)
    await grpc_api.start()  # MixerError when the port is taken
    stack.push_async_callback(_closing, "gRPC API", grpc_api.aclose)
    log.info("gRPC API listening on %s", grpc_api.target)
    return grpc_api.target


async def _closing(what: str, close: Callable[[], Awaitable[None]]) -> None:
    await close()
    log.info("%s closed", what)
