"""`bilevel replay RUN trial SEQ`: re-run one recorded trial in isolation, on exactly the
recorded script (from the artifact store) with the run's policy and budget, and say whether
the outcome is the same. A code-mode trial is trained again and measured again by the trusted
evaluator; the same outcome is the same status and, for an invalid one, the same gate."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bilevel.inner import tasks
from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView
from bilevel.runtime.outputs.safe_text import for_terminal
from bilevel.runtime.policy import from_data
from bilevel.runtime.sandbox import engine, executor
from bilevel.runtime.vocabulary import TrialStatus

DAMAGED_ARTIFACT = 3   # replay's exit status when an artifact it needs fails verification


def replay_trial(run_dir: Path, seq: int) -> int:
    with Journal.open_readonly(run_dir) as journal:
        view = RunView.read(journal)
        rows = [t for t in view.attempts if t.seq == seq and t.status != TrialStatus.RUNNING]
        if not rows:
            print(f"replay: run {view.run.run_id} has no finished trial with seq {seq}")
            return 2
        rec = rows[-1]
        problem = journal.artifacts.verify(rec.script_sha) if rec.script_sha else "missing"
        if problem:
            # Invariant 8 and replay's contract (exactly the recorded inputs): a damaged script is refused.
            print(f"replay: refused: trial {seq}'s script (artifact {rec.script_sha}) is {problem}",
                  file=sys.stderr)
            return DAMAGED_ARTIFACT
        script = journal.artifacts.get_text(rec.script_sha)
    cfg = view.config
    policy = from_data(view.run.policy, "journal")
    task = tasks.resolve(cfg["task"], cfg.get("repo"), cfg.get("cache"), space=cfg.get("space") or None,
                         smoke=bool(cfg.get("smoke")), budget=cfg["budget"] if cfg.get("smoke") else None)
    changed = tasks.changed_files(cfg.get("task_files", {}), task)
    if changed:  # the script is the recorded one, but a checkout's prepare.py is mounted as it is now
        print(f"replay: the task's {', '.join(changed)} changed since the run recorded it; "
              "restore the checkout to replay on the recorded inputs")
        return 2
    client = engine.connect()
    gpu = policy.gpu_ids() is not None
    with tempfile.TemporaryDirectory() as tmp:
        if rec.is_code:
            # Code mode: training and the trusted evaluation again, from the stored script.
            from bilevel.runtime.evaluation.code_trial import run_code_trial

            r = run_code_trial(client, policy, script=script, budget_s=cfg["budget"], work_dir=Path(tmp),
                               code_inputs=task.code_inputs(), gpu=gpu)
        else:
            grace = view.grace["grace_s"] if view.grace else \
                policy.trial["first_grace_s"] if task.measures_grace else None  # as the run had it
            r = executor.run_trial(client, policy, script=script, budget_s=cfg["budget"], work_dir=Path(tmp),
                                   **task.trial_inputs(), gpu=gpu, grace_s=grace,
                                   grace_source="the run's, measured on its baseline" if view.grace else
                                   "policy trial.first_grace_s" if task.measures_grace else "")
    print(f"recorded: {rec.status} val_bpb={rec.val_bpb} ({for_terminal(rec.reason)})")
    print(f"replayed: {r.status} val_bpb={r.val_bpb} ({for_terminal(r.reason)})")
    same = r.status == rec.status and (not rec.is_code or r.gate == rec.gate)
    print("same outcome" if same else "outcome diverged")
    return 0 if same else 1

