"""`bilevel mechanism check FILE` and `bilevel replay RUN mechanism ID`.

Why thin: the pipeline (validation.py) and the replay (mechanism_replay.py) are what tests
exercise; these functions only read files, print and choose the exit status.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bilevel.runtime import policy as policy_mod
from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView
from bilevel.runtime.mechanisms.host import replay_path
from bilevel.runtime.mechanisms.replay import ReplayError, read_replay, replay
from bilevel.runtime.mechanisms.validation import validate
from bilevel.runtime.outputs.replay import DAMAGED_ARTIFACT
from bilevel.runtime.outputs.safe_text import for_terminal
from bilevel.runtime.run.mechanisms import journal_replay_inputs

SHOW = 600   # characters of each hook output in the human-readable verdict


def _short(value) -> str:
    text = json.dumps(value)  # ensure_ascii: every control and non-ASCII character arrives escaped
    return text if len(text) <= SHOW else text[:SHOW] + f"... ({len(text)} chars)"


def check_command(path: str, policy_path: str | None = None, as_json: bool = False) -> int:
    """Run the validation pipeline on FILE; exit 0 when accepted, 1 when rejected."""
    pol = policy_mod.load(policy_path)
    try:
        source = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"mechanism check: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    verdict = validate(source, pol, name=Path(path).stem)
    if as_json:
        print(json.dumps({"file": str(path), **verdict.to_json()}))
        return 0 if verdict.accepted else 1
    status = "accepted" if verdict.accepted else f"rejected at stage {verdict.stage}"
    print(f"mechanism {for_terminal(path)}: {status}")
    print(f"reason: {for_terminal(verdict.reason)}")
    if verdict.name:
        print(f"name: {for_terminal(verdict.name)}   hooks: {for_terminal(', '.join(verdict.hooks)) or '-'}")
    for hook, out in verdict.outputs.items():
        print(f"  {hook}: {_short(out)}")
    if verdict.printed:
        print("printed:\n  " + for_terminal(verdict.printed[-1000:], lines=True).replace("\n", "\n  "))
    print("timings: " + ", ".join(f"{k} {v:.1f} ms" for k, v in verdict.timings_ms.items()))
    return 0 if verdict.accepted else 1


def _damaged_inputs(journal: Journal, mech_id: int) -> list[str]:
    """What a replay of `mech_id` would read that fails verification: its source, its calls' artifacts."""
    view = RunView.read(journal)
    mine = (f"mechanism {mech_id} (", f"mechanism {mech_id}'s ")
    return [f"{where} (artifact {ref}) is {problem}"
            for ref, where, problem in view.damaged_artifacts(journal.artifacts) if where.startswith(mine)]


def replay_mechanism_command(run_dir: str, mech_id: str, policy_path: str | None = None) -> int:
    """Replay one mechanism's recorded calls in a fresh sandbox; exit 0 when identical."""
    pol = policy_mod.load(policy_path)
    try:
        if (Path(run_dir) / "journal.db").exists():
            with Journal.open_readonly(run_dir) as journal:
                damaged = _damaged_inputs(journal, int(mech_id))
                if damaged:
                    for line in damaged:
                        print(f"replay: refused: {for_terminal(line)}", file=sys.stderr)
                    return DAMAGED_ARTIFACT
                header, records = journal_replay_inputs(journal, int(mech_id))
        else:
            header, records = read_replay(replay_path(run_dir, mech_id))
    except (ReplayError, ValueError) as exc:
        print(f"replay: {for_terminal(exc)}", file=sys.stderr)
        return 2
    report = replay(header, records, pol)
    name = for_terminal(header.get("name") or mech_id)
    if report.same:
        last = records[-1]["outcome"] if records else "no calls"
        print(f"replay of mechanism {mech_id} ({name}): same outcome"
              f" ({report.replayed} calls replayed; last outcome: {last})")
        return 0
    d = report.divergence or {}
    print(f"replay of mechanism {mech_id} ({name}): diverges at call seq {d.get('seq')}"
          f" ({d.get('hook')})")
    print(f"  expected: {_short(d.get('expected'))}")
    print(f"  got:      {_short(d.get('got'))}")
    return 1
