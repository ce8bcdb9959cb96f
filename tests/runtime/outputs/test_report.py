"""The morning report, on a journal built through the Journal API."""

from __future__ import annotations

from pathlib import Path

import pytest

from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView
from bilevel.runtime.outputs.report import write_report
from bilevel.runtime.outputs.tsv import TSV_HEADER, results_tsv

# (iteration, changes, hypothesis, status, val_bpb, kept); iteration 0 is the baseline.
TRIALS = [
    (0, {}, None, "ok", 1.800000, None),
    (1, {"LR": 0.002}, "a larger learning rate trains faster", "ok", 1.790000, True),
    (2, {"N_LAYER": 4}, "deeper\tmodel,\nmore capacity", "ok", 1.820000, False),
    (3, {"BATCH": 4096}, "a huge batch", "crash", None, None),
    (4, {"WARMUP": 0.2}, "longer warmup", "ok", 1.795000, False),
    (5, {"LR": 0.003}, "even larger learning rate", "ok", 1.760000, True),
    (6, {"N_EMBD": 512}, "wider model", "timeout", None, None),
    (7, {"DROPOUT": 0.1}, "regularize", "ok", 1.990000, False),
    (8, {"WD": 0.05}, "weight decay", "ok", 1.770000, False),
]
SOURCES = {1: "proposer", 2: "tabu-search", 4: "proposer", 5: "tabu-search", 7: "fallback", 8: "proposer"}


def build_run(run_dir: Path, llm: str = "offline") -> None:
    """A small finished run: baseline, 8 proposals (a crash, a timeout, two kept), two mechanisms."""
    with Journal.open(run_dir) as j:
        j.init_run("run-test", {"task": "tinygpt", "llm": llm, "levels": ["1", "1.5", "2"], "iterations": 8,
                                "budget": 30, "hours": 1, "deadline": "2099-01-01T00:00:00+00:00",
                                "max_tokens": 100000, "max_usd": 2.0, "seed": 1, "acceptance": "strict"}, {})
        tabu = j.add_mechanism(name="tabu-search", origin="library", activated_at_iteration=2)
        bandit = j.add_mechanism(name="lr-bandit", origin="generated", activated_at_iteration=4)
        best = 1.8
        for it, changes, hyp, status, val, kept in TRIALS:
            kind = "baseline" if it == 0 else "proposal"
            if it == 5:  # an infrastructure loss before the real attempt: rerun, not counted twice
                lost = j.start_trial(iteration=it, kind=kind, changes=changes, hypothesis=hyp)
                j.finish_trial(lost, status="infra", reason="docker daemon restarted")
                seq = j.trial(lost)["seq"]
            else:
                seq = None
            tid = j.start_trial(iteration=it, kind=kind, changes=changes, hypothesis=hyp,
                                script_sha=f"{it:x}abcdef0123456789", seq=seq)
            j.finish_trial(tid, status=status, val_bpb=val, training_seconds=30.0, wall_seconds=33.0,
                           peak_mem_mb=2048.0 if status == "ok" else None, exit_code=0 if status == "ok" else 1,
                           reason=None if status == "ok" else f"{status}: RuntimeError in step 12", kept=kept)
            if it == 0:
                continue
            effects = {}
            if it >= 2:
                effects["tabu-search"] = {"sections": ["tabu-search: recent moves"], "suggested": 2,
                                          "constraints": {"forbid": ["BATCH"]}}
            if it in (4, 5):
                effects["lr-bandit"] = {"suggested": 1, "reviewed": {"in": 3, "out": 2}, "accept": "keep"}
            j.event("iteration", {
                "iteration": it, "trial_id": tid, "changes": changes, "config": changes, "hypothesis": hyp,
                "source": SOURCES.get(it, "proposer"), "status": status, "val_bpb": val, "best_before": best,
                "kept": bool(kept), "decision": "gain" if kept else "no gain",
                "rejected": [{"source": "lr-bandit", "changes": {"LR": 9}, "why": "out of range"}] if it == 4 else [],
                "effects": effects, "repeat_trial_id": None})
            if kept:
                best = val
            for hook in ("context", "suggest", "observe") if it >= 2 else ():
                j.record_mechanism_call(mech_id=tabu, hook=hook, input={"iteration": it}, output=[],
                                        outcome="ok", iteration=it)
            if it in (4, 5):
                j.record_mechanism_call(mech_id=bandit, hook="suggest", input={"iteration": it}, output=[],
                                        outcome="ok", iteration=it)
        j.record_mechanism_call(mech_id=bandit, hook="suggest", input={"iteration": 6}, outcome="error",
                                error="ZeroDivisionError: division by zero", iteration=6)
        j.quarantine_mechanism(bandit, "suggest raised ZeroDivisionError: division by zero", iteration=6)
        if llm != "offline":
            for it in range(1, 9):
                j.record_llm_call(level="1", purpose="propose", model=llm, outcome="ok", tokens_in=1000,
                                  tokens_out=200, usd=0.01, iteration=it)
            j.record_llm_call(level="2", purpose="research", model=llm, outcome="ok", tokens_in=8000,
                              tokens_out=3000, usd=0.12, iteration=4)
            j.record_llm_call(level="2", purpose="research", model=llm, outcome="error", iteration=6)
        j.record_decision(level="1.5", kind="freeze", payload={"freeze": ["N_LAYER"], "guidance": "tune LR"},
                          iteration=3)
        j.record_decision(level="2", kind="mechanism", payload={"name": "lr-bandit", "verdict": "activated"},
                          iteration=4)
        j.set_state("finished", "iterations done")


