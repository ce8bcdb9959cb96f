"""Orchestrator work per iteration, trial and LLM excluded (DESIGN.md target: <= 50 ms).

Prints figures; passes or fails nothing. A real `Run` does everything it does in a run: the
journal (WAL, synchronous=FULL), artifacts (script and log), structlog lines, acceptance,
results.tsv, Level 1.5 every 3 iterations, and mechanism hooks in their sandboxes. Only the
trial container is swapped for a stub that returns at once with a seeded val_bpb. Baseline,
in the same run: the same iterations with no mechanism active, so the ratio shows what the
sandboxed mechanisms add. Each configuration runs --repeats times; figures are medians.

Run: .venv/bin/python bench/iteration_overhead.py [--iterations N] [--repeats R]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import tempfile
import time
from pathlib import Path

from bilevel.inner import tasks
from bilevel.outer import research
from bilevel.runtime import logs, policy
from bilevel.runtime.outputs.tsv import write_results
from bilevel.runtime.run import levels
from bilevel.runtime.run.budgets import Budgets
from bilevel.runtime.run.config import RunConfig
from bilevel.runtime.run.mechanisms import RunMechanisms
from bilevel.runtime.run.schedule import Run
from bilevel.runtime.sandbox import engine, executor

RNG = random.Random(0)


def stub_trial(client, pol, *, script: str, budget_s: float, work_dir: Path, trial_id: str,
               **_) -> executor.TrialResult:
    """What the executor returns, without a container: the trial itself is not orchestrator work."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "log.txt").write_text("step 00001 | loss 3.0\n---\nval_bpb: 2.7\n")
    return executor.TrialResult(
        trial_id=trial_id, status="ok", reason="", val_bpb=2.6 + RNG.random() * 0.3,
        training_seconds=budget_s, wall_seconds=0.0, peak_mem_mb=100.0, exit_code=0, log_tail="",
        script_sha=hashlib.sha256(script.encode()).hexdigest())


def one_run(folder: Path, iterations: int, mechanisms: dict[str, str]) -> list[float]:
    """Seconds of each iteration of one run with the given library mechanisms active."""
    r = Run(RunConfig(iterations=iterations, levels=["1", "1.5"]), folder, policy.load(None),
            observers=[lambda p: p.trial is None and write_results(folder, p.view)])
    journal, run_id, config = r.open()
    logs.configure(path=folder / "log.jsonl")
    log = logs.get_logger(run_id=run_id)
    client = engine.connect()
    mechs = RunMechanisms(client, r.policy, journal, run_id, 0)
    s = r.build(journal, run_id, log, client, tasks.load("tinygpt"), Budgets(r.cfg, config, r.policy, r.controls),
                mechs)
    try:
        for name, source in mechanisms.items():
            ok, why, _ = mechs.activate(name, "library", source, 0)
            assert ok, why
        s.baseline()
        times = []
        for it in range(iterations):
            t0 = time.perf_counter()
            if it and it % r.cfg.strategy_every == 0:
                levels.strategy_cycle(s.state, s.llm, journal, r.cfg.min_active)
            s.iterate()
            times.append(time.perf_counter() - t0)
        return times
    finally:
        mechs.close()
        journal.close()


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    executor.run_trial = stub_trial   # the one thing not measured: the container
    library = research.library_sources()
    figures: dict[str, list[tuple[float, float]]] = {"no mechanisms": [], f"{len(library)} mechanisms": []}
    with tempfile.TemporaryDirectory(prefix="bilevel-bench-") as tmp:
        for rep in range(args.repeats):   # alternate, so drift hits both alike
            for label, mechs in (("no mechanisms", {}), (f"{len(library)} mechanisms", library)):
                times = one_run(Path(tmp) / f"{rep}-{len(mechs)}", args.iterations, mechs)
                figures[label].append((statistics.median(times), pct(times, 99)))
    print(f"orchestrator work per iteration ({args.iterations} iterations, median of {args.repeats} runs):")
    p50 = {}
    for label, runs in figures.items():
        p50[label] = statistics.median(m for m, _ in runs)
        p99 = statistics.median(q for _, q in runs)
        print(f"  {label:>14}: p50 {p50[label] * 1000:7.2f} ms   p99 {p99 * 1000:7.2f} ms")
    base, full = p50.values()
    print(f"  ratio (mechanisms / none, p50): {full / base:.2f}   target: p50 <= 50 ms with mechanisms")


if __name__ == "__main__":
    main()
