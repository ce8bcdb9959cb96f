"""`results.tsv`: karpathy/autoresearch's columns, one row per finished trial, in seq order.

The one writer of the file: the live run (after every iteration, through an observer) and
`bilevel report` both call `write_results`, which replaces the file atomically.
"""

from __future__ import annotations

from pathlib import Path

from bilevel.runtime.files import atomic_write
from bilevel.runtime.journal.records import Trial
from bilevel.runtime.journal.view import RunView
from bilevel.runtime.outputs.text import changes_text, one_line

TSV_HEADER = "commit\tval_bpb\tmemory_gb\tstatus\tdescription"


def _status(t: Trial) -> str:
    if t.status != "ok":
        return "crash"
    return "keep" if t.is_incumbent else "discard"


def results_tsv(view: RunView) -> str:
    """The file's text: every finished trial of the run, in seq order."""
    lines = [TSV_HEADER]
    for t in view.finished:
        commit = (t.script_sha or "0" * 7)[:7]
        val = t.val_bpb if t.status == "ok" else 0.0
        mem = (t.peak_mem_mb or 0.0) / 1024
        desc = "baseline" if t.is_baseline else one_line(t.hypothesis) or one_line(changes_text(t.changes))
        lines.append(f"{commit}\t{val:.6f}\t{mem:.1f}\t{_status(t)}\t{desc}")
    return "\n".join(lines) + "\n"


def write_results(run_dir: Path, view: RunView) -> Path:
    return atomic_write(Path(run_dir) / "results.tsv", results_tsv(view))
