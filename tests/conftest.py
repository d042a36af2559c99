"""Fixtures shared by every test package: real servers on free ports with temp stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rack.natsd import NatsServer, NatsServerConfig


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """A real nats-server with JetStream, on a free port, with a store under `tmp_path`.

    Function-scoped: start + stop take a few tens of milliseconds, so every test gets a clean one.
    """
    config = NatsServerConfig(port=0, store_dir=tmp_path / "nats")
    async with NatsServer(config) as server:
        yield server
