"""A karpathy/autoresearch checkout as a task: `--task karpathy --repo PATH`.

Why an adapter and not a copy: the user's checkout is the benchmark. Its `train.py` stays
theirs (edits go to per-trial copies, as for every task), its `prepare.py` is the trusted
harness (the metric, `evaluate_bpb`, lives there), and its data is what `prepare.py` already
put in `~/.cache/autoresearch`. Nothing here creates or downloads anything.

The search space is inferred from `train.py`, since a checkout ships no `task.toml`: every
top-level UPPER_CASE constant whose value is a literal or a constant expression of literals,
assigned once on one line:

- bool: `bool`;
- int v, a power of two (`2**19`, `8 * 1024`, 64): a `choice` of the powers of two from v/4 to 4v;
- other int v: an int range, [max(1, v // 4), 4 v] for v > 0, [0, 4] for v == 0, mirrored for v < 0;
- float v: a float range, [v / 10, 10 v] for v > 0, [0, 1] for v == 0, mirrored for v < 0;
- a name ending in `_RATIO` or `_FRAC` (a share of something): a float in [0, 1];
- a tuple of numbers (`ADAM_BETAS = (0.8, 0.95)`): each element `NAME[i]` tunable on its own by
  the rules above, except that an element in (0, 1) stays in (0, 1): [v / 10, 1 - (1 - v) / 10];
- str: a `choice` with the one value it has: effectively fixed, shown to the proposer as such.

Not tunable: lists, None, anything computed from names; TIME_BUDGET and SEED (the runtime owns
them); and reporting constants, names with `FLOPS` in them (karpathy's peak-FLOPs figure only
feeds the MFU printout). `--space FILE` corrects the inference (`inner/tasks/spaces.py`): it
overrides or adds parameters, excludes names, and declares rules between constants that are
checked before a trial starts, and its `[start]` table moves the run's starting point (the
baseline) away from the script's own values, in the task's copy of train.py only.

`--smoke` (a first try on a slow machine) mounts a derived prepare.py whose TIME_BUDGET is the
run's budget (30 s unless `--budget` says) and whose EVAL_TOKENS is an 80th of the checkout's
(at least 128 sequences): the checkout itself is never copied or edited.

In the trial, prepare.py is mounted read-only on the launcher's `--lib` path, so `from prepare
import ...` finds it, and the host's cache is mounted read-only at `~/.cache/autoresearch` as
`~` resolves *inside* the sandbox (the executor asks the image; see `executor.sandbox_home`).
A checkout with a `uv.lock` or `pyproject.toml` runs in its own trial image, built with
`bilevel images build --checkout PATH` (`runtime/sandbox/checkout_image.py`).
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bilevel.inner.edits import EditError, Param, Space, apply, read_constants, read_values
from bilevel.inner.tasks.base import RUNTIME_CONSTANTS, Task
from bilevel.inner.tasks.spaces import load as load_space
from bilevel.inner.tasks.spaces import start_values

NAME = "karpathy"
LIB = "/bilevel/checkout"                 # where the trial sees prepare.py (the --lib path)
CACHE_IN_SANDBOX = "~/.cache/autoresearch"  # `~`: the sandbox user's home, resolved by the executor
UPPER = re.compile(r"[A-Z][A-Z0-9_]*\Z")
SHARE = re.compile(r".*_(RATIO|FRAC)\Z")     # a share of something: stays in [0, 1]
REPORTING = re.compile(r".*FLOPS")            # only feeds a printout (MFU): never tunable
SMOKE_BUDGET = 30.0                          # --smoke's TIME_BUDGET unless --budget says
SMOKE_EVAL_DIVISOR, SMOKE_EVAL_MIN_SEQS = 80, 128
# Markers of a script that cannot run without CUDA: it uses CUDA and never asks whether it has it.
CUDA_USE = re.compile(r"torch\.cuda\.(get_device_capability|synchronize|max_memory_allocated)|[\"']cuda[\"']")
CUDA_ASKED = "is_available"


def default_cache() -> Path:
    """Where the checkout's prepare.py put its data on this host: `~/.cache/autoresearch`."""
    return Path(os.path.expanduser("~")) / ".cache" / "autoresearch"


def _is_pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


