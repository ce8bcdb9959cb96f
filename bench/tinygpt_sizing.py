"""Benchmark: sizing of the tinygpt task (prints figures; no pass/fail).

Prepares the corpus into a temporary folder, then runs train.py as a bare subprocess through
the trusted launcher (the same semantics as a sandboxed trial, without the container): once
with the shipped defaults, once with a hand-tuned config. Reported: each trial's wall time and
val_bpb, and the unigram baseline a trained model must beat. Wall-clock budgets make the figures
depend on how busy the CPUs are: `--runs N` alternates the two N times and reports medians.

    .venv/bin/python bench/tinygpt_sizing.py --budget 30
    .venv/bin/python bench/tinygpt_sizing.py --set LEARNING_RATE=3e-3 --no-tuned
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bilevel.inner import edits, tasks
from bilevel.inner.tasks.tinygpt import corpus
from bilevel.runtime.sandbox import images

# Found by hand at a 30 s budget on a 2-core CPU; every value lies inside task.toml's space.
# Why it wins: for a 30 s budget the defaults take too few steps (deep, big batch) at too low an LR.
TUNED = {
    "N_LAYER": "1",
    "N_EMBD": "96",
    "N_HEAD": "6",
    "MLP_RATIO": "3",
    "BATCH_SIZE": "8",
    "LEARNING_RATE": "7e-3",
    "COOLDOWN_FRAC": "0.8",
    "FINAL_LR_FRAC": "0.0",
}


def run(task: tasks.Task, sets: dict[str, str], budget: float, data: Path, work: Path) -> dict:
    """One bare trial; its wall time and the summary block it printed."""
    values = edits.validate(sets, task.space)
    values["TIME_BUDGET"] = budget
    script = work / "train.py"
    script.write_text(edits.apply(task.source(), values))
    launch = images.images_dir() / "trial" / "launch.py"
    cmd = [sys.executable, "-I", str(launch), "--lib", str(task.folder), "--data", str(data),
           str(script)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    wall = time.monotonic() - t0
    out = proc.stdout.splitlines()
    if proc.returncode != 0 or "---" not in out:
        tail = proc.stdout[-2000:] + proc.stderr[-2000:]
        sys.exit(f"trial failed (exit {proc.returncode}):\n{tail}")
    summary = dict(line.split(": ", 1) for line in out[out.index("---") + 1 :] if ": " in line)
    return {"wall": wall, **{k: float(v) for k, v in summary.items()}}


def show(label: str, r: dict) -> None:
    print(f"{label:8s} val_bpb {r['val_bpb']:.4f} | wall {r['wall']:5.1f} s | "
          f"training {r['training_seconds']:.1f} s | steps {r['num_steps']:.0f} | "
          f"params {r['num_params_M']:.1f}M | peak {r['peak_mem_mb']:.0f} MB | "
          f"load {os.getloadavg()[0]:.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=30, help="training seconds per trial")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="change a constant of the default run (repeatable)")
    ap.add_argument("--no-tuned", action="store_true", help="skip the hand-tuned run")
    ap.add_argument("--runs", type=int, default=1,
                    help="alternate default and tuned this many times")
    args = ap.parse_args()
    sets = dict(s.split("=", 1) for s in args.set)
    task = tasks.load("tinygpt")
    with tempfile.TemporaryDirectory() as tmp:
        data = corpus.prepare(Path(tmp) / "data")
        print(f"unigram  val_bpb {corpus.unigram_bpb(data):.4f}", flush=True)
        results: dict[str, list[dict]] = {"default": [], "tuned": []}
        for _ in range(args.runs):
            results["default"].append(run(task, sets, args.budget, data, Path(tmp)))
            show("default" if not sets else "set", results["default"][-1])
            if not args.no_tuned:
                results["tuned"].append(run(task, TUNED, args.budget, data, Path(tmp)))
                show("tuned", results["tuned"][-1])
        med = {k: statistics.median(r["val_bpb"] for r in v) for k, v in results.items() if v}
        walls = [r["wall"] for v in results.values() for r in v]
        print(f"median val_bpb: {', '.join(f'{k} {v:.4f}' for k, v in med.items())} | "
              f"max wall {max(walls):.1f} s | budget {args.budget:g} s")
        if "tuned" in med:
            print(f"tuned - default: {med['tuned'] - med['default']:+.4f} bpb "
                  f"({', '.join(f'{k}={v}' for k, v in TUNED.items())})")


if __name__ == "__main__":
    main()
