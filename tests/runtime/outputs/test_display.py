"""The live display: line mode prints only changes, terminal mode renders a frame."""

from __future__ import annotations

import io
import time

from bilevel.runtime.outputs.display import LiveDisplay


def _snapshot(trial_seq: int | None, recent: list[dict], best: float = 1.8, best_seq: int = 0) -> dict:
    trial = None if trial_seq is None else {
        "seq": trial_seq, "started_monotonic": time.monotonic(), "budget_s": 30, "deadline_s": 40,
        "changes": {"LR": 0.002}}
    return {"run_id": "run-test", "iteration": 1, "iterations": 8, "trial": trial,
            "best": {"val_bpb": best, "seq": best_seq}, "baseline": 1.8,
            "budgets": {"time_left_s": 3600, "tokens_left": None, "usd_left": None},
            "mechanisms": [{"name": "tabu-search", "state": "active", "calls": {"suggest": 1}}],
            "recent": recent}


def test_display_prints_only_changes_when_not_a_terminal():
    out = io.StringIO()
    base = [{"seq": 0, "status": "ok", "val_bpb": 1.8, "kept": True, "hypothesis": "baseline"}]
    with LiveDisplay(out) as display:
        assert display.plain
        display.update(_snapshot(None, base))
        first = out.getvalue().splitlines()
        assert len(first) == 1 and "run run-test" in first[0]
        for _ in range(5):
            display.update(_snapshot(None, base))
        assert out.getvalue().splitlines() == first
        display.update(_snapshot(1, base))
        lines = out.getvalue().splitlines()
        assert len(lines) == 2 and "trial 1 started" in lines[1] and "LR=0.002" in lines[1]
        display.update(_snapshot(1, base))
        assert len(out.getvalue().splitlines()) == 2
        done = base + [{"seq": 1, "status": "ok", "val_bpb": 1.79, "kept": True, "hypothesis": "larger LR"}]
        display.update(_snapshot(None, done, best=1.79, best_seq=1))
        lines = out.getvalue().splitlines()
        assert len(lines) == 3 and "trial 1 ok val_bpb 1.790000 kept — new best 1.790000" in lines[2]


def test_display_renders_a_terminal_frame():
    out = io.StringIO()
    display = LiveDisplay(out, plain=False)
    done = [{"seq": 3, "status": "crash", "val_bpb": None, "kept": False, "hypothesis": "huge batch"}]
    display.update(_snapshot(4, done))
    display.console.print(display._render())
    frame = out.getvalue()
    assert "trial 4" in frame and "tabu-search" in frame and "crash" in frame and "best" in frame


def test_display_names_the_baseline_rather_than_calling_it_discarded():
    out = io.StringIO()
    with LiveDisplay(out) as display:
        display.update(_snapshot(0, [], best=None, best_seq=None))
        baseline = {"seq": 0, "kind": "baseline", "status": "ok", "val_bpb": 1.8, "kept": False,
                    "hypothesis": "baseline"}
        display.update(_snapshot(None, [baseline], best=1.8, best_seq=0))
    last = out.getvalue().splitlines()[-1]
    assert "trial 0 ok val_bpb 1.800000 (baseline)" in last and "discarded" not in last


def test_the_snapshot_comes_from_the_run_view_and_names_each_mechanism_state(tmp_path):
    from bilevel.runtime.journal.store import Journal
    from bilevel.runtime.journal.view import RunView
    from bilevel.runtime.outputs.display import snapshot
    from bilevel.runtime.run.schedule import Progress

    with Journal.open(tmp_path / "run") as j:
        j.init_run("run-v", {"task": "tinygpt"}, {})
        base = j.start_trial(iteration=0, kind="baseline", changes={})
        j.finish_trial(base, status="ok", val_bpb=2.0)
        gone = j.add_mechanism(name="old", origin="library", activated_at_iteration=1)
        j.add_mechanism(name="new", origin="generated", activated_at_iteration=2)
        j.set_mechanism_active(gone, False)
        progress = Progress(view=RunView.read(j), iteration=2, iterations=8, budgets={"time_left_s": None})
    snap = snapshot(progress)
    assert snap["run_id"] == "run-v" and snap["best"] == {"val_bpb": 2.0, "seq": 0} and snap["baseline"] == 2.0
    assert [(m["name"], m["state"]) for m in snap["mechanisms"]] == [("old", "retired"), ("new", "active")]
    out = io.StringIO()
    with LiveDisplay(out) as display:
        display.observe(progress)
    assert "run run-v: iteration 2/8, baseline 2.000000" in out.getvalue() and "mechanisms: new" in out.getvalue()


