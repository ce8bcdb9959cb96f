"""What a trial leaves in its output folder, measured without trusting any of it.

Invariant 8: what comes out of a sandbox is data. The output folder is the one place a trial
writes on the host's disk, so everything there that costs the host is capped: bytes, entries
(each file or directory costs an inode and directory space, and a walk of millions of entries
would stall the supervisor's poll), and nesting depth. Symbolic links and special files (FIFO,
socket, device) are refused outright: a host reader could be led out of the folder by a link,
or block forever on a FIFO.

How it stays safe while walking a folder the sandbox is still changing:
- every directory is opened with O_NOFOLLOW | O_DIRECTORY relative to its parent's descriptor,
  so a directory swapped for a link between two looks is refused (ELOOP/ENOTDIR), never followed;
- entries are examined with lstat semantics (`DirEntry.stat(follow_symlinks=False)`); nothing
  found here is ever opened except directories, as directories;
- the walk stops at the first cap it passes: it visits at most `entries + 1` entries, whatever
  the sandbox made, so one scan is bounded by the policy.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SPECIAL = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
            stat.S_IFBLK: "a block device"}


@dataclass(frozen=True)
class OutputCaps:
    """The policy's caps on a trial's output folder."""

    bytes: int      # trial.output_mb, in bytes
    entries: int    # trial.output_entries: files and directories, counted together
    depth: int      # trial.output_depth: directory levels below the folder itself

    @classmethod
    def from_policy(cls, limits: Mapping[str, Any]) -> OutputCaps:
        return cls(int(limits["output_mb"]) * 2**20, int(limits["output_entries"]), int(limits["output_depth"]))


def _size(st: os.stat_result) -> int:
    # What the file costs the disk or claims to: a sparse file counts at its length.
    return max(st.st_size, st.st_blocks * 512)


def _open_dir(parts: tuple[str, ...], root_fd: int) -> int:
    """Open root/parts... one level at a time, never following a link (O_NOFOLLOW each step)."""
    fd = os.dup(root_fd)
    try:
        for name in parts:
            nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def over_cap(root: Path, caps: OutputCaps) -> str | None:
    """None while the folder keeps within every cap, else a reason that names the cap passed."""
    try:
        root_fd = os.open(root, _DIR_FLAGS)
    except FileNotFoundError:
        return None
    total = entries = 0
    pending: list[tuple[str, ...]] = [()]
    try:
        while pending:
            parts = pending.pop()
            shown = "/".join(parts)
            try:
                fd = _open_dir(parts, root_fd)
            except FileNotFoundError:
                continue  # removed by the sandbox since we listed it
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    return f"output folder: {shown!r} became a symbolic link or a file; links are refused"
                return f"output folder: {shown!r} cannot be read ({exc.strerror}); refused"
            try:
                with os.scandir(fd) as it:
                    for entry in it:
                        entries += 1
                        if entries > caps.entries:
                            return f"output folder over its cap of {caps.entries} entries (files and directories)"
                        name = f"{shown}/{entry.name}" if shown else entry.name
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        kind = stat.S_IFMT(st.st_mode)
                        if kind == stat.S_IFLNK:
                            return f"output folder holds a symbolic link ({name[:200]!r}); links are refused"
                        if kind in _SPECIAL:
                            return (f"output folder holds {_SPECIAL[kind]} ({name[:200]!r}); "
                                    "special files are refused")
                        total += _size(st)
                        if total > caps.bytes:
                            return f"output folder over its cap of {caps.bytes // 2**20} MiB"
                        if kind == stat.S_IFDIR:
                            if len(parts) + 1 > caps.depth:
                                return f"output folder nested deeper than its cap of {caps.depth} levels"
                            pending.append((*parts, entry.name))
            finally:
                os.close(fd)
    finally:
        os.close(root_fd)
    return None
