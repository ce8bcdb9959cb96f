"""Which parts of a prompt are fenced: the data blocks of `runtime.llm.parsing.fence`.

A prompt test plants a canary in every untrusted input (a mechanism's section title and text, a
hypothesis, an LLM reply) and asserts that each occurrence lies inside a data block, and that the
prompt's own instructions lie outside every block.
"""

from __future__ import annotations

import re

_BLOCK = re.compile(r"<<data:[A-Za-z0-9_.-]+:([0-9a-f]{16})>>\n(.*?)\n<<end:\1>>", re.S)


def data_spans(prompt: str) -> list[tuple[int, int]]:
    """(start, end) of every fenced body in `prompt`."""
    return [(m.start(2), m.end(2)) for m in _BLOCK.finditer(prompt)]


def unfenced(prompt: str, needle: str) -> list[int]:
    """Offsets where `needle` occurs outside every data block (empty: all of it is fenced)."""
    spans = data_spans(prompt)
    found = [m.start() for m in re.finditer(re.escape(needle), prompt)]
    return [i for i in found if not any(a <= i and i + len(needle) <= b for a, b in spans)]


def assert_fenced(prompt: str, needle: str) -> None:
    assert needle in prompt, f"{needle!r} is not in the prompt at all; the test is void"
    assert unfenced(prompt, needle) == [], f"{needle!r} appears outside a data block"


def assert_not_fenced(prompt: str, needle: str) -> None:
    assert needle in prompt and len(unfenced(prompt, needle)) == prompt.count(needle), (
        f"the instruction {needle!r} is inside a data block")
