"""Layered settings shared by the rack and the mixer: TOML file < environment < flags.

    settings = load_layered(
        MixerSettings,
        file=Path("fluxrig-mixer.toml"),
        table=None,                                  # sections are top-level tables
        env_prefix="FLUXRIG_",
        flags={"api.port": 9000},                    # dotted keys; None values are "not given"
        env_aliases={"api.auth_token": "FLUXRIG_API_TOKEN"},
    )

A model's fields are either leaves (`port: int`) or sections (`api: ApiSection`, a pydantic
model). Each leaf has a dotted key (`api.port`) and comes from, in rising precedence:

- the file: `[api] port = 8090` (with `table="rack"`, everything lives in `[rack]` instead);
- the environment: `FLUXRIG_API_PORT` (prefix + path joined by `_`, upper-case; names are
  matched case-insensitively, empty values are ignored), or an alias from `env_aliases`
  (the canonical name wins when both are set);
- the flags: `{"api.port": 9000}`.

Unknown keys in the file or among the flags raise `SettingsError` naming them and the known
ones. A bad value raises `SettingsError` listing every problem with its key, value and source:
"invalid setting 'api.port' = 'x' from environment variable FLUXRIG_API_PORT: ...". Values of
`SecretStr`/`SecretBytes` fields are never shown. Unknown environment variables are ignored
(the prefix is shared with other variables, e.g. FLUXRIG_NATS_SERVER).
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from rack.errors import SettingsError

__all__ = ["EnvSource", "Setting", "TomlSource", "env_name", "leaves", "load_layered"]

S = TypeVar("S", bound=BaseSettings)
Key = tuple[str, ...]
HIDDEN = "'**********'"


@dataclass(frozen=True, slots=True)
class Setting:
    """One leaf value and where it came from ("environment variable FLUXRIG_API_PORT")."""

    value: Any
    origin: str


# -- the model's shape ---------------------------------------------------------------------------


def _section(field: FieldInfo) -> type[BaseModel] | None:
    """The model of a section field (`api: ApiSection`), or None for a leaf."""
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def leaves(model: type[BaseModel], prefix: Key = ()) -> dict[Key, FieldInfo]:
    """Every leaf field of `model`, keyed by its path (`("api", "port")`), in field order."""
    out: dict[Key, FieldInfo] = {}
    for name, field in model.model_fields.items():
        sub = _section(field)
        if sub is None:
            out[(*prefix, name)] = field
        else:
            out.update(leaves(sub, (*prefix, name)))
    return out


def env_name(prefix: str, key: Key) -> str:
    """`FLUXRIG_` + `("api", "port")` → `FLUXRIG_API_PORT`."""
    return (prefix + "_".join(key)).upper()


def _is_secret(field: FieldInfo) -> bool:
    annotation = field.annotation
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    return any(a in (SecretStr, SecretBytes) for a in (annotation, *args))


def _nest(flat: Mapping[Key, Setting]) -> dict[str, Any]:
    """`{("api", "port"): Setting(1, ..)}` → `{"api": {"port": 1}}`."""
    out: dict[str, Any] = {}
    for key, setting in flat.items():
        node = out
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = setting.value
    return out


# -- the layers ----------------------------------------------------------------------------------


class TomlSource(PydanticBaseSettingsSource):
    """A TOML file's settings: the `[table]` (e.g. `[rack]`) or, with `table=None`, the whole
    file, whose top-level tables are the model's sections. Nothing when `path` is None or the
    table is absent. Unknown keys raise `SettingsError` at construction."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None, table: str | None):
        super().__init__(settings_cls)
        self.path = path
        self.settings: dict[Key, Setting] = {}
        if path is None:
            return
        data = _read_toml(path)
        if table is not None:
            data = data.get(table, {})
            if not isinstance(data, dict):
                raise SettingsError(f"{path}: `{table}` must be a table ([{table}])")
        where = (table,) if table is not None else ()
        self._walk(settings_cls, data, (), where)

    def _walk(self, model: type[BaseModel], data: dict[str, Any], key: Key, where: Key) -> None:
        label = f"{self.path} [{'.'.join(where)}]" if where else str(self.path)
        known = model.model_fields
        for name, value in data.items():
            if name not in known:
                raise SettingsError(f"{label}: unknown setting '{name}'; known: {', '.join(known)}")
            sub = _section(known[name])
            if sub is None:
                self.settings[(*key, name)] = Setting(value, label)
            elif isinstance(value, dict):
                self._walk(sub, value, (*key, name), (*where, name))
            else:
                table = ".".join((*where, name))
                raise SettingsError(f"{label}: `{name}` must be a table ([{table}])")

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return _nest(self.settings)


