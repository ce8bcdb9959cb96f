"""The ablation's protocol: its settings, its four groups, its folders and its manifest.

A folder holds one ablation: `ablation.json` records the protocol, the baseline script's hash,
the per-seed baselines and the noise floor. Re-running with a different protocol setting, or
after the training script changed, is refused.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bilevel.runtime.files import atomic_write
from bilevel.runtime.run.config import RunConfig

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
    atomic_write(out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


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


