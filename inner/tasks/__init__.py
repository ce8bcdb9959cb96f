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

import tomllib
from importlib import resources
from pathlib import Path

from bilevel.inner.edits import EditError
from bilevel.inner.tasks.base import RUNTIME_CONSTANTS, Task
from bilevel.inner.tasks.spaces import params_from_toml

__all__ = ["RUNTIME_CONSTANTS", "Task", "available", "changed_files", "load", "resolve"]

def available() -> list[str]:
    root = resources.files(__name__)
    return sorted(p.name for p in root.iterdir() if p.joinpath("task.toml").is_file())


def resolve(name: str = "tinygpt", repo: str | Path | None = None, cache: str | Path | None = None, *,
            space: str | Path | None = None, smoke: bool = False, budget: float | None = None) -> Task:
    """The task a command names: a bundled one, or with `--repo` a karpathy/autoresearch checkout
    (`--space FILE` corrects its inferred space; `--smoke` shortens its budget and evaluation)."""
    from bilevel.inner.tasks import karpathy

    if name == karpathy.NAME:
        if repo is None:
            raise EditError(f"--task {karpathy.NAME} needs --repo PATH (a karpathy/autoresearch checkout)")
        return karpathy.load_checkout(Path(repo), None if cache is None else Path(cache),
                                      space_file=None if space is None else Path(space), smoke=smoke,
                                      budget=budget)
    if repo is not None or cache is not None or space is not None or smoke:
        raise EditError(f"--repo, --cache, --space and --smoke are for --task {karpathy.NAME}, not --task {name}")
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
    space = params_from_toml(spec.get("params", {}), f"task {name}: task.toml")
    task = Task(name=name, folder=folder, script=spec["task"].get("script", "train.py"), space=space,
                code=dict(spec.get("code", {})))
    for pname, value in task.defaults().items():
        space[pname].check(value)  # the shipped defaults must lie inside the declared space
    return task
