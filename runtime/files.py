"""Writing a file so that a reader never sees half of it: the one atomic-write helper.

A temp file in the same folder, then `os.replace`, which is atomic on POSIX: a reader (or a crash)
sees the old file or the new one, never a torn one. `durable=True` also fsyncs the file and the
folder, for what must survive power loss (the artifact store); reports only need atomicity.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
