"""Rack settings: defaults < fluxrig.toml [rack] < FLUXRIG_* environment < flags."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rack.errors import SettingsError
from rack.settings import RackSettings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No FLUXRIG_* variables and no ./fluxrig.toml from the machine running the tests."""
    for key in list(os.environ):
        if key.upper().startswith("FLUXRIG_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def write_toml(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def test_defaults() -> None:
    settings = load_settings(None, {})
    assert settings == RackSettings()
    assert settings.name == "standalone"
    assert settings.state_dir == Path(".fluxrig")
    assert settings.log_level == "INFO"
    assert settings.log_format == "text"
    assert settings.grace_period == 10
    assert settings.queue_depth == 1024
    assert settings.restart_backoff_initial == 0.1
    assert settings.restart_backoff_max == 30
    assert settings.watch is True
    assert settings.watch_interval == 1.0
    assert settings.machine_id == 0


def test_every_field_is_described() -> None:
    for name, info in RackSettings.model_fields.items():
        assert info.description, name


def test_precedence_toml_env_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = write_toml(
        tmp_path / "rack.toml",
        '[rack]\nname = "from-toml"\nqueue_depth = 10\nmachine_id = 7\nlog_format = "json"\n'
        '[gears.x]\nspec = "io_tcp"\n',
    )
    monkeypatch.setenv("FLUXRIG_QUEUE_DEPTH", "20")
    monkeypatch.setenv("FLUXRIG_MACHINE_ID", "8")
    monkeypatch.setenv("fluxrig_watch", "false")
    settings = load_settings(config, {"machine_id": 9, "grace_period": None})
    assert settings.name == "from-toml"  # toml only
    assert settings.log_format == "json"  # toml only
    assert settings.queue_depth == 20  # env beats toml
    assert settings.watch is False  # env, any case
    assert settings.machine_id == 9  # flag beats env and toml
    assert settings.grace_period == 10  # a flag given as None is not given


def test_default_config_file_is_picked_up(tmp_path: Path) -> None:
    write_toml(tmp_path / "fluxrig.toml", '[rack]\nname = "edge-7"\nlog_level = "debug"\n')
    assert load_settings(None, {}).name == "edge-7"
    assert load_settings(None, {}).log_level == "DEBUG"
    assert RackSettings().name == "edge-7"
    assert RackSettings(name="kw").name == "kw"


def test_file_without_rack_table_gives_defaults(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "f.toml", '[gears.a]\nspec = "sink"\n')
    assert load_settings(config, {}) == RackSettings()


def test_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXRIG_QUEUE_DEPTH", "0")
    with pytest.raises(SettingsError) as exc:
        load_settings(None, {})
    message = str(exc.value)
    assert "'queue_depth'" in message
    assert "environment variable FLUXRIG_QUEUE_DEPTH" in message
    assert "greater than or equal to 1" in message


def test_bad_toml_value_names_the_file(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "rack.toml", '[rack]\nlog_format = "xml"\n')
    with pytest.raises(SettingsError, match=r"'log_format' = 'xml' from .*rack\.toml \[rack\]"):
        load_settings(config, {})


def test_bad_flag_value_names_the_flag() -> None:
    with pytest.raises(SettingsError, match="'machine_id' = 70000 from flag --machine-id"):
        load_settings(None, {"machine_id": 70000})


def test_every_bad_value_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXRIG_WATCH", "maybe")
    with pytest.raises(SettingsError) as exc:
        load_settings(None, {"name": "bad name!", "grace_period": -1})
    message = str(exc.value)
    for key in ("'watch'", "'name'", "'grace_period'"):
        assert key in message


def test_unknown_keys_are_rejected(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "rack.toml", "[rack]\nqueue_dept = 5\n")
    with pytest.raises(SettingsError, match=r"unknown setting 'queue_dept'; known: name,"):
        load_settings(config, {})
    with pytest.raises(SettingsError, match=r"unknown setting 'colour' \(flags\)"):
        load_settings(None, {"colour": "blue"})


def test_unreadable_settings_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "missing.toml", {})
    broken = write_toml(tmp_path / "broken.toml", "[rack\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(broken, {})
    not_table = write_toml(tmp_path / "scalar.toml", 'rack = "x"\n')
    with pytest.raises(SettingsError, match="must be a table"):
        load_settings(not_table, {})


def test_backoff_bounds_must_be_ordered() -> None:
    with pytest.raises(SettingsError, match=r"restart_backoff_max .* is below"):
        load_settings(None, {"restart_backoff_initial": 5, "restart_backoff_max": 1})


def test_settings_are_frozen() -> None:
    settings = load_settings(None, {})
    with pytest.raises(ValueError, match="frozen"):
        settings.name = "other"  # type: ignore[misc]
