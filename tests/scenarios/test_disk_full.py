"""A full disk loses nothing: the run folder on a small tmpfs that the test fills mid-run.

The test mounts its own tmpfs (root only; skipped with the reason otherwise), starts a run on
it, fills the filesystem once the baseline is journaled, and expects a clean stop with a clear
reason (exit 75, no trial charged to the script, nothing half-written). Once the filler is gone
a resume finishes the run with every trial and iteration recorded exactly once.
"""

from __future__ import annotations

import csv
import errno
import os
import subprocess
import time
from pathlib import Path

import pytest

from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView

from bilevel_cli import BILEVEL

pytestmark = pytest.mark.docker

ARGS = ["--iterations", "3", "--budget", "1", "--levels", "1"]


@pytest.fixture
def small_fs(tmp_path: Path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount permission): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(mnt: Path) -> Path:
    """Write until the filesystem refuses: ENOSPC for every later write of the run."""
    filler = mnt / "filler"
    with filler.open("wb", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def _baseline_done(run: Path) -> bool:
    try:
        with Journal.open_readonly(run) as j:
            return any(t["seq"] == 0 and t["status"] == "ok" for t in j.trials())
    except Exception:
        return False


def test_a_full_run_folder_stops_cleanly_and_resumes_without_loss(small_fs):
    run = small_fs / "run"
    proc = subprocess.Popen([*BILEVEL, "run", *ARGS, "--run-dir", str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 300
        while not _baseline_done(run):
            assert proc.poll() is None and time.monotonic() < end, "the baseline never finished"
            time.sleep(0.2)
        filler = _fill(small_fs)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 75, out[-2000:] + err[-2000:]
    assert "filesystem is full" in err and "bilevel resume" in err
    assert "Traceback" not in err
    with Journal.open_readonly(run) as j:
        view = RunView.read(j)
        assert view.run.state in ("stopped", "running")   # "running" when SQLite itself had no room
        assert not [t for t in view.attempts if t.status in ("crash", "infra", "invalid", "oom", "timeout")]
        assert j.integrity_check() == "ok"

    filler.unlink()
    r = subprocess.run([*BILEVEL, "resume", str(run)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    with Journal.open_readonly(run) as j:
        view = RunView.read(j)
        assert view.run.state == "finished"
        assert [t.seq for t in view.finished] == [0, 1, 2, 3]           # each trial once
        assert all(t.status == "ok" for t in view.finished)
        assert sorted(r.iteration for r in view.iterations) == [1, 2, 3]  # each iteration once
    rows = list(csv.reader((run / "results.tsv").read_text().splitlines(), delimiter="\t"))
    assert len(rows) == 5 and (run / "report.md").is_file()
    assert not [p for p in run.rglob("*.tmp")]                         # no torn atomic writes left
    assert os.path.getsize(run / "journal.db") > 0


def test_report_on_a_full_filesystem_says_so_and_leaves_the_old_files_whole(small_fs):
    from hostile_text import hostile_journal

    run = small_fs / "run"
    hostile_journal(run, state_reason=False)
    r = subprocess.run([*BILEVEL, "report", str(run)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    before = (run / "report.md").read_bytes()
    filler = _fill(small_fs)
    r = subprocess.run([*BILEVEL, "report", str(run)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 75 and "filesystem is full" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (run / "report.md").read_bytes() == before                   # the old report is whole
    filler.unlink()
    r = subprocess.run([*BILEVEL, "report", str(run)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
