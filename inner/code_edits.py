"""Code edits: search/replace blocks applied to the incumbent script on the host, as text only.

In code mode a proposal edits the training script itself. The edit is applied here as string
operations (security invariant 1: nothing of it runs on the host); the result is checked
with `ast.parse` (parsing is not running) and against the size cap, and only then becomes a
trial's script, which runs in the sandbox. An edit that does not apply, a script over the cap
or one that does not parse is a rejected proposal with its reason; the loop goes on.

The format, one or more blocks (what an LLM is asked to write; the offline library holds the
same pairs as data):

    <<<<<<< SEARCH
    exact lines of the current script
    =======
    the lines that replace them
    >>>>>>> REPLACE

Each SEARCH text must occur exactly once in the script as it stands after the blocks before it.
"""

from __future__ import annotations

import ast
import difflib
import re
from dataclasses import dataclass

MAX_BLOCKS = 8
BLOCK = re.compile(r"^<<<<<<< SEARCH\n(.*?)^=======\n(.*?)^>>>>>>> REPLACE$", re.S | re.M)


class CodeEditError(ValueError):
    """An edit that cannot become a trial's script; the message says why."""


@dataclass(frozen=True)
class Block:
    search: str
    replace: str


def parse_blocks(text: str) -> list[Block]:
    """The search/replace blocks in `text` (an LLM's answer); none is an error."""
    blocks = [Block(m.group(1), m.group(2)) for m in BLOCK.finditer(text.replace("\r\n", "\n"))]
    if not blocks:
        raise CodeEditError("no <<<<<<< SEARCH / ======= / >>>>>>> REPLACE block in the answer")
    if len(blocks) > MAX_BLOCKS:
        raise CodeEditError(f"{len(blocks)} blocks, more than {MAX_BLOCKS}")
    return blocks


def apply_blocks(source: str, blocks: list[Block], *, max_bytes: int) -> str:
    """The edited script, or CodeEditError naming the block that failed and why."""
    for i, b in enumerate(blocks, 1):
        if not b.search.strip():
            raise CodeEditError(f"block {i}: its SEARCH text is empty")
        found = source.count(b.search)
        if found != 1:
            where = "not found" if found == 0 else f"found {found} times"
            raise CodeEditError(f"block {i}: its SEARCH text is {where} in the current script")
        source = source.replace(b.search, b.replace, 1)
        if len(source.encode()) > max_bytes:
            raise CodeEditError(f"block {i}: the script grows to {len(source.encode())} bytes, "
                                f"over the cap of {max_bytes}")
    check_script(source, max_bytes=max_bytes)
    return source


def check_script(source: str, *, max_bytes: int) -> None:
    """Size and syntax: the two things the host checks of a code-mode script (it never runs it)."""
    if len(source.encode()) > max_bytes:
        raise CodeEditError(f"the script has {len(source.encode())} bytes, over the cap of {max_bytes}")
    try:
        ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        line = getattr(exc, "lineno", None)
        raise CodeEditError(f"the edited script does not parse{f' (line {line})' if line else ''}: "
                            f"{getattr(exc, 'msg', exc)}") from None


def diff(before: str, after: str, name: str = "train.py") -> str:
    """A unified diff of the incumbent and the edited script (what the journal and report keep)."""
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        f"a/{name}", f"b/{name}"))
