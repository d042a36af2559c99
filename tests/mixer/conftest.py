"""Fixtures of the mixer tests: an API context over a real DuckDB file and a real CAS store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from mixer.api.http import ApiContext
from mixer.registry import Registry
from mixer.store import CasStore
from rack.gear.registry import GearRegistry
from tests.mixer.documents import TOKEN


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ApiContext]:
    conn = duckdb.connect(str(tmp_path / "mixer.duckdb"))
    store = CasStore(tmp_path / "cas", conn)
    registry = Registry(conn)
    yield ApiContext(store, registry, GearRegistry.discover(), auth_token=TOKEN)
    store.close()
    registry.close()
    conn.close()
