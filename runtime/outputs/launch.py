"""Run or resume one run in the foreground, as `bilevel run`, `resume` and `ablate` do: the live
display and results.tsv watch it, and the report is written when it ends."""

from __future__ import annotations

import sys
from pathlib import Path

from bilevel.inner.tasks.karpathy import CheckoutTask
from bilevel.runtime.files import DISK_FULL_EXIT, disk_full
from bilevel.runtime.outputs import report
from bilevel.runtime.outputs.display import LiveDisplay
from bilevel.runtime.outputs.tsv import write_results
from bilevel.runtime.policy import load
from bilevel.runtime.run.config import RunConfig
from bilevel.runtime.run.schedule import Progress, Run
from bilevel.runtime.sandbox import engine, preflight


def execute(cfg: RunConfig, run_dir: Path) -> int:
    """Run `cfg` in `run_dir` to its end (or resume it); returns the exit code."""
    task = cfg.load_task()  # again on resume: the checkout's files are hashed now and compared on open
    policy = load(cfg.policy)
    if isinstance(task, CheckoutTask):  # before any trial (and before the run folder is made)
        preflight.require(engine.connect(), policy, task)

    def tsv(progress: Progress) -> None:
        if progress.trial is None:  # after a step, not as a trial starts
            write_results(run_dir, progress.view)

    with LiveDisplay() as display:
        runner = Run(cfg, run_dir, policy, observers=(display.observe, tsv), task=task)
        runner.install_signals()
        print(f"bilevel run in {run_dir}: task {cfg.task}" + (f" ({cfg.repo})" if cfg.repo else "")
              + f", levels {','.join(cfg.levels)}, "
              f"{cfg.iterations} iterations of {cfg.budget:g} s"
              + (f", deadline in {cfg.hours:g} h" if cfg.hours else ""))
        if cfg.llm == "offline":
            print("OFFLINE: Level 1 uses the seeded offline proposer, Level 1.5 its heuristic, and Level 2 "
                  "draws from the reference mechanism library (loaded through the same sandbox).")
        code = runner.execute()
    try:
        paths = report.write_report(run_dir)
    except Exception as exc:
        if not disk_full(exc):
            raise
        print(f"report not written: the run folder's filesystem is full; `bilevel report {run_dir}` "
              "writes it once space is back", file=sys.stderr)
        return code or DISK_FULL_EXIT
    print(f"report: {paths['report.md']}")
    return code
