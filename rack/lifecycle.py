"""`Service`: the shape shared by long-lived resources (servers, links, the mixer itself).

A service opens with `await start()` and releases everything with `await aclose()` (idempotent);
`async with service:` does both, so composition roots can put services on an AsyncExitStack.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Service:
    """Base of resources with `start()` / `aclose()`; provides the async context manager."""

    async def start(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
