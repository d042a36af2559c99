"""Packaging promises: the rack's base install stays light; both programs are installed."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

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


def _closure(names: set[str]) -> set[str]:
    """`names` and everything their installed distributions require (extras left out)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:  # a platform-specific dependency not installed here
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return seen


def test_rack_telemetry_exports_over_http_and_leaves_grpc_to_an_extra() -> None:
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    base = {_name(r) for r in project["dependencies"]}
    assert {"opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http"} <= base
    grpc_exporter = "opentelemetry-exporter-otlp-proto-grpc"
    assert {_name(r) for r in project["optional-dependencies"]["otlp-grpc"]} == {grpc_exporter}
    telemetry = _closure({"opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http"})
    assert telemetry.isdisjoint(HEAVY | {grpc_exporter}), telemetry & (HEAVY | {grpc_exporter})
