"""The reference mechanisms as text, and the records and views their tests feed them.

They run only in the sandbox; tests read them as text (trusted code never imports generated or
library mechanisms)."""

from __future__ import annotations

from bilevel.runtime.mechanisms.validation import synthetic_trace

from mechanism_fixtures import LIBRARY


def source(name: str) -> str:
    return (LIBRARY / f"{name}.py").read_text()


def record(i, changes, bpb, best_before, kept, config=None, status="ok"):
    return {"iteration": i, "changes": changes, "config": config or dict(changes),
            "val_bpb": bpb, "best_before": best_before, "status": status,
            "hypothesis": "h", "kept": kept}


def view_with(history, incumbent=None, frozen=()):
    _r, view = synthetic_trace(2)
    view["history"] = history
    view["frozen"] = list(frozen)
    if incumbent is not None:
        view["incumbent"] = incumbent
    return view
