"""Prompts that fit the model: every prompt is cut to the model's context, with room for the answer.

Why: a prompt longer than the model's context gets an immediate HTTP 400 from a local server (or
is silently truncated by others), and a long run's trace grows without bound. So before a call is
sent, the client counts the prompt's tokens conservatively and, while it is over the limit, cuts
the largest fenced data block (the trace, the inner loop's source, the standings, mechanism
notes, earlier replies) to what fits: it keeps the block's head (a third) and its tail (two
thirds: a trace is oldest first, so the newest entries survive), and puts a line saying how much
was cut in between. The instructions outside the data blocks are never cut; a prompt whose
instructions alone do not fit is refused (`PromptTooLong`), never sent over the limit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_CONTEXT = 8192       # tokens, when neither --llm-context nor the endpoint says
CHARS_PER_TOKEN = 3          # conservative: real tokenizers give 3.5-4.5 characters per token on this text
MESSAGE_OVERHEAD = 8         # tokens a chat template adds per message (role markers)
ANSWER_MARGIN = 64           # tokens kept free beyond the answer's max_tokens
MIN_BODY = 64                # a data block is never cut below this many characters
CUT = "[... {n} characters cut here to fit the model's context ...]"

# A block as `parsing.fence` writes it: its body ends only at the end line with its own nonce.
_BLOCK = re.compile(r"(<<data:[A-Za-z0-9_.-]+:([0-9a-f]{16})>>\n)(.*?)(\n<<end:\2>>)", re.S)


class PromptTooLong(ValueError):
    """The prompt's fixed text alone is over the limit: it is not sent."""


def prompt_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """A conservative count of a prompt's tokens (over-counts real tokenizers on English, JSON, code)."""
    total = 0
    for m in messages:
        content = m.get("content")
        text = content if isinstance(content, str) else str(content)
        total += math.ceil(len(text) / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD
    return total


def prompt_limit(context_tokens: int, max_tokens: int) -> int:
    """How many tokens a prompt may have: the context less the answer's room and a margin."""
    return context_tokens - max_tokens - ANSWER_MARGIN


def _largest_block(messages: list[dict]) -> tuple[int, re.Match] | None:
    best: tuple[int, re.Match] | None = None
    for i, m in enumerate(messages):
        content = m.get("content")
        if not isinstance(content, str):
            continue
        for match in _BLOCK.finditer(content):
            size = len(match.group(3))
            if size > MIN_BODY + len(CUT) + 16 and (best is None or size > len(best[1].group(3))):
                best = (i, match)
    return best


def fit_messages(messages: list[dict], limit: int) -> list[dict]:
    """The messages, with their largest data blocks cut until the prompt fits `limit` tokens."""
    out = [dict(m) for m in messages]
    while (excess := prompt_tokens(out) - limit) > 0:
        found = _largest_block(out)
        if found is None:
            raise PromptTooLong(f"the prompt needs {prompt_tokens(out)} tokens even with every data block "
                                f"cut, over the limit of {limit}; raise --llm-context")
        i, match = found
        body = match.group(3)
        cut_chars = excess * CHARS_PER_TOKEN + len(CUT) + 32
        keep = max(MIN_BODY, len(body) - cut_chars)
        head, tail = keep // 3, keep - keep // 3
        marker = CUT.format(n=len(body) - keep)
        new_body = f"{body[:head]}\n{marker}\n{body[len(body) - tail:]}"
        content = out[i]["content"]
        out[i]["content"] = content[: match.start(3)] + new_body + content[match.end(3):]
    return out
