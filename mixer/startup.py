"""Startup resolution of the mixer's scenario (seed: orchestration scenarios), `-s REF`.

    choice = resolve_startup("./payment.yaml", store, gears)   # blocking: call it in a thread

- empty: resume the last active scenario (the orchestrator's log); never fatal;
- a path (contains `/`, or ends in .yaml/.yml; `file://` optional): pre-flight, import,
  activate; fatal on error;
- `name:tag` (or `name`, `name:latest`, `sha256:<hex>`): resolve in the store, pre-flight,
  activate; fatal when missing or invalid.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from mixer.errors import MixerError
from mixer.store import CasStore, digest_of
from rack.errors import ScenarioError
from rack.gear.registry import GearRegistry
from rack.model.scenario import Blueprint
from rack.preflight import preflight_document
from rack.scenario_files import MAX_BYTES, parse_document

__all__ = ["StartupChoice", "resolve_startup", "slug"]

log = logging.getLogger("fluxrig.mixer")

FILE_PREFIX = "file://"


@dataclass(frozen=True, slots=True)
class StartupChoice:
    """What `-s` / `[mixer] startup_scenario` resolved to.

    `action`: `resume` (empty reference: the last active scenario, `ref` None when there is
    none), `import` (a file, now stored as `ref`), `load` (a `name:tag` found in the store).
    `created` says whether the import wrote a new entry. `blueprint` is the pre-flighted scenario.
    """

    action: Literal["resume", "import", "load"]
    source: str
    ref: str | None = None
    digest: str | None = None
    blueprint: Blueprint | None = None
    created: bool = False


def resolve_startup(ref: str, store: CasStore, gears: GearRegistry) -> StartupChoice:
    """Resolve the startup reference per the seed's table (blocking: call it in a thread).

    - `""`: resume the last active scenario: `resume` with `ref=None`; the orchestrator loads
      what its activation log says is active (nothing if none: never fatal).
    - a path (contains `/`, or ends in .yaml/.yml; `file://` optional): read, pre-flight with
      the rack's validator, import under the scenario's slugified name and tag
      `file-<first 12 hex of the digest>`. Any problem raises `MixerError` (fatal).
    - `name:tag` (or `name`, `name:latest`, `sha256:<hex>`): resolve in the store and pre-flight
      the stored scenario; missing or invalid raises `MixerError` (fatal).

    The mixer then hands `ref` to `Orchestrator.activate_at_start`.
    """
    if not ref:
        return StartupChoice("resume", ref)
    path = _as_path(ref)
    choice = _import_file(path, ref, store, gears) if path else _load_ref(ref, store, gears)
    log.info("startup scenario %s resolved (%s)", choice.ref, choice.digest)
    return choice


def _as_path(ref: str) -> Path | None:
    if ref.startswith(FILE_PREFIX):
        return Path(ref.removeprefix(FILE_PREFIX))
    if "/" in ref or "\\" in ref or ref.lower().endswith((".yaml", ".yml")):
        return Path(ref)
    return None


def _import_file(path: Path, source: str, store: CasStore, gears: GearRegistry) -> StartupChoice:
    data, text = _read_scenario(path)
    syntax: Literal["yaml", "toml"] = "toml" if path.suffix.lower() == ".toml" else "yaml"
    try:
        doc = parse_document(text, str(path), syntax=syntax)
        blueprint = preflight_document(doc, gears)
    except ScenarioError as exc:
        raise MixerError(f"startup scenario {path} is rejected: {exc}") from exc
    if syntax == "toml":  # the store holds YAML: keep the converted document
        data = yaml.safe_dump(doc.raw, sort_keys=False, allow_unicode=True).encode()
    name = slug(blueprint.name)
    tag = "file-" + digest_of(data).removeprefix("sha256:")[:12]
    try:
        result = store.put("scenario", name, tag, data)
    except MixerError as exc:
        raise MixerError(f"startup scenario {path} cannot be imported: {exc}") from exc
    verb = "imported" if result.created else "already stored"
    log.info("startup scenario %s %s as %s:%s", path, verb, name, tag)
    return StartupChoice(
        "import", source, f"{name}:{tag}", result.digest, blueprint, result.created
    )


def _read_scenario(path: Path) -> tuple[bytes, str]:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise MixerError(
            f"cannot read startup scenario {path}: {exc.strerror or exc}; check the path given "
            "to -s ([mixer] startup_scenario)"
        ) from exc
    if len(data) > MAX_BYTES:
        raise MixerError(f"startup scenario {path} is larger than {MAX_BYTES} bytes")
    try:
        return data, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MixerError(
            f"startup scenario {path} is not UTF-8 (invalid byte at offset {exc.start})"
        ) from exc


def _load_ref(ref: str, store: CasStore, gears: GearRegistry) -> StartupChoice:
    try:
        blob = store.get("scenario", ref)
    except MixerError as exc:
        hint = f" (to load the file, write ./{ref})" if Path(ref).is_file() else ""
        raise MixerError(f"startup scenario {ref!r}: {exc}{hint}") from exc
    try:
        text = blob.data.decode("utf-8")
        blueprint = preflight_document(parse_document(text, ref), gears)
    except (UnicodeDecodeError, ScenarioError) as exc:
        raise MixerError(f"stored startup scenario {ref!r} is rejected: {exc}") from exc
    resolved = f"{blob.name}:{blob.tag}" if blob.name is not None else blob.digest
    return StartupChoice("load", ref, resolved, blob.digest, blueprint)


_NOT_NAME = re.compile(r"[^a-z0-9._-]+")


def slug(title: str) -> str:
    """A store name from a scenario title: `Payment Processing` → `payment-processing`."""
    name = _NOT_NAME.sub("-", title.lower()).strip("-._")[:100].rstrip("-._")
    if not name or name == "sha256":
        return f"scenario-{name}".rstrip("-")
    return name
