"""A karpathy/autoresearch checkout as a task: `--task karpathy --repo PATH`.

Why an adapter and not a copy: the user's checkout is the benchmark. Its `train.py` stays
theirs (edits go to per-trial copies, as for every task), its `prepare.py` is the trusted
harness (the metric, `evaluate_bpb`, lives there), and its data is what `prepare.py` already
put in `~/.cache/autoresearch`. Nothing here creates or downloads anything.

The search space is inferred from `train.py`, since a checkout ships no `task.toml`: every
top-level UPPER_CASE constant whose value is a plain literal, assigned once:

- bool: `bool`;
- int v: an int range, [max(1, v // 4), 4 v] for v > 0, [0, 4] for v == 0, mirrored for v < 0;
- float v: a float range, [v / 10, 10 v] for v > 0, [0, 1] for v == 0, mirrored for v < 0;
- str: a `choice` with the one value it has: effectively fixed, shown to the proposer as such.

Anything else is not tunable: expressions such as `2**19`, tuples such as `ADAM_BETAS`, lists,
None. TIME_BUDGET and SEED never are (the runtime owns them; karpathy's train.py has neither:
its budget is prepare.py's TIME_BUDGET, its seed is set in code).

In the trial, prepare.py is mounted read-only on the launcher's `--lib` path, so `from prepare
import ...` finds it, and the host's cache is mounted read-only at `~/.cache/autoresearch` as
`~` resolves *inside* the sandbox (the executor asks the image; see `executor.sandbox_home`).
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bilevel.inner.edits import EditError, Param, read_constants
from bilevel.inner.tasks.base import RUNTIME_CONSTANTS, Task

NAME = "karpathy"
LIB = "/bilevel/checkout"                 # where the trial sees prepare.py (the --lib path)
CACHE_IN_SANDBOX = "~/.cache/autoresearch"  # `~`: the sandbox user's home, resolved by the executor
UPPER = re.compile(r"[A-Z][A-Z0-9_]*\Z")


def default_cache() -> Path:
    """Where the checkout's prepare.py put its data on this host: `~/.cache/autoresearch`."""
    return Path(os.path.expanduser("~")) / ".cache" / "autoresearch"


def _range_param(name: str, value: int | float, doc: str) -> Param:
    if isinstance(value, int):
        lo, hi = (max(1, value // 4), value * 4) if value > 0 else (0, 4) if value == 0 else \
            (value * 4, min(-1, -(-value // 4)))
        return Param(name=name, type="int", min=lo, max=hi, doc=doc)
    lo, hi = (value / 10, value * 10) if value > 0 else (0.0, 1.0) if value == 0 else (value * 10, value / 10)
    return Param(name=name, type="float", min=lo, max=hi, doc=doc)


def _comment(lines: list[str], node: ast.Assign) -> str:
    """The comment after a constant on its line, if any: the proposer sees it as the doc."""
    rest = lines[node.lineno - 1][node.value.end_col_offset:]
    return rest.split("#", 1)[1].strip() if "#" in rest else ""


def infer_space(source: str) -> dict[str, Param]:
    """The search space of a karpathy-style train.py (rules in the module docstring)."""
    values = read_constants(source)
    lines = source.splitlines()
    space: dict[str, Param] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        if not UPPER.match(name) or name in RUNTIME_CONSTANTS or name not in values:
            continue
        if node.lineno != node.end_lineno:
            continue  # an edit could not rewrite it safely
        value, doc = values[name], _comment(lines, node)
        if isinstance(value, bool):
            space[name] = Param(name=name, type="bool", doc=doc)
        elif isinstance(value, int | float):
            space[name] = _range_param(name, value, doc)
        elif isinstance(value, str):
            space[name] = Param(name=name, type="choice", values=(value,),
                                doc=(doc + " " if doc else "") + "(fixed: the only value known)")
    return space


@dataclass(frozen=True)
class CheckoutTask(Task):
    """A checkout's train.py, read once: trials use this text even if the file changes later."""

    repo: Path = Path(".")
    cache: Path = Path(".")
    budget: float = 300.0
    text: str = ""
    shas: tuple[tuple[str, str], ...] = ()

    def source(self) -> str:
        return self.text

    def defaults_budget(self) -> float:
        return self.budget

    def check_budget(self, budget: float) -> None:
        """The budget is prepare.py's TIME_BUDGET: train.py imports it, no edit can change it."""
        if float(budget) != self.budget:
            raise EditError(
                f"--budget {budget:g}: a karpathy checkout trains for prepare.py's TIME_BUDGET "
                f"({self.budget:g} s), which bilevel does not edit; leave --budget out or give {self.budget:g}")

    def fingerprint(self) -> dict[str, str]:
        return dict(self.shas)

    def locator(self) -> dict[str, str]:
        return {"repo": str(self.repo), "cache": str(self.cache)}

    @property
    def harness_lib(self) -> str:
        return LIB

    def data_dir(self) -> Path | None:
        return None  # no /data mount: prepare.py finds its data under ~ (mounted below)

    def trial_inputs(self) -> dict[str, Any]:
        return {"data_dir": None, "harness_lib": LIB,
                "ro_mounts": ((self.repo / "prepare.py", f"{LIB}/prepare.py"), (self.cache, CACHE_IN_SANDBOX))}


def load_checkout(repo: Path, cache: Path | None = None) -> CheckoutTask:
    """Check a checkout whose prepare.py has run, and make it a task. Nothing is created."""
    repo = Path(repo).expanduser().resolve()
    if not repo.is_dir():
        raise EditError(f"--repo {repo}: no such folder")
    for name in ("train.py", "prepare.py"):
        if not (repo / name).is_file():
            raise EditError(f"--repo {repo}: no {name}; is it a karpathy/autoresearch checkout?")
    cache = (Path(cache).expanduser() if cache is not None else default_cache()).resolve()
    if not cache.is_dir() or not any(cache.iterdir()):
        raise EditError(
            f"the data cache {cache} is missing or empty: run `uv run prepare.py` (or `python prepare.py`) "
            f"in {repo} first, or give --cache DIR; bilevel creates and downloads nothing")
    raw = {n: (repo / n).read_bytes() for n in ("train.py", "prepare.py")}  # read once: hashed as used
    try:
        text = raw["train.py"].decode()
        budget = read_constants(raw["prepare.py"].decode()).get("TIME_BUDGET")
        space = infer_space(text)
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise EditError(f"--repo {repo}: cannot parse train.py or prepare.py: {exc}") from None
    if isinstance(budget, bool) or not isinstance(budget, int | float) or budget <= 0:
        raise EditError(f"{repo / 'prepare.py'}: no positive literal TIME_BUDGET constant")
    if not space:
        raise EditError(f"{repo / 'train.py'}: no top-level UPPER_CASE literal constants to tune")
    shas = tuple((n, hashlib.sha256(b).hexdigest()) for n, b in raw.items())
    return CheckoutTask(name=NAME, folder=repo, script="train.py", space=space, repo=repo, cache=cache,
                        budget=float(budget), text=text, shas=shas)
