"""Parallel slots, measured through the real CLI, daemon and journal (DESIGN.md targets).

Prints figures; passes or fails nothing. Every figure is a ratio or a fraction against a
baseline measured in the same invocation, and a median over --repeats runs.

- `throughput`: trials per hour with `--parallel 2` against `--parallel 1`, 1 CPU per trial,
  the same iterations and budget (target >= 1.8). Trials/hour counts finished proposal trials
  over the time from the first proposal's start to the last one's end.
- `idle`: slot idle fraction at `--parallel 1` and `--parallel 2` with the scripted LLM
  (tests/helpers/fake_llm.py, on 127.0.0.1) answering each call after --llm-delay s (target
  <= 3 % of the run after the first proposal): per slot, the time it held no trial between the
  first proposal's start and the last trial's end, summed over slots, over slots x that span;
  also from each slot's own first trial (the other slots' waits for the first drafts left out).
- `ray`: per-trial overhead of `--executor ray` over the local executor, the same trials at
  `--parallel 1` (target <= 1 s): the difference of the median trial wall time (journal start
  to end). The local Ray instance's start is reported apart.

Run (a quiet machine):  .venv/bin/python bench/parallel.py all --iterations 8 --budget 30 --repeats 3
Tiny check:             .venv/bin/python bench/parallel.py all --iterations 2 --budget 1 --repeats 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView

ROOT = Path(__file__).resolve().parents[1]
BILEVEL = [str(Path(sys.executable).with_name("bilevel"))]


def _t(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def _policy(folder: Path) -> Path:
    p = folder / "one-cpu.toml"
    p.write_text("[trial]\ncpus = 1.0\nmemory_mb = 2048\n")
    return p


def _run(folder: Path, name: str, args: argparse.Namespace, *extra: str, env: dict | None = None) -> RunView:
    run = folder / name
    cmd = [*BILEVEL, "run", "--iterations", str(args.iterations), "--budget", str(args.budget), "--levels", "1",
           "--policy", str(_policy(folder)), "--run-dir", str(run), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env or os.environ.copy())
    if r.returncode != 0:
        raise SystemExit(f"{name}: bilevel run failed:\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}")
    with Journal.open_readonly(run) as j:
        return RunView.read(j)


def _proposals(view: RunView) -> list:
    return [t for t in view.finished if t.kind == "proposal"]


def trials_per_hour(view: RunView) -> float:
    ts = _proposals(view)
    span = max(_t(t.ended_at) for t in ts) - min(_t(t.started_at) for t in ts)
    return len(ts) / span * 3600


def idle_fraction(view: RunView, from_each_slot: bool = False) -> float:
    """Idle over busy+idle, per slot from the first proposal's start (or, `from_each_slot`, from
    that slot's own first proposal: its wait for the first draft left out) to the last trial's end."""
    ts = _proposals(view)
    end = max(_t(t.ended_at) for t in ts)
    starts: dict[int, float] = {}
    for t in ts:
        slot = view.slot_of(t.trial_id)["slot"]
        starts[slot] = min(starts.get(slot, float("inf")), _t(t.started_at))
    first = min(starts.values())
    busy = span = 0.0
    for slot, own in starts.items():
        start = own if from_each_slot else first
        span += end - start
        for t in view.attempts:
            if t.ended_at and (view.slot_of(t.trial_id) or {}).get("slot") == slot:
                busy += max(0.0, min(_t(t.ended_at), end) - max(_t(t.started_at), start))
    return 1 - busy / span


def median_trial_wall(view: RunView) -> float:
    return statistics.median(_t(t.ended_at) - _t(t.started_at) for t in _proposals(view))


def bench_throughput(folder: Path, args: argparse.Namespace) -> None:
    ratios = []
    for i in range(args.repeats):
        one = trials_per_hour(_run(folder, f"p1-{i}", args, "--parallel", "1", "--seed", str(i)))
        two = trials_per_hour(_run(folder, f"p2-{i}", args, "--parallel", "2", "--seed", str(i)))
        ratios.append(two / one)
        print(f"throughput run {i}: parallel 1 {one:.1f} trials/h, parallel 2 {two:.1f} trials/h, "
              f"ratio {two / one:.2f}")
    print(f"throughput: median ratio parallel 2 / parallel 1 = {statistics.median(ratios):.2f} [target >= 1.8]")


def bench_idle(folder: Path, args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "helpers"))
    from fake_llm import FakeLLM, Text

    for slots in (1, 2):
        _idle(folder, args, slots, FakeLLM, Text)


def _idle(folder: Path, args: argparse.Namespace, slots: int, FakeLLM, Text) -> None:
    fractions = []
    for i in range(args.repeats):
        with FakeLLM() as fake:
            count = itertools.count()

            def responder(msgs: list[dict], count=count) -> Text:
                lr = round(0.0005 * (1 + next(count)), 5)
                return Text(json.dumps({"changes": {"LEARNING_RATE": lr}, "hypothesis": f"lr {lr}"}),
                            delay_s=args.llm_delay)

            fake.responder = responder
            env = {**os.environ, "BILEVEL_LLM_BASE_URL": fake.base_url, "BILEVEL_LLM_API_KEY": "sk-bench"}
            view = _run(folder, f"idle{slots}-{i}", args, "--parallel", str(slots), "--llm", "fake-model",
                        "--seed", str(i), env=env)
        fractions.append((idle_fraction(view), idle_fraction(view, from_each_slot=True)))
        print(f"idle run {i}, parallel {slots}: slot idle fraction {fractions[-1][0]:.3%} "
              f"({fractions[-1][1]:.3%} from each slot's first trial) with the LLM answering in {args.llm_delay:g} s")
    print(f"idle, parallel {slots}: median slot idle fraction = {statistics.median(f[0] for f in fractions):.3%} "
          f"[target <= 3 %]; from each slot's first trial {statistics.median(f[1] for f in fractions):.3%}")


def bench_ray(folder: Path, args: argparse.Namespace) -> None:
    over = []
    for i in range(args.repeats):
        local = median_trial_wall(_run(folder, f"local-{i}", args, "--parallel", "1", "--seed", str(i)))
        t0 = time.monotonic()
        view = _run(folder, f"ray-{i}", args, "--parallel", "1", "--executor", "ray", "--seed", str(i))
        whole = time.monotonic() - t0
        ray = median_trial_wall(view)
        over.append(ray - local)
        print(f"ray run {i}: median trial wall local {local:.2f} s, ray {ray:.2f} s, overhead {ray - local:+.2f} s "
              f"(the whole ray run took {whole:.1f} s, Ray's start included)")
    print(f"ray: median per-trial overhead = {statistics.median(over):+.2f} s [target <= 1 s]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["throughput", "idle", "ray", "all"])
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--budget", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--llm-delay", type=float, default=5.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bilevel-bench-") as tmp:
        folder = Path(tmp)
        for name, fn in (("throughput", bench_throughput), ("idle", bench_idle), ("ray", bench_ray)):
            if args.what in (name, "all"):
                fn(folder, args)


if __name__ == "__main__":
    main()
