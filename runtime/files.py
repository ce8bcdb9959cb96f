"""Writing a file so that a reader never sees half of it: the one atomic-write helper.

A temp file in the same folder, then `os.replace`, which is atomic on POSIX: a reader (or a crash)
sees the old file or the new one, never a torn one. `durable=True` also fsyncs the file and the
folder, for what must survive power loss (the artifact store); reports only need atomicity.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
from pathlib import Path

# Under this much free space a run folder counts as full: a failed trial there may be the disk's
# doing (its log or outputs could not be written), not the script's.
NEARLY_FULL_BYTES = 1 << 20
# The exit status of a command stopped by a full filesystem (EX_TEMPFAIL: retry once space is back).
DISK_FULL_EXIT = 75


def atomic_write(path: Path | str, data: bytes | str, *, durable: bool = False) -> Path:
    """Replace `path` with `data` (str as UTF-8) in one step; returns the path."""
    path = Path(path)
    blob = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename is data too
        finally:
            os.close(dir_fd)
    return path


def disk_full(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) is a full filesystem: ENOSPC/EDQUOT from any write, or
    SQLite's SQLITE_FULL ("database or disk is full") from a journal write."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
                                               or "database or disk is full" in str(exc)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def nearly_full(path: Path | str) -> bool:
    """Whether the filesystem holding `path` has (almost) no space left for an unprivileged writer."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < NEARLY_FULL_BYTES


def no_space(what: str) -> OSError:
    """The error a run stops on when a full filesystem made a step fail in a way that hid ENOSPC."""
    return OSError(errno.ENOSPC, f"No space left on device ({what})")
