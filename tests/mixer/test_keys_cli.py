"""`fluxrig keys show|backup` on a real cluster PKI made by `ClusterPki.open`."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from mixer.pki import FILES, ClusterPki
from rack import keys_cli
from rack.cli import main
from rack.model.passport import key_fingerprint


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "mixer-state"


@pytest.fixture
def pki(state_dir: Path) -> ClusterPki:
    return ClusterPki.open(state_dir / "pki")


def _snapshot(directory: Path) -> dict[str, tuple[int, bytes, int]]:
    """Every file's mode, bytes and mtime: what a read-only command must leave alone."""
    return {
        p.name: (stat.S_IMODE(p.stat().st_mode), p.read_bytes(), p.stat().st_mtime_ns)
        for p in directory.iterdir()
    }


def test_files_are_the_mixers() -> None:
    assert keys_cli.FILES == FILES


def test_show_prints_ca_signing_key_hub_and_files(
    pki: ClusterPki, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(pki.directory)
    assert main(["keys", "show", "--state-dir", str(state_dir)]) == 0
    out = capsys.readouterr().out
    assert pki.fingerprint() in out
    assert pki.ca_cert.subject.rfc4514_string() in out
    assert key_fingerprint(pki.signing_public_raw) in out
    assert "localhost, 127.0.0.1" in out
    for name in FILES:
        mode = "600" if name.endswith(".key") else "644"
        assert f"{name:<12} {mode}" in out
    assert _snapshot(pki.directory) == before


def test_show_json(pki: ClusterPki, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "show", "--state-dir", str(state_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ca"]["fingerprint_sha256"] == pki.fingerprint()
    assert info["ca"]["not_after"].startswith(f"{pki.ca_cert.not_valid_after_utc:%Y-%m-%d}")
    assert info["signing_key"] == {
        "fingerprint": key_fingerprint(pki.signing_public_raw),
        "public_key": pki.signing_public_raw.hex(),
    }
    assert info["hub"]["names"] == ["localhost", "127.0.0.1"]
    assert info["hub"]["issued_by_ca"] is True
    modes = {f["name"]: f["mode"] for f in info["files"]}
    assert modes == {
        "ca.key": "600",
        "ca.crt": "644",
        "signing.key": "600",
        "hub.key": "600",
        "hub.crt": "644",
    }


def test_show_without_pki_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = tmp_path / "nothing-here"
    assert main(["keys", "show", "--state-dir", str(state_dir)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"fluxrig: no cluster PKI in {state_dir / 'pki'}: start fluxrig-mixer once to create it\n"
    )
    assert not state_dir.exists()
    assert list(tmp_path.iterdir()) == []


def test_group_readable_key_is_refused(
    pki: ClusterPki, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = pki.directory / "signing.key"
    os.chmod(key, 0o640)
    assert main(["keys", "show", "--state-dir", str(state_dir)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"chmod 600 {key}" in captured.err
    assert "mode 640" in captured.err
    assert stat.S_IMODE(key.stat().st_mode) == 0o640  # reported, not "fixed"


def test_incomplete_pki_is_refused(
    pki: ClusterPki, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (pki.directory / "hub.crt").unlink()
    assert main(["keys", "show", "--state-dir", str(state_dir)]) == 1
    assert "hub.crt missing" in capsys.readouterr().err
    assert not (pki.directory / "hub.crt").exists()


def test_backup_copies_every_file_with_its_mode(
    pki: ClusterPki, state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(pki.directory)
    target = tmp_path / "backup" / "pki"
    assert main(["keys", "backup", str(target), "--state-dir", str(state_dir)]) == 0
    captured = capsys.readouterr()
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    for name in FILES:
        source, copy = pki.directory / name, target / name
        assert copy.read_bytes() == source.read_bytes()
        assert stat.S_IMODE(copy.stat().st_mode) == stat.S_IMODE(source.stat().st_mode)
        assert f"wrote {copy}" in captured.out
    assert "private keys" in captured.err
    assert _snapshot(pki.directory) == before
    assert ClusterPki.open(target).fingerprint() == pki.fingerprint()  # a usable PKI


def test_backup_into_empty_directory(pki: ClusterPki, state_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir(mode=0o755)
    assert main(["keys", "backup", str(target), "--state-dir", str(state_dir)]) == 0
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_backup_refuses_a_non_empty_target(
    pki: ClusterPki, state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "used"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    assert main(["keys", "backup", str(target), "--state-dir", str(state_dir)]) == 1
    assert "is not an empty directory" in capsys.readouterr().err
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


def test_backup_without_pki_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "backup"
    argv = ["keys", "backup", str(target), "--state-dir", str(tmp_path / "state")]
    assert main(argv) == 1
    assert "no cluster PKI" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