@pytest.fixture
def llm_run(tmp_path: Path) -> Path:
    build_run(tmp_path / "run", llm="test-model")
    return tmp_path / "run"


def test_results_tsv_matches_autoresearch(llm_run: Path):
    paths = write_report(llm_run)
    text = paths["results.tsv"].read_text()
    lines = text.splitlines()
    assert lines[0] == TSV_HEADER
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == len(TRIALS)  # the infra attempt is not a row
    assert all(len(r) == 5 for r in rows)
    assert [r[3] for r in rows] == ["keep", "keep", "discard", "crash", "discard", "keep", "crash", "discard",
                                    "discard"]
    assert rows[0][4] == "baseline"
    assert rows[1] == ["1abcdef", "1.790000", "2.0", "keep", "a larger learning rate trains faster"]
    assert rows[2][4] == "deeper model, more capacity"
    assert rows[3][1:3] == ["0.000000", "0.0"]
    with Journal.open_readonly(llm_run) as j:
        assert results_tsv(RunView.read(j)) == text


def test_report_md_explains_the_run(llm_run: Path):
    md = write_report(llm_run)["report.md"].read_text()
    assert "OFFLINE" not in md
    assert "`test-model`" in md
    # mechanism table: origin, activation, calls per hook, effects, quarantine reason
    tabu = next(line for line in md.splitlines() if line.startswith("| 1 | tabu-search |"))
    assert "library" in tabu and "| 2 |" in tabu
    assert "context 7, observe 7, suggest 7" in tabu
    assert "14 candidate(s) suggested, 2 chosen (1 kept)" in tabu
    bandit = next(line for line in md.splitlines() if line.startswith("| 2 | lr-bandit |"))
    assert "generated" in bandit and "suggest 3" in bandit
    assert "quarantined at iteration 6: suggest raised ZeroDivisionError" in bandit
    assert "2 review(s) changed candidates (2 removed)" in bandit and "accept votes: 2 keep" in bandit
    # LLM spend per level
    assert "| Level 1 (proposer) | 8 | 0 | 8,000 | 1,600 | $0.0800 |" in md
    assert "| Level 2 (mechanisms) | 2 | 1 | 8,000 | 3,000 | $0.1200 |" in md
    # every failure with its replay command
    run_arg = str(llm_run)
    assert f"`bilevel replay {run_arg} trial 3`" in md
    assert f"`bilevel replay {run_arg} trial 6`" in md
    assert f"`bilevel replay {run_arg} mechanism 2`" in md
    assert "suggest → error: ZeroDivisionError" in md
    # results, decisions, link to the plot
    assert "- **Baseline:** 1.800000 (trial 0)" in md
    assert "- **Best:** 1.760000 (trial 5, iteration 5)" in md
    assert "-0.040000" in md and "`LR=0.003`" in md
    assert "| 3 | 1.5 | freeze |" in md and "| 4 | 2 | mechanism |" in md
    assert "](progress.png)" in md
    assert "1 attempt(s) interrupted or lost to infrastructure" in md


