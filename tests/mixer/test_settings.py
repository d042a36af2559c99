"""Mixer settings: defaults < fluxrig-mixer.toml < FLUXRIG_* environment < flags, nested keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mixer.settings import MixerSettings, load_mixer_settings
from rack.errors import SettingsError

TOKEN = "s3cret-token-0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No FLUXRIG_* variables and no ./fluxrig-mixer.toml from the machine running the tests."""
    for key in list(os.environ):
        if key.upper().startswith("FLUXRIG_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def write(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def test_defaults_with_insecure() -> None:
    settings = load_mixer_settings(None, {"api.insecure": True})
    assert settings.mixer.state_dir == Path(".fluxrig-mixer")
    assert settings.mixer.startup_scenario == ""
    assert (settings.hub.host, settings.hub.port, settings.hub.leafnode_port) == (
        "127.0.0.1",
        4222,
        7422,
    )
    assert settings.hub_store == Path(".fluxrig-mixer/hub")
    assert (settings.api.port, settings.api.grpc_port) == (8090, 8091)
    assert settings.api.max_body_bytes == 1024 * 1024
    assert settings.api.token is None
    assert settings.enrollment.auto_adopt is False
    assert settings.enrollment.heartbeat_interval == 5.0
    assert settings.enrollment.max_missed == 3


def test_every_field_is_described() -> None:
    for name, info in MixerSettings.model_fields.items():
        assert info.description, name
        section = info.annotation
        assert isinstance(section, type)
        for key, field in section.model_fields.items():
            assert field.description, f"{name}.{key}"


def test_precedence_file_env_flags_for_nested_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = write(
        tmp_path / "m.toml",
        '[mixer]\nstate_dir = "/srv/mixer"\nlog_level = "debug"\n'
        f'[api]\nport = 1000\ngrpc_port = 1001\nauth_token = "{TOKEN}"\n'
        f'[enrollment]\nauto_adopt = false\nmax_missed = 5\nbootstrap_token = "{TOKEN}"\n'
        "[hub]\nport = 1002\n",
    )
    monkeypatch.setenv("FLUXRIG_API_PORT", "2000")
    monkeypatch.setenv("fluxrig_enrollment_auto_adopt", "true")
    monkeypatch.setenv("FLUXRIG_HUB_PORT", "2002")
    monkeypatch.setenv("FLUXRIG_NATS_SERVER", "/not/a/setting")  # other FLUXRIG_ vars: ignored
    settings = load_mixer_settings(config, {"hub.port": 3002, "api.grpc_port": None})
    assert settings.mixer.state_dir == Path("/srv/mixer")  # file only
    assert settings.mixer.log_level == "DEBUG"
    assert settings.enrollment.max_missed == 5  # file only
    assert settings.api.port == 2000  # env beats file
    assert settings.enrollment.auto_adopt is True  # env, any case
    assert settings.hub.port == 3002  # flag beats env and file
    assert settings.api.grpc_port == 1001  # a flag given as None is not given
    assert settings.api.token == TOKEN


def test_default_file_is_picked_up(tmp_path: Path) -> None:
    write(tmp_path / "fluxrig-mixer.toml", "[api]\ninsecure = true\n[hub]\nport = 4999\n")
    assert load_mixer_settings(None, {}).hub.port == 4999
    assert MixerSettings().hub.port == 4999


def test_token_from_fluxrig_api_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXRIG_API_TOKEN", TOKEN)
    monkeypatch.setenv("FLUXRIG_BOOTSTRAP_TOKEN", "b" * 20)
    settings = load_mixer_settings(None, {})
    assert settings.api.token == TOKEN
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings)
    monkeypatch.setenv("FLUXRIG_API_AUTH_TOKEN", "the-canonical-name-wins")
    assert load_mixer_settings(None, {}).api.token == "the-canonical-name-wins"


