"""The one atomic-write helper: a reader sees the old file or the new one, never half, never a temp."""

from __future__ import annotations

import pytest

from bilevel.runtime.files import atomic_write


def test_replaces_the_file_whole_and_leaves_no_temp(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("old")
    assert atomic_write(path, "new text") == path and path.read_text() == "new text"
    atomic_write(path, b"\x89PNG", durable=True)
    assert path.read_bytes() == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.tsv"
    path.write_text("old")

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr("bilevel.runtime.files.os.replace", broken)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.tsv"]


def test_disk_full_recognises_enospc_sqlite_full_and_a_wrapped_cause():
    import errno
    import sqlite3

    from bilevel.runtime.files import disk_full, no_space

    assert disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert disk_full(sqlite3.OperationalError("database or disk is full"))
    assert disk_full(no_space("a trial's folder"))
    try:
        try:
            raise OSError(errno.ENOSPC, "full")
        except OSError as inner:
            raise RuntimeError("engine failed") from inner
    except RuntimeError as outer:
        assert disk_full(outer)
    assert not disk_full(OSError(errno.EACCES, "denied")) and not disk_full(ValueError("x")) and not disk_full(None)
