"""Tasks: a training script, its declared search space, its trusted harness and its data.

A task folder holds `task.toml` (the search space), the script (`train.py`), `harness.py`
(trusted evaluation, baked into the trial image) and `corpus.py` (host-side data preparation
with `prepare(dest) -> Path`). Data is prepared once into a cache and mounted read-only.

A task can also come from outside the package: `--task karpathy --repo PATH` loads a
karpathy/autoresearch checkout (`karpathy.py`). Both kinds answer the same questions (which
runtime-set constants the script has, what budget it allows, what the trial mounts, what
identifies its files), so the run, trial, replay and ablate code never asks which task it is.
"""

from __future__ import annotations

import importlib
import os
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..edits import EditError, Param, read_constants

# Constants the runtime writes into every trial's script, when the script has them: they are
# never part of a search space (the budget is each trial's, the seed the run's).
RUNTIME_CONSTANTS = ("TIME_BUDGET", "SEED")


@dataclass(frozen=True)
class Task:
    name: str
    folder: Path
    script: str
    space: dict[str, Param]

    def source(self) -> str:
        """The task's own script; never edited in place (edits go to per-trial copies)."""
        return (self.folder / self.script).read_text()

    def defaults(self) -> dict:
        """The script's current values of the tunable constants."""
        consts = read_constants(self.source())
        return {k: consts[k] for k in self.space}

    def defaults_budget(self) -> float:
        """The script's own TIME_BUDGET, used when no budget is given."""
        return float(read_constants(self.source()).get("TIME_BUDGET", 30))

    @property
    def harness_lib(self) -> str:
        """Where the trial image holds this task's trusted harness."""
        return f"/bilevel/tasks/{self.name}"

    def data_dir(self) -> Path | None:
        """The task's prepared data on the host (made on first use, then reused)."""
        root = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
        corpus = importlib.import_module(f"{__name__}.{self.name}.corpus")
        return corpus.prepare(root / "bilevel" / "data" / self.name)

    def runtime_values(self, budget: float | None = None, seed: int | None = None) -> dict[str, Any]:
        """TIME_BUDGET and SEED for a trial's script, only where the script has such a constant."""
        have = read_constants(self.source())
        given = {"TIME_BUDGET": budget, "SEED": seed}
        return {k: v for k, v in given.items() if v is not None and k in have}

    def check_budget(self, budget: float) -> None:
        """Refuse a training budget the task cannot honour (a bundled task takes any)."""

    def fingerprint(self) -> dict[str, str]:
        """sha256 of the files outside bilevel that define the trials; none for a bundled task."""
        return {}

    def locator(self) -> dict[str, str]:
        """What `resolve` needs besides the name to load this task again; nothing for a bundled task."""
        return {}

    def trial_inputs(self) -> dict[str, Any]:
        """What `executor.run_trial` mounts for this task: data, harness path, extra read-only files."""
        return {"data_dir": self.data_dir(), "harness_lib": self.harness_lib, "ro_mounts": ()}


def available() -> list[str]:
    root = resources.files(__name__)
    return sorted(p.name for p in root.iterdir() if p.joinpath("task.toml").is_file())


def resolve(name: str = "tinygpt", repo: str | Path | None = None, cache: str | Path | None = None) -> Task:
    """The task a command names: a bundled one, or with `--repo` a karpathy/autoresearch checkout."""
    from . import karpathy

    if name == karpathy.NAME:
        if repo is None:
            raise EditError(f"--task {karpathy.NAME} needs --repo PATH (a karpathy/autoresearch checkout)")
        return karpathy.load_checkout(Path(repo), None if cache is None else Path(cache))
    if repo is not None or cache is not None:
        raise EditError(f"--repo and --cache are for --task {karpathy.NAME}, not --task {name}")
    return load(name)


def changed_files(recorded: dict[str, str], task: Task) -> list[str]:
    """Names of the task's files whose sha256 differs from the recorded ones (added or gone too)."""
    now = task.fingerprint()
    return sorted(k for k in recorded.keys() | now.keys() if recorded.get(k) != now.get(k))


def load(name: str = "tinygpt") -> Task:
    """Load a bundled task by name; an unknown name lists the known ones."""
    if name not in available():
        raise EditError(f"unknown task {name!r} (known: {', '.join(available())})")
    folder = Path(str(resources.files(__name__).joinpath(name)))
    spec = tomllib.loads((folder / "task.toml").read_text())
    space = {
        pname: Param(
            name=pname, type=p["type"], min=p.get("min"), max=p.get("max"),
            values=tuple(p.get("values", ())), doc=p.get("doc", ""),
        )
        for pname, p in spec.get("params", {}).items()
    }
    task = Task(name=name, folder=folder, script=spec["task"].get("script", "train.py"), space=space)
    for pname, value in task.defaults().items():
        space[pname].check(value)  # the shipped defaults must lie inside the declared space
    return task
