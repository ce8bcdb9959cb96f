"""Artifacts are verified when read: `bilevel report` and `bilevel replay` on a run whose trial
log, trial script or mechanism source was tampered with or truncated after the run.

One offline run with all levels (so it has library mechanisms) is made once; each test damages
a copy. The report names the artifact and where it was used; replay refuses with exit code 3
before it starts anything; nothing damaged is ever used silently.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView
from bilevel.runtime.outputs.safe_text import for_markdown

from bilevel_cli import BILEVEL

pytestmark = pytest.mark.docker


def bilevel(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*BILEVEL, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("artifacts") / "run"
    r = bilevel("run", "--iterations", "2", "--budget", "1", "--strategy-every", "1", "--research-every", "1",
                "--run-dir", str(run))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return run


def _copy(run: Path, tmp_path: Path) -> tuple[Path, RunView, Journal]:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    with Journal.open_readonly(dst) as j:
        return dst, RunView.read(j), j


def _report(run: Path) -> tuple[str, str]:
    r = bilevel("report", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    return (run / "report.md").read_text(), r.stderr


def test_an_undamaged_run_reports_every_artifact_whole(finished_run, tmp_path):
    run, _view, _ = _copy(finished_run, tmp_path)
    md, err = _report(run)
    assert "## Artifacts" in md and "artifacts the journal names match their sha256" in md
    assert "warning" not in err


def test_a_tampered_log_is_named_in_the_report(finished_run, tmp_path):
    run, view, j = _copy(finished_run, tmp_path)
    trial = view.finished[1]
    j.artifacts.path(trial.log_ref).write_bytes(b"step 1 val_bpb 0.0001 (forged)\n")
    md, err = _report(run)
    where = f"trial {trial.seq}'s log"
    assert where in md and "tampered or truncated" in md and trial.log_ref[:16] in md
    assert where in err and trial.log_ref in err


def test_a_truncated_script_is_reported_and_replay_refuses_it(finished_run, tmp_path):
    run, view, j = _copy(finished_run, tmp_path)
    trial = view.finished[1]
    path = j.artifacts.path(trial.script_sha)
    path.write_bytes(path.read_bytes()[:100])
    md, _ = _report(run)
    assert f"trial {trial.seq}'s script" in md
    r = bilevel("replay", str(run), "trial", str(trial.seq))
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"trial {trial.seq}'s script" in r.stderr and "tampered or truncated" in r.stderr
    assert "replayed:" not in r.stdout                              # nothing ran on the damaged bytes


def test_a_tampered_mechanism_source_is_reported_and_replay_refuses_it(finished_run, tmp_path):
    run, view, j = _copy(finished_run, tmp_path)
    mech = view.mechanisms[0]
    j.artifacts.path(mech.source_ref).write_text("class Mechanism:\n    name = 'forged'\n")
    md, _ = _report(run)
    assert for_markdown(f"mechanism {mech.mech_id} ({mech.name})'s source") in md   # a cell: escaped
    r = bilevel("replay", str(run), "mechanism", str(mech.mech_id))
    assert r.returncode == 3, r.stdout + r.stderr
    assert "refused" in r.stderr and f"mechanism {mech.mech_id} ({mech.name})'s source" in r.stderr
    # The same module also fed a Level 2 session: that use is listed too.
    assert "Level 2 session" in md