def test_display_shows_every_slot_and_what_the_orchestrator_waits_for():
    out = io.StringIO()
    display = LiveDisplay(out, plain=False)
    snap = _snapshot(None, [])
    snap["slots"] = [{"slot": s, "seq": 5 + s, "started_monotonic": time.monotonic(), "budget_s": 30,
                      "share": f"cpus {s}", "changes": {"LR": 0.001 * (s + 1)}} for s in (0, 1)]
    snap["waiting"] = "the LLM: a proposal for iteration 8"
    display.update(snap)
    display.console.print(display._render())
    frame = out.getvalue()
    assert "slot 0" in frame and "slot 1" in frame and "trial 6" in frame and "cpus 1" in frame
    assert "waiting for the LLM: a proposal for iteration 8" in frame


def test_hostile_names_and_hypotheses_reach_neither_plain_lines_nor_the_frame():
    from hostile_text import HOSTILE, assert_terminal_safe

    def snap(recent, state="active"):
        s = _snapshot(None, recent)
        s["mechanisms"] = [{"name": HOSTILE, "state": state, "calls": {"suggest": 1}}]
        return s

    hostile = [{"seq": 1, "status": "crash", "val_bpb": None, "kept": False, "hypothesis": HOSTILE}]
    out = io.StringIO()
    with LiveDisplay(out) as display:               # plain-line mode
        display.update(snap([]))
        display.update(snap(hostile, state="quarantined"))
    assert_terminal_safe(out.getvalue())
    assert len(out.getvalue().splitlines()) == 3    # the newline in the text made no extra line

    out = io.StringIO()
    display = LiveDisplay(out, plain=False)         # the rich frame, rendered as a terminal would get it
    display.console = type(display.console)(file=out, force_terminal=True, width=200)
    display.update(snap(hostile))
    display.console.print(display._render())
    frame = out.getvalue()
    assert "\x1b]" not in frame and "\x07" not in frame and "\u202e" not in frame   # no OSC, title, bidi
    assert "\\x1b" in frame


def _llm(llm_n: int, fallback: int, streak: int) -> dict:
    level = {"asked": llm_n + fallback, "usable": llm_n, "llm": llm_n, "fallback": fallback, "offline": 0,
             "mechanism": 0}
    return {"calls": 3, "tokens": 10, "usd": 0.0, "unusable_streak": streak,
            "decisions": {"1": level, "1.5": dict.fromkeys(level, 0), "2": dict.fromkeys(level, 0)}}


def test_display_says_how_many_decisions_fell_back_from_the_llm():
    out = io.StringIO()
    with LiveDisplay(out) as display:
        display.update({**_snapshot(None, []), "llm": _llm(0, 0, 0)})
        display.update({**_snapshot(None, []), "llm": _llm(1, 2, 2)})
        display.update({**_snapshot(None, []), "llm": _llm(1, 2, 2)})   # unchanged: no new line
    lines = [ln for ln in out.getvalue().splitlines() if "LLM decisions" in ln]
    assert len(lines) == 2 and "L1 llm 1 · fallback 2 (1/3 answers usable); 2 unusable in a row" in lines[1]
    frame = io.StringIO()
    display = LiveDisplay(frame, plain=False)
    display.update({**_snapshot(None, []), "llm": _llm(1, 2, 2)})
    display.console.print(display._render())
    assert "fallback 2" in frame.getvalue()


def test_display_says_which_llm_round_it_is_waiting_for():
    out = io.StringIO()
    wait = {"level": "2", "purpose": "research:explore", "tokens": 0, "started_monotonic": time.monotonic() - 65}
    with LiveDisplay(out) as display:
        display.update(_snapshot(None, []))
        display.update({**_snapshot(None, []), "llm_wait": wait})
        wait["tokens"] = 1234                      # streamed meanwhile: the same live object
        display.update({**_snapshot(None, []), "llm_wait": wait})   # no new line while it waits
        display.update({**_snapshot(None, []), "llm_wait": None})
    frame = io.StringIO()
    term = LiveDisplay(frame, plain=False)
    term.update({**_snapshot(None, []), "llm_wait": wait})
    term.console.print(term._render())
    lines = out.getvalue().splitlines()
    assert "waiting for the LLM: level 2 research:explore, 1:05 elapsed" in lines[1] and len(lines) == 3
    assert "LLM answered level 2 research:explore after 1:0" in lines[2] and "~1,234 tokens streamed" in lines[2]
    assert "waiting for the LLM: level 2 research:explore" in frame.getvalue() and "~1,234 tokens" in frame.getvalue()
