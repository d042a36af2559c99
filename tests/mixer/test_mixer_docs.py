"""docs/mixer-settings.md is generated from MixerSettings; a stale page fails the build."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from mixer.docs import settings_page
from mixer.settings import MixerSettings

PAGE = Path(__file__).parents[2] / "docs" / "mixer-settings.md"


def test_mixer_settings_page_is_current() -> None:
    if PAGE.read_text(encoding="utf-8") != settings_page():
        pytest.fail("docs/mixer-settings.md is stale: run `make docs`")


def test_every_section_and_key_is_documented_with_its_variable() -> None:
    page = settings_page()
    for section, field in MixerSettings.model_fields.items():
        assert f"## `[{section}]`" in page
        model = field.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        for key in model.model_fields:
            assert f"| `{key}` |" in page
    assert "`FLUXRIG_API_TOKEN`" in page  # the alias, not FLUXRIG_API_AUTH_TOKEN
    assert "`FLUXRIG_ORCHESTRATOR_APPLY_TIMEOUT`" in page
