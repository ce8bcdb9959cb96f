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
import shlex
import statistics
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bilevel.runtime.journal.store import Journal
from bilevel.runtime.run.schedule import RunConfig

GROUPS: dict[str, list[str]] = {"A": ["1"], "B": ["1", "1.5"], "C": ["1", "1.5", "2"], "D": ["1", "2"]}
MANIFEST = "ablation.json"
MANIFEST_VERSION = 1
# Settings that define the protocol: a folder holds one ablation; changing any of these needs another --out.
# Groups may be added later (new runs, same baseline) and the LLM budgets may grow, as for `bilevel resume`.
PROTOCOL = ("task", "llm", "llm_base_url", "seeds", "iterations", "budget", "noise_repeats",
            "strategy_every", "research_every", "policy", "repo", "cache")
CHECKOUT = ("repo", "cache")  # part of the protocol only when set (`--task karpathy`)


@dataclass
class AblationSettings:
    task: str = "tinygpt"
    llm: str = "offline"
    llm_base_url: str | None = None
    seeds: list[int] = field(default_factory=lambda: [1, 2])
    iterations: int = 8
    budget: float = 30.0
    groups: list[str] = field(default_factory=lambda: list(GROUPS))
    noise_repeats: int = 3
    strategy_every: int = 3
    research_every: int = 2
    max_tokens: int | None = None       # whole ablation
    max_usd: float | None = None        # whole ablation
    policy: str | None = None
    repo: str | None = None             # --task karpathy: the checkout and its data cache, resolved
    cache: str | None = None

    def validate(self) -> None:
        bad = [g for g in self.groups if g not in GROUPS]
        if bad or not self.groups:
            raise ValueError(f"--groups: {','.join(self.groups)} must be among {','.join(GROUPS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("--seeds: give at least one seed, each once")
        if self.noise_repeats < 2:
            raise ValueError("--noise-repeats must be at least 2 (one trial has no spread)")
        if self.iterations < 1:
            raise ValueError("--iterations must be at least 1")
        for name in ("max_tokens", "max_usd"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive")

    def protocol(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in PROTOCOL and not (k in CHECKOUT and v is None)}

    def identity(self) -> str:
        return hashlib.sha256(json.dumps(self.protocol(), sort_keys=True).encode()).hexdigest()[:8]

    @property
    def n_runs(self) -> int:
        return len(self.groups) * len(self.seeds)

    def per_run_budget(self) -> tuple[int | None, float | None]:
        """The ablation's LLM budgets split evenly, so that no group can spend another's share."""
        tokens = None if self.max_tokens is None else self.max_tokens // self.n_runs
        usd = None if self.max_usd is None else self.max_usd / self.n_runs
        return tokens, usd

    def baseline_config(self, seed: int) -> RunConfig:
        """Repeated baseline trials only: no iteration, so no LLM call (offline either way)."""
        return RunConfig(task=self.task, llm="offline", levels=["1"], iterations=0, budget=self.budget,
                         baseline_repeats=self.noise_repeats, seed=seed, policy=self.policy,
                         repo=self.repo, cache=self.cache)

    def group_config(self, group: str, seed: int, baseline: float, noise: float) -> RunConfig:
        """The one config every group shares at a seed; only `levels` differs between groups."""
        tokens, usd = self.per_run_budget()
        return RunConfig(task=self.task, llm=self.llm, levels=list(GROUPS[group]), iterations=self.iterations,
                         budget=self.budget, max_tokens=tokens, max_usd=usd, acceptance="strict",
                         strategy_every=self.strategy_every, research_every=self.research_every, seed=seed,
                         llm_base_url=self.llm_base_url, policy=self.policy, baseline_val_bpb=baseline,
                         noise=noise, repo=self.repo, cache=self.cache)

    def command(self, out: Path) -> str:
        """The exact `bilevel ablate` command that reproduces (or resumes) this ablation."""
        args = ["bilevel", "ablate", "--task", self.task, "--llm", self.llm]
        for name in CHECKOUT:
            if getattr(self, name):
                args += [f"--{name}", getattr(self, name)]
        if self.llm_base_url:
            args += ["--llm-base-url", self.llm_base_url]
        args += ["--seeds", ",".join(map(str, self.seeds)), "--iterations", str(self.iterations),
                 "--budget", f"{self.budget:g}", "--groups", ",".join(self.groups),
                 "--noise-repeats", str(self.noise_repeats), "--strategy-every", str(self.strategy_every),
                 "--research-every", str(self.research_every)]
        if self.max_tokens is not None:
            args += ["--max-tokens", str(self.max_tokens)]
        if self.max_usd is not None:
            args += ["--max-usd", f"{self.max_usd:g}"]
        if self.policy:
            args += ["--policy", self.policy]
        return shlex.join([*args, "--out", str(out)])


def default_out(settings: AblationSettings) -> Path:
    return Path("runs") / f"ablation-{settings.identity()}"


def run_folder(group: str, seed: int) -> str:
    return f"runs/{group}-s{seed}"


def baseline_folder(seed: int) -> str:
    return f"runs/baseline-s{seed}"


# ---- the manifest -------------------------------------------------------------------------


def read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def write_manifest(out: Path, manifest: dict) -> None:
    manifest["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(out / MANIFEST)


def open_manifest(out: Path, settings: AblationSettings, script_sha: str) -> dict:
    """This folder's manifest, refusing a different protocol or a changed baseline script."""
    old = read_manifest(out)
    if old is None:
        return {"version": MANIFEST_VERSION, "protocol": settings.protocol(),
                "groups": [g for g in GROUPS if g in settings.groups],
                "baseline_script_sha256": script_sha, "baselines": {}, "noise_floor": None}
    if old.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{out / MANIFEST}: version {old.get('version')}, this bilevel writes {MANIFEST_VERSION}")
    changed = sorted(k for k, v in settings.protocol().items() if old["protocol"].get(k) != v)
    if changed:
        raise ValueError(f"{out} holds an ablation with other settings ({', '.join(changed)}); "
                         "use another --out, or the original settings to resume it")
    if old["baseline_script_sha256"] != script_sha:
        raise ValueError(f"the task's training script changed since {out}'s baseline was measured; "
                         "use another --out")
    old["groups"] = [g for g in GROUPS if g in old["groups"] or g in settings.groups]
    return old


# ---- running ------------------------------------------------------------------------------


def _finished_as_configured(run_dir: Path, cfg: RunConfig) -> bool:
    """A run that already finished with exactly this config: nothing to do, not even a report."""
    if not (run_dir / "journal.db").exists():
        return False
    with Journal.open_readonly(run_dir) as j:
        run = j.run()
    want = json.loads(json.dumps(cfg.to_dict()))
    return run is not None and run["state"] == "finished" and run["config"] == want


def run_one(cfg: RunConfig, run_dir: Path) -> str:
    """Start, resume or skip one ordinary run; returns its journal state afterwards."""
    from bilevel.runtime.outputs.cli import _execute

    cfg.validate()
    cfg.load_task()  # the checkout's file hashes are part of the config
    if _finished_as_configured(run_dir, cfg):
        print(f"ablate: {run_dir} finished already; skipped")
        return "finished"
    _execute(cfg, run_dir)
    with Journal.open_readonly(run_dir) as j:
        return (j.run() or {}).get("state") or "failed"


def baseline_values(run_dir: Path) -> list[float]:
    with Journal.open_readonly(run_dir) as j:
        return [t["val_bpb"] for t in j.finished_trials() if t["kind"] == "baseline" and t["status"] == "ok"]


def measure_baselines(out: Path, settings: AblationSettings, manifest: dict) -> str:
    """The per-seed baseline runs and the shared noise floor, into the manifest. Returns a run state."""
    from bilevel.runtime.ablation.stats import pooled_sd

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
    from bilevel.inner import tasks
    from bilevel.runtime.ablation.report import write_report

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
    paths = write_report(out)
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
    from bilevel.inner import tasks

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


def ablate_command(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    return ablate(settings, Path(args.out) if args.out else default_out(settings))


def add_ablate_parser(subparsers) -> None:
    from bilevel.runtime.outputs.cli import add_checkout_args

    a = subparsers.add_parser("ablate", help="the paper's groups A-D as ordinary runs, with a shared noise floor")
    a.add_argument("--task", default="tinygpt")
    add_checkout_args(a)
    a.add_argument("--llm", default="offline", help="a model name, or offline")
    a.add_argument("--llm-base-url", help="OpenAI-compatible endpoint (else BILEVEL_LLM_BASE_URL)")
    a.add_argument("--seeds", default="1,2", help="comma-separated; every group runs every seed")
    a.add_argument("--iterations", type=int, default=8, help="iterations of every group run")
    a.add_argument("--budget", type=float,
                   help="each trial's training budget, seconds (default: the task's own; tinygpt 30)")
    a.add_argument("--groups", default="A,B,C,D",
                   help="A: Level 1; B: 1,1.5; C: 1,1.5,2; D: 1,2")
    a.add_argument("--noise-repeats", type=int, default=3, help="baseline trials per seed for the noise floor")
    a.add_argument("--strategy-every", type=int, default=3, help="Level 1.5 every K iterations")
    a.add_argument("--research-every", type=int, default=2, help="Level 2 every M Level 1.5 cycles")
    a.add_argument("--max-tokens", type=int, help="for the whole ablation, split evenly across the group runs")
    a.add_argument("--max-usd", type=float, help="for the whole ablation, split evenly across the group runs")
    a.add_argument("--policy")
    a.add_argument("--out", help="the ablation folder (default runs/ablation-<hash of the settings>)")
    a.set_defaults(func=ablate_command)