class EnvSource(PydanticBaseSettingsSource):
    """`PREFIX_SECTION_KEY` environment variables (case-insensitive; empty means unset), plus
    `aliases` (dotted key → variable name) that the canonical name overrides."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        prefix: str,
        aliases: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
    ):
        super().__init__(settings_cls)
        env = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}
        self.settings: dict[Key, Setting] = {}
        for key in leaves(settings_cls):
            names = [env_name(prefix, key)]
            if (alias := (aliases or {}).get(".".join(key))) is not None:
                names.insert(0, alias.upper())
            for name in names:  # the last one set wins
                value = env.get(name)
                if value:
                    self.settings[key] = Setting(value, f"environment variable {name}")

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return _nest(self.settings)


def _flags(
    model: type[BaseModel], flags: Mapping[str, Any], names: Mapping[str, str]
) -> dict[Key, Setting]:
    known = {".".join(key): key for key in leaves(model)}
    out: dict[Key, Setting] = {}
    for dotted, value in flags.items():
        if value is None:
            continue
        if dotted not in known:
            raise SettingsError(f"unknown setting '{dotted}' (flags); known: {', '.join(known)}")
        flag = names.get(dotted) or "--" + dotted.replace(".", "-").replace("_", "-")
        out[known[dotted]] = Setting(value, f"flag {flag}")
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"settings file {path} is not valid TOML: {exc}") from None


# -- loading -------------------------------------------------------------------------------------


def existing(path: Path | None) -> Path | None:
    """`path` when it names an existing file, else None (optional default settings files)."""
    return path if path is not None and path.is_file() else None


def load_layered(
    model: type[S],
    *,
    file: Path | None,
    default_file: Path | None = None,
    table: str | None,
    env_prefix: str,
    flags: Mapping[str, Any],
    env_aliases: Mapping[str, str] | None = None,
    flag_names: Mapping[str, str] | None = None,
    what: str = "settings",
) -> S:
    """`model` from `file` (its `[table]`, or all of it) < environment < `flags`; see the module
    doc. `flag_names` spells flags in messages (`{"mixer.state_dir": "--state-dir"}`; default
    `--api-port` for `api.port`); `what` names the model in errors that concern no single key.
    A named `file` must exist; without one, `default_file` is read when it exists."""
    if file is not None and not file.is_file():
        raise SettingsError(f"settings file {file} not found")
    file = file or existing(default_file)
    merged: dict[Key, Setting] = {}
    merged.update(TomlSource(model, file, table).settings)
    merged.update(EnvSource(model, env_prefix, env_aliases).settings)
    merged.update(_flags(model, flags, flag_names or {}))
    try:
        return model.model_validate(_nest(merged))
    except ValidationError as exc:
        raise SettingsError(_explain(exc, leaves(model), merged, what)) from None


def _explain(
    exc: ValidationError, fields: dict[Key, FieldInfo], merged: dict[Key, Setting], what: str
) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(str(part) for part in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        key = next((loc[:n] for n in range(len(loc), 0, -1) if loc[:n] in merged), None)
        if key is None:
            lines.append(f"invalid {what}: {message}")
            continue
        setting = merged[key]
        shown = HIDDEN if key in fields and _is_secret(fields[key]) else repr(setting.value)
        lines.append(
            f"invalid setting '{'.'.join(key)}' = {shown} from {setting.origin}: {message}"
        )
    return "; ".join(lines)
