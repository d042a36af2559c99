"""The mixer's settings reference page, generated from `MixerSettings` (the model that validates).

python -m mixer.docs docs/mixer-settings.md      # `make docs` runs it; a test fails when stale
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel

from mixer.settings import ENV_ALIASES, ENV_PREFIX, FLAG_NAMES, MixerSettings
from rack.config_layers import env_name
from rack.gear.docs import render_fields

__all__ = ["settings_page"]

INTRO = (
    "Generated from `mixer.settings.MixerSettings` by `make docs`. Precedence: "
    "`fluxrig-mixer.toml` (or `-c FILE`) < `FLUXRIG_<SECTION>_<KEY>` environment < "
    "`fluxrig-mixer` flags. A bad value stops the mixer at start with the key and its source."
)


def settings_page() -> str:
    lines = ["# Mixer settings", "", INTRO, ""]
    for section, field in MixerSettings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        lines += [f"## `[{section}]`", "", field.description or "", ""]
        lines += render_fields(model)
        lines += ["", "Environment variables and flags: " + _sources(section, model), ""]
    return "\n".join(lines)


def _sources(section: str, model: type[BaseModel]) -> str:
    parts = []
    for key in model.model_fields:
        dotted = f"{section}.{key}"
        names = [f"`{ENV_ALIASES.get(dotted) or env_name(ENV_PREFIX, (section, key))}`"]
        if dotted in FLAG_NAMES:
            names.append(f"`{FLAG_NAMES[dotted]}`")
        parts.append(" / ".join(names))
    return ", ".join(parts) + "."


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/mixer-settings.md")
    target.write_text(settings_page(), encoding="utf-8")
    print(f"wrote {target}")
