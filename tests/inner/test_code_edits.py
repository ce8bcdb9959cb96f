"""Code edits are text: applied on the host by search and replace, checked by parsing and size,
and refused with a reason when they do not apply. The offline library applies to the incumbent."""

from __future__ import annotations

import ast

import pytest

from bilevel.inner import code_edits as ce
from bilevel.inner import tasks
from bilevel.inner.tasks.tinygpt.code_library import EDITS

SOURCE = "A = 1\n\ndef f(x):\n    return x + A\n"


def test_blocks_parse_and_apply():
    text = ("HYPOTHESIS: double it\n<<<<<<< SEARCH\n    return x + A\n=======\n    return 2 * x + A\n"
            ">>>>>>> REPLACE\n")
    blocks = ce.parse_blocks(text)
    out = ce.apply_blocks(SOURCE, blocks, max_bytes=1000)
    assert out == SOURCE.replace("return x + A", "return 2 * x + A")
    assert "-    return x + A\n+    return 2 * x + A\n" in ce.diff(SOURCE, out)


@pytest.mark.parametrize("block, needle", [
    (ce.Block("return y", "return 0"), "not found"),
    (ce.Block("A", "B"), "found 2 times"),
    (ce.Block("  ", "x"), "empty"),
    (ce.Block("    return x + A\n", "    return (x\n"), "does not parse"),
    (ce.Block("    return x + A\n", "    return x + A  # " + "x" * 2000 + "\n"), "over the cap"),
])
def test_an_edit_that_cannot_become_a_script_is_refused_with_its_reason(block, needle):
    with pytest.raises(ce.CodeEditError, match=needle):
        ce.apply_blocks(SOURCE, [block], max_bytes=1000)


def test_an_answer_without_blocks_is_refused():
    with pytest.raises(ce.CodeEditError, match="no <<<<<<< SEARCH"):
        ce.parse_blocks("just prose, no edit")


def test_parsing_never_runs_the_script(tmp_path):
    canary = tmp_path / "ran"
    hostile = f"open({str(canary)!r}, 'w').write('x')\n"
    ce.check_script(hostile, max_bytes=1000)          # parses fine ...
    assert not canary.exists()                         # ... and nothing of it ran


@pytest.mark.parametrize("edit", EDITS, ids=[e["name"] for e in EDITS])
def test_every_library_edit_applies_to_the_incumbent_and_keeps_the_interface(edit):
    source = tasks.load("tinygpt").code_source()
    out = ce.apply_blocks(source, [ce.Block(*b) for b in edit["blocks"]], max_bytes=64 * 1024)
    tree = ast.parse(out)
    assert out != source
    assert "build_model" in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
