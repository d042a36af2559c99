"""Files fluxrig writes for keeps: atomic, durable, with an exact mode; and the check that a
private file (a key, a passport) is not open to group or others.

    write_atomic(state_dir / "state.flux", envelope)           # 0600 unless told otherwise
    with open(path, "rb") as fh:
        if problem := check_private(os.fstat(fh.fileno()), path, "passport"):
            raise PassportError(problem)                       # each caller raises its own type

`write_atomic` writes a temp file beside the target (created O_EXCL with the mode, which is then
set exactly whatever the umask), fsyncs it, renames it over the target and fsyncs the directory:
a crash leaves the old file or the new one, never a mix, and a failed write leaves no temp file.
It raises what the OS raises (`OSError`; `TypeError` for data that is not bytes): callers wrap it
in their own error.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace `path` by `data` atomically and durably, the file ending with exactly `mode`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # the umask may have narrowed it
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable; a no-op where directories cannot be fsynced."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_private(st: os.stat_result, path: Path, what: str) -> str | None:
    """What is wrong with a private file whose status is `st` (from `os.fstat` of the open file,
    so the check is of the file actually read), or None when only its owner may access it."""
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o077:
        return None
    return f"{what} {path} is accessible by group or others (mode {mode:o}): run `chmod 600 {path}`"
