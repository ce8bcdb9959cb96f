"""What every task is: a script with a declared search space, a harness, data and a budget."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bilevel.inner.edits import EditError, Param, read_constants, read_values

PACKAGE = "bilevel.inner.tasks"   # bundled tasks are its subpackages

# Constants the runtime writes into every trial's script, when the script has them: they are
# never part of a search space (the budget is each trial's, the seed the run's).
RUNTIME_CONSTANTS = ("TIME_BUDGET", "SEED")


@dataclass(frozen=True)
class Task:
    name: str
    folder: Path
    script: str
    space: dict[str, Param]
    code: dict[str, Any] = field(default_factory=dict)   # task.toml's [code]: empty without code mode

    def source(self) -> str:
        """The task's own script; never edited in place (edits go to per-trial copies)."""
        return (self.folder / self.script).read_text()

    def defaults(self) -> dict:
        """The script's current values of the tunable constants."""
        consts = read_values(self.source())
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
        corpus = importlib.import_module(f"{PACKAGE}.{self.name}.corpus")
        return corpus.prepare(root / "bilevel" / "data" / self.name)

    def runtime_values(self, budget: float | None = None, seed: int | None = None) -> dict[str, Any]:
        """TIME_BUDGET and SEED for a trial's script, only where the script has such a constant."""
        have = read_constants(self.source())
        given = {"TIME_BUDGET": budget, "SEED": seed}
        return {k: v for k, v in given.items() if v is not None and k in have}

    @property
    def measures_grace(self) -> bool:
        """Whether the run's grace is measured on its baseline (the script's time outside its
        budget is its own, e.g. a checkout's warm-up and evaluation); else the policy's grace_s."""
        return False

    def check_budget(self, budget: float) -> None:
        """Refuse a training budget the task cannot honour (a bundled task takes any)."""

    def fingerprint(self) -> dict[str, str]:
        """sha256 of the files outside bilevel that define the trials; none for a bundled task."""
        return {}

    def locator(self) -> dict[str, str]:
        """What `resolve` needs besides the name to load this task again; nothing for a bundled task."""
        return {}

    # ---- code mode -------------------------------------------------------------------------------

    def check_code_mode(self) -> None:
        """Refuse code mode for a task that declares no code-mode script and harness."""
        if not self.code:
            raise EditError(f"task {self.name} has no code mode (its task.toml declares no [code] section)")

    def code_source(self) -> str:
        """The code-mode script the first incumbent starts from."""
        self.check_code_mode()
        return (self.folder / self.code["script"]).read_text()

    def code_inputs(self) -> dict[str, Any]:
        """What a code-mode trial needs: the training split alone (a folder holding nothing else,
        so the validation split is not there to read), the training-side harness, the
        validation split's path (the host's evaluator reads it) and the evaluation set's shape."""
        self.check_code_mode()
        data = self.data_dir()
        return {"train_dir": _train_only(data, self.name), "harness": self.folder / self.code["harness"],
                "val_path": data / "val.bin",
                "spec": {k: int(self.code[k]) for k in ("windows", "seq_len", "vocab", "batch")}}

    def trial_inputs(self) -> dict[str, Any]:
        """What `executor.run_trial` mounts for this task: data, harness path, extra read-only files."""
        return {"data_dir": self.data_dir(), "harness_lib": self.harness_lib, "ro_mounts": ()}


def _train_only(data: Path, name: str) -> Path:
    """A sibling of the task's data folder holding its train.bin and nothing else (copied, checked
    against the split's recorded sha256), for code mode's training container."""
    want = json.loads((data / "meta.json").read_text())["sha256"]["train.bin"]
    dest = data.parent / f"{name}-train-only"
    target = dest / "train.bin"
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == want and \
            sorted(p.name for p in dest.iterdir()) == ["train.bin"]:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    tmp = dest / ".train.bin.tmp"
    shutil.copyfile(data / "train.bin", tmp)
    os.replace(tmp, target)
    return dest
