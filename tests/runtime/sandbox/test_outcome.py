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


def test_the_summary_parser_takes_karpathys_keys_and_stays_strict():
    block = (b"step 00010 | loss 3.2\n---\nval_bpb:          0.997900\ntraining_seconds: 300.1\n"
             b"total_seconds:    325.9\npeak_vram_mb:     45060.2\nmfu_percent:      39.80\n"
             b"total_tokens_M:   499.6\nnum_steps:        953\nnum_params_M:     50.3\ndepth:            8\n")
    p = SummaryParser()
    p.feed(block)
    metrics, problem = p.result()
    assert problem is None and metrics["val_bpb"] == 0.9979 and metrics["peak_vram_mb"] == 45060.2
    for tail, why in ((b"depth: 9\n", "repeated"), (b"---\nval_bpb: 0.1\ntraining_seconds: 1\n", "separators"),
                      (b"flops: 3\n", "unexpected line")):
        p = SummaryParser()
        p.feed(block + tail)
        assert p.result()[0] is None and why in p.result()[1]
    p = SummaryParser()
    p.feed(block.replace(b"0.997900", b"nan"))
    assert p.result()[0] is None
