"""A run's config, and the rules that protect it on resume.

The config is what defines a run: it is stored in the journal when the run starts and compared
on every resume, where only a later deadline or bigger budgets may change (`RESUME_RULES`); any
other change is refused, naming the setting, and a changed task file is refused naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bilevel.inner import tasks
from bilevel.runtime.journal.records import RunInfo
from bilevel.runtime.vocabulary import LEVELS, RunState, TrialMode


@dataclass
class RunConfig:
    """The settings that define a run; stored in the journal and checked again on resume."""

    task: str = "tinygpt"
    llm: str = "offline"
    levels: list[str] = field(default_factory=lambda: [lv.value for lv in LEVELS])
    iterations: int = 12
    budget: float = 30.0
    hours: float | None = None
    max_tokens: int | None = None
    max_usd: float | None = None
    acceptance: str = "strict"
    strategy_every: int = 3          # Level 1.5 every K iterations
    research_every: int = 2          # Level 2 every M Level-1.5 cycles
    min_active: int = 3
    baseline_repeats: int = 1
    seed: int = 0
    llm_base_url: str | None = None
    offline_fallback: bool = False
    policy: str | None = None
    # Set by `bilevel ablate`: a baseline (mean of repeated baseline trials) and its noise (their
    # standard deviation), measured once elsewhere and shared by every group run, so no run has its
    # own, noisier baseline. Part of the config: a resume that changes them is refused.
    baseline_val_bpb: float | None = None
    noise: float | None = None
    # A task from outside the package (`--task karpathy --repo PATH`): the checkout and its data
    # cache, resolved, and the sha256 of the files that define its trials, taken again on every
    # resume, so a resume after the checkout changed is refused, naming the file. Stored only when
    # set (`to_dict`), so the configs of bundled-task runs, and their folder names, stay as they were.
    repo: str | None = None
    cache: str | None = None
    task_files: dict[str, str] = field(default_factory=dict)
    # `--space FILE` (a corrected search space) and `--smoke` (a short budget and evaluation) of a
    # checkout task; stored only when set, like repo and cache.
    space: str = ""
    smoke: bool = False
    # Trials at once (`--parallel N`; None: the policy's `trial.parallel`), and a GPU-hours budget
    # (each trial's GPUs x wall time). Stored only when set, so earlier runs' configs stay as they were.
    parallel: int | None = None
    max_gpu_hours: float | None = None
    # Where trials run: "local" (this host's daemon) or "ray" (a Ray task per trial, on the node's
    # daemon); `ray_address` None starts a local single-node instance on 127.0.0.1.
    executor: str = "local"
    ray_address: str | None = None
    # Further endpoints (`MODEL@URL`, tried in order when the one before is down) and the model's
    # context in tokens (None: what the endpoint reports, else DEFAULT_CONTEXT). Properties of the
    # endpoints, not of the run: a resume may change them, and they are stored only when set.
    llm_fallback: list[str] = field(default_factory=list)
    llm_context: int | None = None
    # What a proposal edits: "params" (the constants of a trusted template) or "code" (the
    # training code; a separate trusted evaluator measures it). Stored only when "code".
    mode: str = "params"

    def to_dict(self) -> dict:
        """The config as the journal stores it."""
        d = asdict(self)
        for key in ("repo", "cache", "task_files", "llm_fallback", "llm_context", "space", "smoke"):
            if not d[key]:
                del d[key]
        for key in ("parallel", "max_gpu_hours", "ray_address"):
            if d[key] is None:
                del d[key]
        if d["executor"] == "local":
            del d["executor"]
        if d["mode"] == TrialMode.PARAMS:
            del d["mode"]
        return d

    def bind(self, task: tasks.Task) -> tasks.Task:
        """Take the task's location and file hashes; refuse a budget the task cannot honour."""
        task.check_budget(self.budget)
        if self.mode == TrialMode.CODE:
            task.check_code_mode()
        for key, value in task.locator().items():
            setattr(self, key, value)
        self.task_files = task.fingerprint()
        return task

    def load_task(self) -> tasks.Task:
        return self.bind(tasks.resolve(self.task, self.repo, self.cache, space=self.space or None, smoke=self.smoke,
                                       budget=self.budget if self.smoke else None))

    def validate(self) -> None:
        bad = [lv for lv in self.levels if lv not in LEVELS]
        if bad or "1" not in self.levels:
            known = tuple(lv.value for lv in LEVELS)
            raise ValueError(f"--levels: {','.join(self.levels)} must include 1 and be among {known}")
        if self.acceptance not in ("strict", "noise-aware"):
            raise ValueError("--acceptance must be strict or noise-aware")
        for name in ("strategy_every", "research_every", "baseline_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if self.iterations < 0:  # 0: only the baseline trials (how `bilevel ablate` measures the noise floor)
            raise ValueError("--iterations must be at least 0")
        if self.budget <= 0:
            raise ValueError("--budget must be positive")
        if self.parallel is not None and self.parallel < 1:
            raise ValueError("--parallel must be at least 1")
        if self.executor not in ("local", "ray"):
            raise ValueError("--executor must be local or ray")
        if self.max_gpu_hours is not None and self.max_gpu_hours <= 0:
            raise ValueError("--max-gpu-hours must be positive")
        if self.llm_context is not None and self.llm_context < 512:
            raise ValueError("--llm-context must be at least 512 tokens")
        for spec in self.llm_fallback:
            parse_endpoint(spec)
        if self.mode not in tuple(TrialMode):
            raise ValueError("--mode must be params or code")
        if self.mode == TrialMode.CODE and ((self.parallel or 1) > 1 or self.executor != "local"):
            raise ValueError("--mode code runs one trial at a time on the local executor in this version "
                             "(no --parallel above 1, no --executor ray)")

    def identity(self) -> str:
        """A short hash of the settings a resume may not change, naming the default run folder."""
        keep = {k: v for k, v in self.to_dict().items()
                if k not in ("hours", "iterations", "max_tokens", "max_usd", "offline_fallback", "max_gpu_hours",
                             "executor", "ray_address", "llm_fallback", "llm_context")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:8]


def parse_endpoint(spec: str) -> tuple[str, str]:
    """`MODEL@URL` as (model, url); ValueError naming the flag when it is not that."""
    model, sep, url = spec.partition("@")
    if not sep or not model or not url.startswith(("http://", "https://")):
        raise ValueError(f"--llm-fallback {spec!r}: expected MODEL@URL, e.g. small@http://127.0.0.1:8080/v1")
    return model, url


def default_run_dir(cfg: RunConfig) -> Path:
    levels = "".join(lv.replace(".", "") for lv in cfg.levels)
    return Path("runs") / f"{cfg.task}-L{levels}-s{cfg.seed}-{cfg.identity()}"


def config_for(run: RunInfo | None, cfg: RunConfig) -> dict:
    """The config to journal: a new run's, or a resumed run's with the allowed changes applied.

    The deadline counts from the run's start, whenever it is resumed. Raises ValueError naming
    what a resume may not change.
    """
    config = cfg.to_dict()
    if run is None:
        if cfg.hours is not None:
            config["deadline"] = (datetime.now(UTC) + timedelta(hours=cfg.hours)).isoformat()
        return config
    old = run.config
    if old.get("deadline") and (cfg.hours is None or cfg.hours == old["hours"]):
        config["deadline"], config["hours"] = old["deadline"], old["hours"]
    elif cfg.hours is not None:
        start = datetime.fromisoformat(old["deadline"]) - timedelta(hours=old["hours"]) \
            if old.get("deadline") else datetime.fromisoformat(run.created_at)
        config["deadline"] = (start + timedelta(hours=cfg.hours)).isoformat()
    refused = diff_config(old, config)
    files = [name.removeprefix("task_files.") for name in refused if name.startswith("task_files")]
    if files:
        raise ValueError(f"cannot resume run {run.run_id}: the task's {', '.join(files)} changed since "
                         "the run started; restore it, or start a new run")
    if refused:
        raise ValueError(f"cannot resume run {run.run_id}: changed setting(s) {', '.join(refused)} "
                         "(only a later deadline or bigger budgets may change)")
    return config


def nothing_to_do(run: RunInfo | None, config: dict) -> str | None:
    """A message when a resume would change nothing of a finished run."""
    if run is not None and run.state == RunState.FINISHED and config == run.config:
        return f"run {run.run_id} has already finished ({run.state_reason}); nothing to do"
    return None


# ---- resume: which config changes are allowed ---------------------------------------------

# key -> rule. "may_increase": a resume may raise the value (None means unlimited);
# "may_change": any change. Any other changed key is refused, naming it.
RESUME_RULES: dict[str, str] = {
    "hours": "may_increase",
    "deadline": "may_increase",
    "iterations": "may_increase",
    "max_trials": "may_increase",
    "max_tokens": "may_increase",
    "max_usd": "may_increase",
    "max_gpu_hours": "may_increase",
    "executor": "may_change",       # where trials run changes no result
    "ray_address": "may_change",
    "llm_fallback": "may_change",
    "llm_context": "may_change",
}


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _order(value: Any) -> float | None:
    """A number to compare for 'may_increase': numbers, ISO timestamps, None as unlimited."""
    if value is None:
        return math.inf
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def _allowed(rule: str | None, old: Any, new: Any) -> bool:
    if rule == "may_change":
        return True
    if rule == "may_increase":
        a, b = _order(old), _order(new)
        return a is not None and b is not None and b >= a
    return False


def diff_config(old: Mapping, new: Mapping, allowed: Mapping[str, str] | set[str] | None = None
                ) -> list[str]:
    """Names of changed settings a resume may not change, sorted; empty means resume may go on.

    Nested dicts compare by dotted name (`budget.hours`); a rule keyed by the last part
    (`hours`) applies at any depth. `allowed` is a rule table (default `RESUME_RULES`) or a
    set of names that may change freely. Added and removed keys are changes too.
    """
    if allowed is None:
        rules: Mapping[str, str] = RESUME_RULES
    elif isinstance(allowed, set | frozenset):
        rules = dict.fromkeys(allowed, "may_change")
    else:
        rules = allowed
    a, b = _flatten(old), _flatten(new)
    refused = []
    missing = object()
    for name in sorted(a.keys() | b.keys()):
        before, after = a.get(name, missing), b.get(name, missing)
        if before == after and type(before) is type(after):
            continue
        rule = rules.get(name, rules.get(name.rsplit(".", 1)[-1]))
        if rule == "may_change":   # a setting that may change may also be added or dropped
            continue
        if before is missing or after is missing or not _allowed(rule, before, after):
            refused.append(name)
    return refused
