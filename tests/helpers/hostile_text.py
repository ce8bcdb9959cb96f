"""Hostile text as a sandbox or an LLM could write it, and the checks that nothing of it came out raw.

HOSTILE carries: a window-title OSC, a screen clear and a cursor move (CSI), an OSC 52 clipboard
write, an OSC 8 hyperlink, a C1 CSI, a bidi override, rich markup, a Markdown link, an image, an
autolink, inline HTML, a mathtext formula, a pipe and a newline.
"""

from __future__ import annotations

import re

from bilevel.runtime.journal.store import Journal

HOSTILE = ("\x1b]0;pwned-title\x07\x1b[2J\x1b[10;10H\x1b]52;c;SGVsbG8gY2xpcGJvYXJk\x07"
           "\x1b]8;;https://evil.example/x\x1b\\click me\x1b]8;;\x1b\\ \x9b31m \u202eevil\u202c "
           "[link=https://evil.example/r]rich link[/link] [a link](https://evil.example/l) "
           "![an image](https://evil.example/i.png) https://evil.example/auto <img src=x onerror=alert(1)> "
           "$\\frac{1}{0}$ a|b\nsecond line")
# Whatever reaches a terminal or a document must not hold these raw.
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\u202c")


def assert_terminal_safe(text: str, *, multiline_ok: bool = False) -> None:
    for raw in RAW:
        assert raw not in text, f"raw {raw!r} reached the output: {text[:300]!r}"
    assert "\\x1b" in text, "the escape sequence should be shown escaped, not dropped silently"


def unescaped(text: str, char: str) -> int:
    return len(re.findall(r"(?<!\\)" + re.escape(char), text))


def assert_markdown_safe(md: str, table_line_prefix: str | None = None, columns: int | None = None) -> None:
    """No raw control character, no link, image, autolink or HTML, no extra table column."""
    for raw in RAW:
        assert raw not in md, f"raw {raw!r} reached the document"
    for pattern in (r"(?<!\\)\]\((?=[^)]*evil)", r"(?<!\\)<img", r"(?<!\\)!\[an image", r"(?<!\\)\[a link",
                    r"https://evil", r"(?<!\\)\[link="):
        assert not re.search(pattern, md), f"{pattern!r} reached the document raw"
    assert "second line" not in [line.strip() for line in md.splitlines()]  # the newline did not break out
    if table_line_prefix is not None:
        line = next(x for x in md.splitlines() if x.startswith(table_line_prefix))
        assert unescaped(line, "|") == columns + 1, line


def hostile_journal(run_dir, *, state_reason: bool = True) -> dict:
    """A small finished run whose every untrusted field holds HOSTILE; returns the ids used."""
    with Journal.open(run_dir) as j:
        j.init_run("run-hostile", {"task": "tinygpt", "llm": "offline", "levels": ["1", "2"], "iterations": 1,
                                   "budget": 1, "seed": 1, "acceptance": "strict"}, {})
        mech = j.add_mechanism(name=HOSTILE, origin="generated", activated_at_iteration=1)
        base = j.start_trial(iteration=0, kind="baseline", changes={}, hypothesis="baseline")
        j.finish_trial(base, status="ok", val_bpb=2.0, training_seconds=1.0, wall_seconds=2.0, exit_code=0)
        tid = j.start_trial(iteration=1, kind="proposal", changes={"LR": 0.002}, hypothesis=HOSTILE)
        j.finish_trial(tid, status="crash", exit_code=1, reason="crash: " + HOSTILE)
        j.event("iteration", {"iteration": 1, "trial_id": tid, "changes": {"LR": 0.002}, "config": {"LR": 0.002},
                              "hypothesis": HOSTILE, "source": HOSTILE, "status": "crash", "val_bpb": None,
                              "best_before": 2.0, "kept": False, "decision": "trial ended crash",
                              "rejected": [], "effects": {}, "repeat_trial_id": None})
        j.record_mechanism_call(mech_id=mech, hook="suggest", input=[{}], outcome="error", error=HOSTILE,
                                iteration=1)
        j.quarantine_mechanism(mech, "error in suggest: " + HOSTILE, iteration=1)
        j.record_decision(level="2", kind="research_session", iteration=0,
                          payload={"cycle": 0, "origin": "generated", "name": HOSTILE, "action": "add",
                                   "target": None, "why": HOSTILE, "accepted": True, "reason": HOSTILE,
                                   "activated": True, "mech_id": mech, "activation": "active", "rounds": []})
        j.set_state("failed" if state_reason else "finished", "RuntimeError: " + HOSTILE)
    return {"mech": mech, "trial": tid}