def _number_param(name: str, value: int | float, doc: str, unit: bool = False) -> Param:
    """The rules of the module docstring for one number; `unit`: an element of a tuple in (0, 1)."""
    if SHARE.match(name.split("[")[0]) and not isinstance(value, bool) and 0 <= value <= 1:
        return Param(name=name, type="float", min=0.0, max=1.0, doc=doc)
    if isinstance(value, int):
        if _is_pow2(value) and value >= 4:
            k = value.bit_length() - 1
            return Param(name=name, type="choice", values=tuple(2 ** i for i in range(max(0, k - 2), k + 3)),
                         doc=(doc + " " if doc else "") + "(powers of two)")
        lo, hi = (max(1, value // 4), value * 4) if value > 0 else (0, 4) if value == 0 else \
            (value * 4, min(-1, -(-value // 4)))
        return Param(name=name, type="int", min=lo, max=hi, doc=doc)
    if unit and 0 < value < 1:
        return Param(name=name, type="float", min=value / 10, max=1 - (1 - value) / 10, doc=doc)
    lo, hi = (value / 10, value * 10) if value > 0 else (0.0, 1.0) if value == 0 else (value * 10, value / 10)
    return Param(name=name, type="float", min=lo, max=hi, doc=doc)


def _comment(lines: list[str], node: ast.Assign) -> str:
    """The comment after a constant on its line, if any: the proposer sees it as the doc."""
    rest = lines[node.lineno - 1][node.value.end_col_offset:]
    return rest.split("#", 1)[1].strip() if "#" in rest else ""


def _params(name: str, value: Any, doc: str) -> dict[str, Param]:
    if isinstance(value, bool):
        return {name: Param(name=name, type="bool", doc=doc)}
    if isinstance(value, int | float):
        return {name: _number_param(name, value, doc)}
    if isinstance(value, str):
        return {name: Param(name=name, type="choice", values=(value,),
                            doc=(doc + " " if doc else "") + "(fixed: the only value known)")}
    if isinstance(value, tuple) and value and all(isinstance(v, int | float) and not isinstance(v, bool)
                                                  for v in value):
        return {f"{name}[{i}]": _number_param(f"{name}[{i}]", v, f"{doc} (element {i} of {value!r})".strip(),
                                             unit=True) for i, v in enumerate(value)}
    return {}


def infer_space(source: str) -> dict[str, Param]:
    """The search space of a karpathy-style train.py (rules in the module docstring)."""
    values = read_constants(source)
    lines = source.splitlines()
    space: dict[str, Param] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        if not UPPER.match(name) or name in RUNTIME_CONSTANTS or name not in values or REPORTING.match(name):
            continue
        if node.lineno != node.end_lineno:
            continue  # an edit could not rewrite it safely
        space.update(_params(name, values[name], _comment(lines, node)))
    return space


def top_level_imports(source: str) -> list[str]:
    """The top-level modules a script imports at module level (in `try` blocks too), in order."""
    found: list[str] = []
    body = list(ast.parse(source).body)
    while body:
        node = body.pop(0)
        if isinstance(node, ast.Try):
            body[:0] = [*node.body, *[n for h in node.handlers for n in h.body], *node.orelse, *node.finalbody]
            continue
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
        found += [n.split(".")[0] for n in names if n.split(".")[0] not in found]
    return found


@dataclass(frozen=True)
class CheckoutTask(Task):
    """A checkout's train.py, read once: trials use this text even if the file changes later."""

    repo: Path = Path(".")
    cache: Path = Path(".")
    budget: float = 300.0
    text: str = ""
    shas: tuple[tuple[str, str], ...] = ()
    prepare_text: str = ""
    space_file: Path | None = None
    smoke: bool = False
    harness: Path = Path(".")     # the prepare.py trials mount: the checkout's, or the smoke copy

    def source(self) -> str:
        return self.text

    def defaults(self) -> dict:
        consts = read_values(self.text)
        return {k: consts[k] for k in self.space}

    def defaults_budget(self) -> float:
        return self.budget

    @property
    def measures_grace(self) -> bool:
        return True  # karpathy's loop keeps warm-up steps and the evaluation outside TIME_BUDGET

    def check_budget(self, budget: float) -> None:
        """The budget is prepare.py's TIME_BUDGET: train.py imports it, no edit can change it."""
        if float(budget) != self.budget:
            raise EditError(
                f"--budget {budget:g}: a karpathy checkout trains for prepare.py's TIME_BUDGET "
                f"({self.budget:g} s), which bilevel does not edit; leave --budget out or give {self.budget:g}"
                + ("" if self.smoke else ", or add --smoke for a shorter first try"))

    def fingerprint(self) -> dict[str, str]:
        return dict(self.shas)

    def locator(self) -> dict[str, Any]:
        out: dict[str, Any] = {"repo": str(self.repo), "cache": str(self.cache)}
        if self.space_file is not None:
            out["space"] = str(self.space_file)
        if self.smoke:
            out["smoke"] = True
        return out

    @property
    def harness_lib(self) -> str:
        return LIB

    @property
    def lock_file(self) -> Path | None:
        """What pins the checkout's dependencies (its trial image is built from it), if anything."""
        return next((self.repo / n for n in ("uv.lock", "pyproject.toml") if (self.repo / n).is_file()), None)

    def imports(self) -> list[str]:
        """Top-level imports of train.py and prepare.py, but `prepare` (mounted on the --lib path)."""
        names = top_level_imports(self.text) + top_level_imports(self.prepare_text)
        return [n for i, n in enumerate(names) if n != "prepare" and n not in names[:i]]

    def needs_cuda(self) -> str | None:
        """Why the scripts cannot run without CUDA, or None (they use it only when it is there)."""
        texts = {"train.py": self.text, "prepare.py": self.prepare_text}
        if any(CUDA_ASKED in t for t in texts.values()):
            return None
        uses = [f"{n} ({m.group(0)})" for n, t in texts.items() if (m := CUDA_USE.search(t))]
        return f"{', '.join(uses)} uses CUDA and never checks torch.cuda.is_available()" if uses else None

    def data_dir(self) -> Path | None:
        return None  # no /data mount: prepare.py finds its data under ~ (mounted below)

    def trial_inputs(self) -> dict[str, Any]:
        """The mounts, and with a lock file the checkout whose own trial image runs its trials."""
        out = {"data_dir": None, "harness_lib": LIB,
               "ro_mounts": ((self.harness, f"{LIB}/prepare.py"), (self.cache, CACHE_IN_SANDBOX))}
        return {**out, "checkout": self.repo} if self.lock_file is not None else out


def smoke_prepare(text: str, budget: float) -> str:
    """prepare.py with TIME_BUDGET = budget and EVAL_TOKENS cut (rules in the module docstring)."""
    consts = read_constants(text)
    values: dict[str, Any] = {"TIME_BUDGET": int(budget) if float(budget).is_integer() else float(budget)}
    tokens, seq = consts.get("EVAL_TOKENS"), consts.get("MAX_SEQ_LEN")
    if isinstance(tokens, int) and not isinstance(tokens, bool):
        floor = SMOKE_EVAL_MIN_SEQS * seq if isinstance(seq, int) else 0
        values["EVAL_TOKENS"] = min(tokens, max(tokens // SMOKE_EVAL_DIVISOR, floor))
    return apply(text, values)


def _smoke_copy(text: str, budget: float) -> tuple[Path, str]:
    """The derived prepare.py of --smoke, written once under bilevel's cache (never the checkout)."""
    derived = smoke_prepare(text, budget)
    sha = hashlib.sha256(derived.encode()).hexdigest()
    root = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "bilevel" / "smoke" / sha[:16]
    root.mkdir(parents=True, exist_ok=True)
    path = root / "prepare.py"
    if not path.is_file() or path.read_text() != derived:
        path.write_text(derived)
        path.chmod(0o644)
    return path, sha


def load_checkout(repo: Path, cache: Path | None = None, *, space_file: Path | None = None, smoke: bool = False,
                  budget: float | None = None) -> CheckoutTask:
    """Check a checkout whose prepare.py has run, and make it a task. Nothing in it is created."""
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
        text, prepare_text = raw["train.py"].decode(), raw["prepare.py"].decode()
        harness_consts = read_constants(prepare_text)
        inferred = infer_space(text)
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise EditError(f"--repo {repo}: cannot parse train.py or prepare.py: {exc}") from None
    own = harness_consts.get("TIME_BUDGET")
    if isinstance(own, bool) or not isinstance(own, int | float) or own <= 0:
        raise EditError(f"{repo / 'prepare.py'}: no positive literal TIME_BUDGET constant")
    fixed = {**harness_consts, **read_values(text)}
    space: Space = load_space(Path(space_file), inferred, fixed) if space_file is not None else \
        Space(inferred, fixed=fixed)
    if not space:
        raise EditError(f"{repo / 'train.py'}: no top-level UPPER_CASE literal constants to tune")
    if space_file is not None and (start := start_values(Path(space_file), space)):
        text = apply(text, start)  # the task's copy starts there; the checkout's file is untouched
        space.fixed.update(read_values(text))
    shas = [(n, hashlib.sha256(b).hexdigest()) for n, b in raw.items()]
    harness, used = repo / "prepare.py", float(own)
    if smoke:
        used = float(budget) if budget is not None else SMOKE_BUDGET
        if used <= 0:
            raise EditError("--budget must be positive")
        harness, sha = _smoke_copy(prepare_text, used)
        shas.append(("prepare.py (smoke)", sha))
    if space_file is not None:
        shas.append(("space", hashlib.sha256(Path(space_file).read_bytes()).hexdigest()))
    return CheckoutTask(name=NAME, folder=repo, script="train.py", space=space, repo=repo, cache=cache,
                        budget=used, text=text, shas=tuple(shas), prepare_text=prepare_text,
                        space_file=Path(space_file).resolve() if space_file is not None else None,
                        smoke=smoke, harness=harness)
