"""`bilevel ablate` end to end against the real daemon: an offline ablation with a tiny budget
(groups A and C, one seed, 2 iterations of 1 s, 2 baseline trials: 6 trials, about 1.5 min)."""

from __future__ import annotations

import json
import subprocess

import pytest

from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView

from bilevel_cli import BILEVEL

pytestmark = pytest.mark.docker
ARGS = ["ablate", "--groups", "A,C", "--seeds", "1", "--iterations", "2", "--budget", "1",
        "--strategy-every", "1", "--research-every", "1", "--noise-repeats", "2"]


def bilevel(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*BILEVEL, *args], capture_output=True, text=True, timeout=900)


def read(run_dir):
    with Journal.open_readonly(run_dir) as j:
        return j.run()["config"], j.trials(), RunView.read(j).status()


def test_offline_ablation_end_to_end_and_resume(tmp_path):
    out = tmp_path / "abl"
    r = bilevel(*ARGS, "--out", str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    manifest = json.loads((out / "ablation.json").read_text())

    # The noise floor: one ordinary run of repeated baseline trials, no iteration.
    _, base_trials, base_summary = read(out / "runs" / "baseline-s1")
    assert [t["kind"] for t in base_trials] == ["baseline", "baseline"] and base_summary["state"] == "finished"
    values = [t["val_bpb"] for t in base_trials]
    assert manifest["baselines"]["1"]["values"] == values
    assert manifest["noise_floor"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)

    # The groups differ only in their levels, and both got the shared baseline and noise floor.
    cfg_a, trials_a, sum_a = read(out / "runs" / "A-s1")
    cfg_c, trials_c, sum_c = read(out / "runs" / "C-s1")
    assert {k for k in cfg_a.keys() | cfg_c.keys() if cfg_a.get(k) != cfg_c.get(k)} == {"levels"}
    assert cfg_a["levels"] == ["1"] and cfg_c["levels"] == ["1", "1.5", "2"]
    assert cfg_c["baseline_val_bpb"] == manifest["baselines"]["1"]["mean"]
    assert cfg_c["noise"] == manifest["noise_floor"]
    for trials, summary in ((trials_a, sum_a), (trials_c, sum_c)):
        assert summary["state"] == "finished"
        assert [t["kind"] for t in trials] == ["proposal", "proposal"]      # no baseline trial of their own

    # Level 2's mechanisms were activated and called.
    assert sum_c["mechanisms"] and all(sum(m["calls"].values()) > 0 for m in sum_c["mechanisms"])
    assert sum_a["mechanisms"] == []

    md = (out / "ablation.md").read_text()
    assert "| C vs A |" in md and "OFFLINE" in md and "Noise floor" in md
    assert manifest["command"] in md and "never called" not in md
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "runs" / "C-s1" / "report.md").exists()

    # The same command again: every run is skipped, nothing new is run.
    before = {d.name: len(read(d)[1]) for d in (out / "runs").iterdir()}
    again = bilevel(*ARGS, "--out", str(out))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("skipped") == 3
    assert {d.name: len(read(d)[1]) for d in (out / "runs").iterdir()} == before

    # A changed protocol setting is refused by name, before anything runs.
    changed = bilevel(*ARGS[:-2], "--noise-repeats", "3", "--out", str(out))
    assert changed.returncode == 2 and "noise_repeats" in changed.stderr
