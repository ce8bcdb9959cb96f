"""Benchmark: per-trial sandbox overhead and start-up latency (prints figures; no pass/fail).

The same train.py with the same budget runs as a bare subprocess and as a sandboxed trial,
alternating, several times each, in one run on one machine. Reported: the median wall time
of each, their ratio (target <= 1.03 at a 30 s budget), and the start-up latency: from
container create (or Popen) to the first line the trial prints.

    .venv/bin/python bench/trial_overhead.py --budget 30 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bilevel.inner import tasks
from bilevel.runtime import policy
from bilevel.runtime.outputs.cli import trial_script
from bilevel.runtime.sandbox import engine, executor, images


def bare(script: str, task: tasks.Task, data: Path, work: Path) -> tuple[float, float, str]:
    path = work / "train.py"
    path.write_text(script)
    launch = images.images_dir() / "trial" / "launch.py"
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-I", str(launch), "--lib", str(task.folder), "--data", str(data), str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=work,
    )
    first = None
    lines = []
    for line in proc.stdout:
        first = first or time.monotonic() - t0
        lines.append(line.decode())
    proc.wait()
    return time.monotonic() - t0, first or 0.0, "".join(lines[-6:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=30)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    task, pol, client = tasks.load(), policy.load(), engine.connect()
    data = task.data_dir()
    script = trial_script(task, {}, args.budget)
    walls = {"bare": [], "sandbox": []}
    starts = {"bare": [], "sandbox": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            w, first, tail = bare(script, task, data, Path(tmp))
            walls["bare"].append(w)
            starts["bare"].append(first)
            r = executor.run_trial(
                client, pol, script=script, budget_s=args.budget, work_dir=Path(tmp) / f"s{i}",
                data_dir=data, harness_lib=task.harness_lib,
            )
            assert r.status == "ok", r.log_tail
            walls["sandbox"].append(r.wall_seconds)
            starts["sandbox"].append(r.startup_seconds)
            print(f"run {i}: bare {w:.2f} s, sandbox {r.wall_seconds:.2f} s "
                  f"(val_bpb {r.val_bpb:.4f})", flush=True)
    mb, ms = statistics.median(walls["bare"]), statistics.median(walls["sandbox"])
    print(f"budget {args.budget:.0f} s, {args.runs} runs each")
    print(f"median wall: bare {mb:.2f} s, sandbox {ms:.2f} s, ratio {ms / mb:.3f} (target <= 1.03)")
    print(f"median start-up to first line: bare {statistics.median(starts['bare']):.3f} s, "
          f"sandbox {statistics.median(starts['sandbox']):.3f} s (create -> first line)")


if __name__ == "__main__":
    main()