def test_missing_token_is_refused_unless_insecure(monkeypatch: pytest.MonkeyPatch) -> None:
    message = (
        "no API token: set [api] auth_token or FLUXRIG_API_TOKEN, or pass --insecure to run "
        "without authentication"
    )
    with pytest.raises(SettingsError) as exc:
        load_mixer_settings(None, {})
    assert message in str(exc.value)
    monkeypatch.setenv("FLUXRIG_API_TOKEN", "")  # empty means unset
    with pytest.raises(SettingsError, match="no API token"):
        load_mixer_settings(None, {})
    assert load_mixer_settings(None, {"api.insecure": True}).api.insecure is True
    monkeypatch.setenv("FLUXRIG_API_INSECURE", "true")
    assert load_mixer_settings(None, {}).api.token is None


def test_short_token_is_refused_and_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXRIG_API_TOKEN", "too-short")
    with pytest.raises(SettingsError) as exc:
        load_mixer_settings(None, {"api.insecure": True})
    message = str(exc.value)
    assert "'api.auth_token'" in message
    assert "environment variable FLUXRIG_API_TOKEN" in message
    assert "at least 16 characters" in message
    assert "too-short" not in message


def test_bad_value_names_key_and_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLUXRIG_API_PORT", "x")
    with pytest.raises(SettingsError) as exc:
        load_mixer_settings(None, {"api.insecure": True})
    assert "invalid setting 'api.port' = 'x' from environment variable FLUXRIG_API_PORT" in str(
        exc.value
    )
    monkeypatch.delenv("FLUXRIG_API_PORT")
    config = write(tmp_path / "m.toml", "[enrollment]\nheartbeat_interval = -1\n")
    with pytest.raises(SettingsError, match=r"'enrollment.heartbeat_interval' = -1 from .*m\.toml"):
        load_mixer_settings(config, {"api.insecure": True})
    with pytest.raises(SettingsError, match=r"'hub\.port' = 70000 from flag --nats-port"):
        load_mixer_settings(None, {"api.insecure": True, "hub.port": 70000})
    with pytest.raises(SettingsError, match=r"'mixer\.state_dir' = 5 from flag --state-dir"):
        load_mixer_settings(None, {"api.insecure": True, "mixer.state_dir": 5})


def test_every_bad_value_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXRIG_ENROLLMENT_MAX_MISSED", "0")
    monkeypatch.setenv("FLUXRIG_MIXER_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError) as exc:
        load_mixer_settings(None, {"api.insecure": True, "api.port": -1})
    for key in ("'enrollment.max_missed'", "'mixer.log_format'", "'api.port'"):
        assert key in str(exc.value)


def test_clashing_ports_are_refused() -> None:
    with pytest.raises(SettingsError, match=r"api.port and api.grpc_port are both 9000"):
        load_mixer_settings(None, {"api.insecure": True, "api.port": 9000, "api.grpc_port": 9000})
    settings = load_mixer_settings(
        None, {"api.insecure": True, "api.port": 0, "api.grpc_port": 0, "hub.port": 0}
    )
    assert settings.api.port == settings.api.grpc_port == 0  # 0 = any free port, never a clash


def test_unknown_keys_are_rejected(tmp_path: Path) -> None:
    config = write(tmp_path / "m.toml", "[api]\ninsecure = true\nprot = 5\n")
    with pytest.raises(SettingsError, match=r"\[api\]: unknown setting 'prot'; known: host, port"):
        load_mixer_settings(config, {})
    config = write(tmp_path / "m.toml", "[apii]\nport = 5\n")
    with pytest.raises(SettingsError, match=r"unknown setting 'apii'; known: mixer, hub, api"):
        load_mixer_settings(config, {})
    config = write(tmp_path / "m.toml", "api = 5\n")
    with pytest.raises(SettingsError, match=r"`api` must be a table \(\[api\]\)"):
        load_mixer_settings(config, {})
    with pytest.raises(SettingsError, match=r"unknown setting 'api.colour' \(flags\)"):
        load_mixer_settings(None, {"api.colour": "blue"})


def test_unreadable_settings_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_mixer_settings(tmp_path / "missing.toml", {})
    broken = write(tmp_path / "broken.toml", "[api\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_mixer_settings(broken, {})


def test_settings_are_frozen() -> None:
    settings = load_mixer_settings(None, {"api.insecure": True})
    with pytest.raises(ValueError, match="frozen"):
        settings.api.port = 1  # type: ignore[misc]