def test_offline_run_says_so_and_plot_is_a_png(tmp_path: Path):
    run = tmp_path / "offline-run"
    build_run(run, llm="offline")
    paths = write_report(run)
    md = paths["report.md"].read_text()
    assert "**OFFLINE**" in md
    assert "Level 1 proposer offline" in md and "Level 2 drew its mechanisms from the reference library" in md
    assert "No LLM calls were made (offline run)." in md
    png = paths["progress.png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert 20_000 < len(png) < 2_000_000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1200, 700)


def test_report_works_while_the_run_is_live(tmp_path: Path):
    run = tmp_path / "live"
    with Journal.open(run) as j:  # the writer stays open, a trial is running
        j.init_run("live", {"task": "tinygpt", "llm": "offline", "levels": "1"}, {})
        j.start_trial(iteration=0, kind="baseline", changes={})
        paths = write_report(run)
        assert paths["results.tsv"].read_text() == TSV_HEADER + "\n"
        assert "| 0 | 0 | baseline |" in paths["report.md"].read_text()
        assert paths["progress.png"].stat().st_size > 0


# ---- a Level 2 session, as the report reads it ---------------------------------------------


def test_report_reads_a_session_as_a_decision():
    from bilevel.runtime.outputs.report import _session_text

    text = _session_text({"action": "replace", "target": "tabu", "why": "tabu decided no kept trial in 6 iterations",
                          "name": "doe", "origin": "library", "accepted": True, "activated": True,
                          "activation": "active", "retired": 1})
    assert text == ("replace tabu (tabu decided no kept trial in 6 iterations); doe (library): activated; "
                    "retired mechanism 1; module: active")


def test_hostile_text_reaches_report_md_inert(tmp_path: Path):
    from hostile_text import assert_markdown_safe, hostile_journal

    run = tmp_path / "run"
    ids = hostile_journal(run)
    md = write_report(run)["report.md"].read_text()
    assert_markdown_safe(md)
    # Each table row keeps its columns: the pipe and the newline in the text broke none.
    assert_markdown_safe(md, f"| {ids['mech']} | ", 7)                        # mechanisms
    assert_markdown_safe(md, "| 1 | 1 | proposal |", 10)                       # trials
    assert_markdown_safe(md, "| 0 | 2 | research_session |", 4)                # decisions
    assert "\\[a link\\]\\(https\\://evil.example/l\\)" in md                 # shown, escaped, not linked
    tsv = (run / "results.tsv").read_text()
    assert "\x1b" not in tsv and len(tsv.splitlines()) == 3


def test_hostile_mechanism_names_and_mathtext_cannot_break_the_plot(tmp_path: Path):
    from hostile_text import hostile_journal, unescaped
    from matplotlib.figure import Figure

    from bilevel.runtime.outputs.plot import _activations, plot_progress

    run = tmp_path / "run"
    hostile_journal(run)
    with Journal.open_readonly(run) as j:
        view = RunView.read(j)
    ax = Figure().add_subplot(1, 1, 1)
    _activations(ax, view)
    label = ax.texts[0].get_text()
    assert unescaped(label, "$") == 0 and "\x1b" not in label and "second line" not in label.splitlines()[0][-12:]
    assert plot_progress(view, tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"   # mathtext did not crash it


def test_report_counts_llm_and_fallback_decisions(llm_run: Path):
    md = write_report(llm_run)["report.md"].read_text()
    # A journal from before the `llm` key: a proposer iteration of an LLM run was the LLM's.
    assert "## LLM or fallback: who decided" in md
    assert "| Level 1 (proposer) | 0 | 0 | 5 | 1 | 2 |" in md


def test_an_offline_report_has_no_llm_or_fallback_table(tmp_path: Path):
    build_run(tmp_path / "run", llm="offline")
    assert "who decided" not in write_report(tmp_path / "run")["report.md"].read_text()


def test_a_code_edit_diff_is_fenced_so_it_cannot_close_its_block():
    from bilevel.runtime.outputs.report import fenced

    hostile = "+x = 1\n+```\n+</details><img src=x onerror=alert(1)>\n+\x1b]8;;http://evil\x07link\x1b]8;;\x07\n"
    lines = fenced(hostile)
    fence = lines[0][: -len("diff")]
    assert fence == "````" and lines[-1] == fence          # longer than any backtick run inside
    body = "\n".join(lines[1:-1])
    assert "\x1b" not in body and "\x07" not in body and "\\x1b" in body
    assert fence not in body
