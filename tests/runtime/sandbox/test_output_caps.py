"""The output folder's caps on their own: bytes, entries, depth, links and special files.

Each test builds the folder a hostile trial would leave and checks the reason names the cap;
none of them needs Docker (tests/sandbox/test_trial_hostile.py runs the same attacks for real).
"""

from __future__ import annotations

import errno
import os
import socket
import stat

import pytest

from bilevel.runtime.sandbox import output_caps
from bilevel.runtime.sandbox.output_caps import OutputCaps, over_cap

CAPS = OutputCaps(bytes=2**20, entries=50, depth=3)


@pytest.fixture
def out(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def test_within_every_cap_is_none(out):
    (out / "a").mkdir()
    (out / "a" / "b.txt").write_bytes(b"x" * 1000)
    assert over_cap(out, CAPS) is None
    assert over_cap(out / "missing", CAPS) is None


def test_bytes_cap_counts_sparse_files_at_their_length(out):
    with open(out / "sparse", "wb") as f:
        f.truncate(2 * 2**20)          # no block written, 2 MiB claimed
    assert over_cap(out, CAPS) == "output folder over its cap of 1 MiB"


def test_entries_cap_counts_files_and_directories(out):
    for i in range(30):
        (out / f"d{i}").mkdir()
        (out / f"d{i}" / "f").touch()
    assert "cap of 50 entries" in over_cap(out, CAPS)


def test_entries_cap_bounds_the_walk(out, monkeypatch):
    for i in range(2000):
        (out / f"f{i}").touch()
    seen = []

    class Counting:
        def __init__(self, it):
            self.it = it

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.it.close()

        def __iter__(self):
            for e in self.it:
                seen.append(e.name)
                yield e

    real_scandir = os.scandir
    monkeypatch.setattr(output_caps.os, "scandir", lambda fd: Counting(real_scandir(fd)))
    assert "entries" in over_cap(out, CAPS)
    assert len(seen) == CAPS.entries + 1       # the walk stopped at the cap, not after 2000


def test_depth_cap(out):
    (out / "a" / "b" / "c").mkdir(parents=True)
    assert over_cap(out, CAPS) is None
    (out / "a" / "b" / "c" / "d").mkdir()
    assert over_cap(out, CAPS) == "output folder nested deeper than its cap of 3 levels"


def test_a_link_is_refused_and_never_followed(out, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    with open(outside / "huge", "wb") as f:
        f.truncate(2**30)             # would pass the bytes cap if the link were followed
    (out / "sub").mkdir()
    (out / "sub" / "elsewhere").symlink_to(outside)
    assert over_cap(out, CAPS) == "output folder holds a symbolic link ('sub/elsewhere'); links are refused"
    (out / "sub" / "elsewhere").unlink()
    (out / "dangling").symlink_to(tmp_path / "nothing")
    assert "symbolic link ('dangling')" in over_cap(out, CAPS)


def test_a_directory_swapped_for_a_link_is_not_followed(out, tmp_path):
    # The race: listed as a directory, a link by the time it is opened. O_NOFOLLOW refuses it.
    (tmp_path / "outside").mkdir()
    (out / "d").symlink_to(tmp_path / "outside")
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as info:
            output_caps._open_dir(("d",), fd)
        assert info.value.errno in (errno.ELOOP, errno.ENOTDIR)
    finally:
        os.close(fd)


def test_a_fifo_is_refused_without_being_opened(out):
    os.mkfifo(out / "pipe")
    # Opening it would block this test until its timeout; lstat does not.
    assert over_cap(out, CAPS) == "output folder holds a FIFO ('pipe'); special files are refused"


def test_a_socket_is_refused(out, tmp_path):
    s = socket.socket(socket.AF_UNIX)
    os.chdir(out)                      # a short relative path: AF_UNIX paths are short
    try:
        s.bind("sock")
        assert over_cap(out, CAPS) == "output folder holds a socket ('sock'); special files are refused"
    finally:
        s.close()
        os.chdir(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device needs root")
def test_a_device_is_refused(out):
    os.mknod(out / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    assert "a character device ('null')" in over_cap(out, CAPS)
