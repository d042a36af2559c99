"""Files written for keeps: real files in a temp directory, real modes, a real failing write."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rack.files import check_private, write_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_creates_a_private_file_by_default(tmp_path: Path) -> None:
    path = tmp_path / "state.flux"
    write_atomic(path, b"passport")
    assert path.read_bytes() == b"passport"
    assert _mode(path) == 0o600
    assert os.listdir(tmp_path) == ["state.flux"]  # no temp file left behind


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o640, 0o400])
def test_write_sets_exactly_the_mode_whatever_the_umask(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "file"
    old_umask = os.umask(0o077)  # would narrow 0644 to 0600 if the mode were not set exactly
    try:
        write_atomic(path, b"data", mode=mode)
    finally:
        os.umask(old_umask)
    assert _mode(path) == mode


def test_write_replaces_an_existing_file_and_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "hub.crt"
    path.write_bytes(b"old, and longer than the new content")
    path.chmod(0o666)
    write_atomic(path, b"new", mode=0o644)
    assert path.read_bytes() == b"new"
    assert _mode(path) == 0o644
    assert os.listdir(tmp_path) == ["hub.crt"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "state.flux"
    write_atomic(path, b"old")
    with pytest.raises(TypeError):
        write_atomic(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert _mode(path) == 0o600
    assert os.listdir(tmp_path) == ["state.flux"]


def test_failed_rename_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    (target / "child").mkdir(parents=True)  # a non-empty directory cannot be replaced by a file
    with pytest.raises(OSError, match="taken"):
        write_atomic(target, b"data")
    assert os.listdir(tmp_path) == ["taken"]
    assert os.listdir(target) == ["child"]


def test_write_into_a_missing_directory_raises_the_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "file", b"data")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_check_private_accepts_an_owner_only_file(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "ca.key"
    write_atomic(path, b"key", mode=mode)
    assert check_private(path.stat(), path, "private key") is None


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o601, 0o610])
def test_check_private_names_the_file_the_mode_and_the_fix(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "ca.key"
    write_atomic(path, b"key", mode=mode)
    assert check_private(path.stat(), path, "private key") == (
        f"private key {path} is accessible by group or others (mode {mode:o}): "
        f"run `chmod 600 {path}`"
    )
