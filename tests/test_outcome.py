"""Summary parsing and outcome classification, on crafted output."""

from __future__ import annotations

from bilevel.runtime.sandbox.outcome import CappedLog, SummaryParser, classify

GOOD = b"step 1\n---\nval_bpb: 2.5\ntraining_seconds: 30.0\npeak_mem_mb: 12\n"


def parse(data: bytes, chunk: int = 7):
    p = SummaryParser()
    for i in range(0, len(data), chunk):
        p.feed(data[i : i + chunk])   # split across arbitrary chunk boundaries
    return p.result()


def test_one_block_parses_across_chunks():
    metrics, problem = parse(GOOD)
    assert problem is None and metrics["val_bpb"] == 2.5 and metrics["peak_mem_mb"] == 12


def test_ambiguous_or_bad_summaries_are_refused():
    cases = {
        b"no block here\n": "no summary",
        GOOD + b"---\nval_bpb: 0.1\ntraining_seconds: 1\n": "separators",
        b"---\nval_bpb: 2.5\nval_bpb: 0.1\ntraining_seconds: 1\n": "repeated",
        b"---\nval_bpb: inf\ntraining_seconds: 1\n": "finite",
        b"---\nval_bpb: abc\ntraining_seconds: 1\n": "not a number",
        b"---\ntraining_seconds: 1\n": "lacks val_bpb",
        b"---\nval_bpb: 2.5\ntraining_seconds: 1\nextra stuff\n": "unexpected line",
    }
    for data, why in cases.items():
        metrics, problem = parse(data)
        assert metrics is None and why in problem, (data, problem)


def test_endless_line_is_cut():
    p = SummaryParser()
    for _ in range(1000):
        p.feed(b"x" * 10_000)
    assert len(p._partial) <= 4096


def test_capped_log_keeps_head_and_tail():
    log = CappedLog(1000)
    log.write(b"HEAD" + b"m" * 5000)
    log.write(b"TAIL")
    text = log.text()
    assert text.startswith("HEAD") and text.endswith("TAIL") and "dropped" in text
    assert len(text) < 1100


def test_classify_needs_all_three_for_oom():
    base = dict(metrics=None, summary_problem="x")
    assert classify(exit_code=137, oom_killed=True, killed_for=None, **base)[0] == "oom"
    assert classify(exit_code=137, oom_killed=False, killed_for=None, **base)[0] == "crash"
    assert classify(exit_code=1, oom_killed=True, killed_for=None, **base)[0] == "crash"
    assert classify(exit_code=137, oom_killed=True, killed_for="deadline", **base)[0] == "timeout"
    assert classify(exit_code=0, oom_killed=False, killed_for=None, **base)[0] == "invalid"
    ok = classify(exit_code=0, oom_killed=False, killed_for=None, metrics={"val_bpb": 1}, summary_problem=None)
    assert ok[0] == "ok"
