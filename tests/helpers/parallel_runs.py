"""Shared by the parallel-slot scenario tests: a 1-CPU policy, the run command, the journal's
timestamps, and which attempts overlapped in time."""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path

import pytest

from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView

from bilevel_cli import BILEVEL


def one_cpu_policy_file(folder: Path) -> Path:
    p = folder / "one-cpu.toml"
    p.write_text("[trial]\ncpus = 1.0\nmemory_mb = 2048\ngrace_s = 120\n")
    return p


def run_args(run: Path, policy: Path, iterations: int, *extra: str) -> list[str]:
    return [*BILEVEL, "run", "--iterations", str(iterations), "--budget", "1", "--levels", "1",
            "--parallel", "2", "--policy", str(policy), "--run-dir", str(run), *extra]


def stamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def view_of(run: Path) -> RunView:
    with Journal.open_readonly(run) as j:
        return RunView.read(j)


def overlapping(view: RunView) -> list[tuple]:
    """Pairs of finished attempts whose journal start-to-end spans overlap."""
    done = [t for t in view.attempts if t.ended_at]
    return [(a, b) for a, b in itertools.combinations(done, 2)
            if stamp(a.started_at) < stamp(b.ended_at) and stamp(b.started_at) < stamp(a.ended_at)]


@pytest.fixture(name="one_cpu_policy")
def one_cpu_policy_fixture(tmp_path: Path) -> Path:
    """A policy file giving each trial one CPU (a slot per core on this 2-core machine)."""
    return one_cpu_policy_file(tmp_path)
