"""The mixer services' own connections to its NATS hub: opened the same way, closed the same way.

nc = await connect(url, "enrollment")      # MixerError naming the service and the hub
...
if await drain(nc, "enrollment"):          # finish the messages in hand, then close
    log.info("enrollment closed")
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit, urlunsplit

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError

from mixer.errors import MixerError

__all__ = ["connect", "drain", "shown"]

log = logging.getLogger("fluxrig.mixer")


def shown(url: str) -> str:
    """`url` without its credentials: what logs and errors may say."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


async def connect(url: str, who: str) -> Client:
    """A connection named after `who` that reconnects for as long as the mixer runs."""
    try:
        return await nats.connect(url, name=f"fluxrig-mixer {who}", max_reconnect_attempts=-1)
    except (OSError, TimeoutError, NatsError) as exc:
        raise MixerError(f"{who} cannot connect to the NATS hub at {shown(url)}: {exc}") from exc


async def drain(nc: Client | None, who: str) -> bool:
    """Drain then close `nc`; False when there was nothing to close. Never raises for NATS."""
    if nc is None or nc.is_closed:
        return False
    try:
        await nc.drain()
    except (NatsError, TimeoutError) as exc:
        log.warning("%s: draining the NATS connection failed: %s", who, exc)
    finally:
        await nc.close()
    return True
