"""The pre-flight of a checkout (`--task karpathy`): what would make every trial fail, found
before any trial starts, each with the fix.

Three questions, asked of the sandbox itself (one probe container, hardened and mounted like a
trial, in the checkout's own image), not guessed on the host:

1. does every top-level import of train.py and prepare.py resolve in the trial image?
2. can the sandbox user read the whole data cache (karpathy-style prepare.py scripts may make
   their folders 0700, readable by their owner only)?
3. does a script that cannot run without CUDA have a GPU (the policy selects one, and torch in
   the image sees it)?

`bilevel run`, `resume` and `trial` refuse to start when any fails (exit 2, nothing written);
`bilevel doctor --task karpathy --repo PATH` shows the same answers.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bilevel.inner.tasks.karpathy import CACHE_IN_SANDBOX, CheckoutTask
from bilevel.runtime.policy import Policy
from bilevel.runtime.sandbox import checkout_image, executor
from bilevel.runtime.sandbox.images import ImageError

MARK = "PREFLIGHT "
# The probe: trusted code of ours; the module names are identifiers parsed from the checkout's
# files (`top_level_imports`) and reach it as a JSON literal, data only.
PROBE = '''import importlib.util, json, os
names = {names}
missing = []
for n in names:
    try:
        if importlib.util.find_spec(n) is None:
            missing.append(n)
    except (ImportError, ValueError):
        missing.append(n)
cache = os.path.expanduser({cache!r})
unreadable = []
for root, dirs, files in os.walk(cache, onerror=lambda e: unreadable.append(e.filename)):
    unreadable += [os.path.join(root, d) for d in dirs if not os.access(os.path.join(root, d), os.R_OK | os.X_OK)]
    unreadable += [os.path.join(root, f) for f in files if not os.access(os.path.join(root, f), os.R_OK)]
cuda = None
if "torch" not in missing:
    import torch
    cuda = torch.cuda.is_available()
print({mark!r} + json.dumps({{"missing": missing, "unreadable": sorted(set(unreadable)), "cache": cache,
                              "cuda": cuda, "uid": os.getuid()}}), flush=True)
'''


class PreflightError(ValueError):
    """A checkout that cannot run here; the message lists every problem and its fix."""


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str


def probe(client, policy: Policy, task: CheckoutTask) -> dict:
    """What the sandbox sees: missing modules, unreadable cache paths, whether torch sees CUDA."""
    script = PROBE.format(names=json.dumps(task.imports()), cache=CACHE_IN_SANDBOX, mark=MARK)
    with tempfile.TemporaryDirectory(prefix="bilevel-preflight-") as tmp:
        r = executor.run_trial(client, policy, script=script, budget_s=30.0, work_dir=Path(tmp),
                               **task.trial_inputs(), gpu=policy.gpu_ids() is not None,
                               grace_s=60.0, grace_source="the pre-flight probe's")
    line = next((ln for ln in r.log_tail.splitlines() if ln.startswith(MARK)), None)
    if line is None:
        raise PreflightError(f"the pre-flight probe did not answer ({r.status}: {r.reason}); its log ends:\n"
                             f"{r.log_tail[-800:]}")
    return json.loads(line[len(MARK):])


def check(client, policy: Policy, task: CheckoutTask) -> list[Problem]:
    """Every problem found, each with its fix; empty when the checkout can run."""
    problems: list[Problem] = []
    repo = task.repo
    build = f"bilevel images build --checkout {repo}"
    cuda_why = task.needs_cuda()
    if cuda_why and policy.gpu_ids() is None:
        problems.append(Problem(f"{cuda_why}, and the policy selects no GPU",
                                "run on a GPU host with a --policy whose [gpu] gpus is \"all\" or a list "
                                "(README: \"karpathy/autoresearch on a GPU host\")"))
    if task.lock_file is not None:
        stale = checkout_image.check(client, repo)
        if stale:
            return [*problems, Problem(stale, build)]
    seen = probe(client, policy, task)
    if seen["missing"]:
        # With a lock file the checkout's image is current here (a stale one returned above).
        fix = (f"its {task.lock_file.name} does not provide them: name them in the checkout's dependencies "
               f"(as `uv add NAME` does), then {build}" if task.lock_file is not None else
               f"the checkout has no pyproject.toml or uv.lock to install them from; add one, then {build}")
        problems.append(Problem(f"train.py/prepare.py import {', '.join(seen['missing'])}, which the trial "
                                f"image lacks", fix))
    if seen["unreadable"]:
        inside = seen["cache"].rstrip("/")
        host = [str(task.cache / p[len(inside) + 1:]) if p.startswith(inside + "/") else p
                for p in seen["unreadable"]]
        problems.append(Problem(
            f"the data cache is not readable by the sandbox user (uid {seen['uid']}): {', '.join(host[:3])}"
            + (f" and {len(host) - 3} more" if len(host) > 3 else ""),
            f"chmod -R a+rX {task.cache} (trials mount it read-only; prepare.py may have made it 0700)"))
    if cuda_why and policy.gpu_ids() is not None and seen["cuda"] is False:
        problems.append(Problem("a GPU is selected, but torch in the trial image sees no CUDA",
                                f"{build} --torch cuda, on a host whose GPU the policy's gpu_mode reaches"))
    return problems


def require(client, policy: Policy, task) -> None:
    """PreflightError listing every problem, for a checkout task; nothing for a bundled task."""
    if not isinstance(task, CheckoutTask):
        return
    try:
        problems = check(client, policy, task)
    except ImageError as exc:
        problems = [Problem(str(exc), f"bilevel images build --checkout {task.repo}")]
    if problems:
        raise PreflightError("pre-flight: the checkout cannot run yet:\n"
                             + "\n".join(f"  - {p.what}\n    fix: {p.fix}" for p in problems))
