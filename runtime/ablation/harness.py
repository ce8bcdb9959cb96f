"""`bilevel ablate`: the paper's four groups under one protocol, as ordinary runs.

Why: the published 5× gain of Level 2 came from batches that each restarted with a fresh runner,
an empty history and a reset best, and its generated mechanisms were never called. Here every
group × seed is one uninterrupted `Run` (best never reset, trace never truncated), in its own
folder under the ablation folder, so each is resumable (`bilevel resume`), reportable and
replayable. The groups differ only in their levels: same task, script, LLM, seeds, iterations,
trial budget and acceptance rule.

The baseline and its noise are measured once, before any group runs: per seed, one ordinary run
with `--iterations 0` repeats the baseline trial (`runs/baseline-s<seed>/`). Per seed because
the training seed alone shifts val_bpb. Each group run at that seed gets the mean of those trials
as its baseline and the pooled within-seed standard deviation as its noise floor (RunConfig's
`baseline_val_bpb` and `noise`), so no group has its own, noisier baseline. Both go into
`ablation.json`.

Re-running the same command skips finished runs and resumes unfinished ones; a changed protocol
setting is refused (use another `--out`). `--max-tokens` and `--max-usd` are for the whole
ablation and are split evenly across the group runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
from pathlib import Path

from bilevel.inner import tasks
from bilevel.runtime.ablation import report
from bilevel.runtime.ablation.protocol import (
    AblationSettings,
    baseline_folder,
    default_out,
    open_manifest,
    run_folder,
    write_manifest,
)
from bilevel.runtime.ablation.stats import pooled_sd
from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView
from bilevel.runtime.run.config import RunConfig
from bilevel.runtime.vocabulary import RunState

__all__ = ["ablate", "default_out", "settings_from_args"]


# ---- running ------------------------------------------------------------------------------


def _finished_as_configured(run_dir: Path, cfg: RunConfig) -> bool:
    """A run that already finished with exactly this config: nothing to do, not even a report."""
    if not (run_dir / "journal.db").exists():
        return False
    with Journal.open_readonly(run_dir) as j:
        run = RunView.read(j).run
    want = json.loads(json.dumps(cfg.to_dict()))
    return run is not None and run.state == RunState.FINISHED and run.config == want


def run_one(cfg: RunConfig, run_dir: Path) -> str:
    """Start, resume or skip one ordinary run; returns its journal state afterwards."""
    from bilevel.runtime.outputs.launch import execute

    cfg.validate()
    cfg.load_task()  # the checkout's file hashes are part of the config
    if _finished_as_configured(run_dir, cfg):
        print(f"ablate: {run_dir} finished already; skipped")
        return "finished"
    execute(cfg, run_dir)
    with Journal.open_readonly(run_dir) as j:
        run = RunView.read(j).run
    return run.state if run else RunState.FAILED


def baseline_values(run_dir: Path) -> list[float]:
    with Journal.open_readonly(run_dir) as j:
        return [t.val_bpb for t in RunView.read(j).baselines]


def measure_baselines(out: Path, settings: AblationSettings, manifest: dict) -> str:
    """The per-seed baseline runs and the shared noise floor, into the manifest. Returns a run state."""
    samples = []
    for seed in settings.seeds:
        rel = baseline_folder(seed)
        state = run_one(settings.baseline_config(seed), out / rel)
        if state != "finished":
            return state
        values = baseline_values(out / rel)
        if not values:
            raise ValueError(f"no baseline trial at seed {seed} ended ok; see {out / rel / 'report.md'}")
        samples.append(values)
        manifest["baselines"][str(seed)] = {"run": rel, "values": values, "mean": statistics.fmean(values)}
    noise = pooled_sd(samples)
    if noise is None:
        raise ValueError("too few ok baseline trials to measure the noise floor (no seed has two); "
                         "see the baseline runs' reports")
    manifest["noise_floor"] = noise
    manifest["noise_floor_method"] = (f"pooled within-seed standard deviation of {sum(map(len, samples))} "
                                      f"baseline trials ({settings.noise_repeats} per seed)")
    write_manifest(out, manifest)
    return "finished"


def ablate(settings: AblationSettings, out: Path) -> int:
    """Run or resume the whole ablation, then write its report; returns the exit code."""
    settings.validate()
    out.mkdir(parents=True, exist_ok=True)
    script_sha = hashlib.sha256(tasks.resolve(settings.task, settings.repo, settings.cache)
                                .source().encode()).hexdigest()
    manifest = open_manifest(out, settings, script_sha)
    manifest["command"] = settings.command(out)
    manifest["per_run_max_tokens"], manifest["per_run_max_usd"] = settings.per_run_budget()
    write_manifest(out, manifest)
    print(f"ablate: {out}: groups {','.join(settings.groups)} × seeds {','.join(map(str, settings.seeds))}, "
          f"{settings.iterations} iterations of {settings.budget:g} s, LLM {settings.llm}")
    state = measure_baselines(out, settings, manifest)
    failed = [] if state in ("finished", "stopped") else ["the baseline runs"]
    if state == "finished":
        noise = manifest["noise_floor"]
        print(f"ablate: noise floor {noise:.6f} bpb; baselines "
              + ", ".join(f"seed {s} {b['mean']:.6f}" for s, b in manifest["baselines"].items()))
        for seed, group in ((s, g) for s in settings.seeds for g in settings.groups):
            base = manifest["baselines"][str(seed)]["mean"]
            state = run_one(settings.group_config(group, seed, base, noise), out / run_folder(group, seed))
            if state == "stopped":
                break
            if state != "finished":
                failed.append(f"{group}-s{seed}")
    paths = report.write_report(out)
    print(f"ablate: report {paths['ablation.md']}, plot {paths['ablation.png']}")
    if state == "stopped":
        print(f"ablate: stopped; run the same command again to resume:\n  {manifest['command']}")
        return 0
    if failed:
        print(f"ablate: {', '.join(failed)} did not finish; see their reports")
        return 1
    return 0


# ---- CLI ----------------------------------------------------------------------------------


def _list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def settings_from_args(args: argparse.Namespace) -> AblationSettings:
    task = tasks.resolve(args.task, args.repo, args.cache)
    budget = task.defaults_budget() if args.budget is None else args.budget
    task.check_budget(budget)
    where = task.locator()
    try:
        seeds = [int(s) for s in _list(args.seeds)]
    except ValueError:
        raise ValueError(f"--seeds {args.seeds!r}: expected integers separated by commas") from None
    s = AblationSettings(task=args.task, llm=args.llm, llm_base_url=args.llm_base_url, seeds=seeds,
                         iterations=args.iterations, budget=budget,
                         groups=[g.upper() for g in _list(args.groups)], noise_repeats=args.noise_repeats,
                         strategy_every=args.strategy_every, research_every=args.research_every,
                         max_tokens=args.max_tokens, max_usd=args.max_usd, policy=args.policy,
                         repo=where.get("repo"), cache=where.get("cache"))
    s.validate()
    return s
