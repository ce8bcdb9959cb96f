"""Neutralising text that came from a sandbox or an LLM before a person sees it.

Invariant 8 (what comes out of a sandbox is data), its text half. The rule (README, security):
nothing a trial, a mechanism or an LLM wrote reaches a terminal or a document raw. Trial logs
and log tails, mechanism names, section titles and texts, hypotheses,
LLM replies and decisions, and error messages quoting any of those go through one of these:

- `for_terminal`: every control character is shown escaped (`\\x1b`, `\\r`, `\\x9b`, `\\u202e`),
  so no escape sequence from such text reaches the terminal: no CSI (cursor moves, screen
  clears, colours), no OSC (window titles, OSC 8 hyperlinks, OSC 52 clipboard writes), no C1
  controls, no bidirectional overrides that reorder what is shown. Newlines survive only where
  the caller asks for several lines (a log tail).
- `for_rich`: the same, then rich's markup escaped, for text printed through rich (the live
  display), where `[link=...]` or `[red]` would otherwise be markup.
- `for_markdown`: one line, control characters escaped as above, then every character that
  Markdown or its HTML would act on backslash-escaped: no links, images, autolinks, HTML, code
  spans, emphasis, headings or table breaks can come from such text.
- `for_plot`: one line, control characters escaped, and matplotlib's mathtext `$` escaped.
"""

from __future__ import annotations

import re
from typing import Any

from rich.markup import escape as rich_escape

# C0 controls except those the caller keeps, DEL, C1 controls, and the Unicode format characters
# that reorder or hide text (bidi embeddings/overrides/isolates, zero-width joiners, line/paragraph
# separators, BOM).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_TAB_NL = re.compile(r"[\t\n]")
# Everything Markdown (CommonMark + GFM) or inline HTML acts on; backslash-escaping any ASCII
# punctuation is literal in CommonMark. `.`, `-` and `:` are left alone (numbers, names, prose)
# except where they could make an autolink (`www.`, `scheme://`) or a list/rule at the start.
# `_` only where it could open or close emphasis: not between letters or digits (`N_LAYER` stays).
_MD_SPECIAL = re.compile(r"([\\`*{}\[\]()<>#+!|~@$&]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
_AUTOLINK = re.compile(r"(?i)\bwww\.|:(?=//)")


def _escape_char(m: re.Match) -> str:
    c = m.group(0)
    code = ord(c)
    return f"\\x{code:02x}" if code <= 0xff else f"\\u{code:04x}"


def for_terminal(text: Any, *, lines: bool = False) -> str:
    """`text` safe to print on a terminal: control characters shown escaped. With `lines`,
    newlines and tabs are kept (a log tail); without, they are escaped too (one line)."""
    s = str("" if text is None else text)
    s = s.replace("\r\n", "\n")
    s = _CONTROL.sub(_escape_char, s)
    if not lines:
        s = _TAB_NL.sub(_escape_char, s)
    return s


def for_rich(text: Any, *, lines: bool = False) -> str:
    """For text printed through rich: control characters escaped, then rich markup escaped."""
    return rich_escape(for_terminal(text, lines=lines))


def for_markdown(text: Any, limit: int | None = None) -> str:
    """One line of inert Markdown text: a table cell, a list item, a paragraph."""
    s = " ".join(for_terminal(text, lines=True).split())
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    s = _MD_SPECIAL.sub(r"\\\1", s)
    s = _AUTOLINK.sub(lambda m: m.group(0)[:-1] + "\\" + m.group(0)[-1], s)
    if s[:1] in ("-", "."):   # a list item or rule at the start of a line
        s = "\\" + s
    return s


def for_plot(text: Any, limit: int | None = None) -> str:
    """A plot label: one line, control characters escaped, mathtext's `$` escaped."""
    s = " ".join(for_terminal(text, lines=True).split())
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("$", r"\$")
