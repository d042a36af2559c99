"""The generated gear reference in docs/gears matches the gears' config models."""

from __future__ import annotations

from pathlib import Path

import pytest

from rack.gear.docs import render_all
from rack.gear.registry import GearRegistry

DOCS = Path(__file__).resolve().parent.parent / "docs" / "gears"


def test_every_gear_has_a_summary_and_described_config() -> None:
    for name, gear in GearRegistry.discover().items():
        assert gear.summary, f"gear '{name}' has no summary"
        assert (gear.__doc__ or "").strip(), f"gear '{name}' has no docstring"
        for field, info in gear.config_model.model_fields.items():
            assert info.description, f"gear '{name}' config field '{field}' has no description"


def test_docs_are_current() -> None:
    expected = render_all(GearRegistry.discover())
    committed = {path.name: path.read_text(encoding="utf-8") for path in DOCS.glob("*.md")}
    stale = sorted(
        name
        for name in expected.keys() | committed.keys()
        if expected.get(name) != committed.get(name)
    )
    if stale:
        pytest.fail(f"docs/gears is stale: run `make docs` (differs: {', '.join(stale)})")


def test_settings_page_is_current() -> None:
    from rack.cli import settings_page

    committed = (DOCS.parent / "settings.md").read_text(encoding="utf-8")
    if committed != settings_page():
        pytest.fail("docs/settings.md is stale: run `make docs`")
