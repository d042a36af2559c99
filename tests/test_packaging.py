"""Packaging promises: the rack's base install stays light; both programs are installed."""

from __future__ import annotations

import re
from importlib.metadata import distribution

HEAVY = {"duckdb", "grpcio", "aiohttp"}


def _name(requirement: str) -> str:
    return re.split(r"[ ;<>=!~\[]", requirement, maxsplit=1)[0].lower()


def test_base_install_has_no_mixer_dependencies() -> None:
    requires = distribution("fluxrig").requires or []
    base = {_name(r) for r in requires if "extra ==" not in r}
    mixer = {_name(r) for r in requires if 'extra == "mixer"' in r}
    assert base.isdisjoint(HEAVY), f"heavy mixer dependencies in the base install: {base & HEAVY}"
    assert mixer >= HEAVY


def test_console_scripts_are_installed() -> None:
    scripts = {ep.name: ep.value for ep in distribution("fluxrig").entry_points}
    assert scripts["fluxrig"] == "rack.cli:main"
    assert scripts["fluxrig-mixer"] == "mixer.cli:main"
