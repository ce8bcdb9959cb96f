"""Tasks: a training script, its declared search space, its trusted harness and its data.

A task folder holds `task.toml` (the search space), the script (`train.py`), `harness.py`
(trusted evaluation, baked into the trial image) and `corpus.py` (host-side data preparation
with `prepare(dest) -> Path`). Data is prepared once into a cache and mounted read-only.
"""

from __future__ import annotations

import importlib
import os
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..edits import EditError, Param, read_constants


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

    def data_dir(self) -> Path:
        """The task's prepared data on the host (made on first use, then reused)."""
        root = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
        corpus = importlib.import_module(f"{__name__}.{self.name}.corpus")
        return corpus.prepare(root / "bilevel" / "data" / self.name)


def available() -> list[str]:
    root = resources.files(__name__)
    return sorted(p.name for p in root.iterdir() if p.joinpath("task.toml").is_file())


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
