"""Small text helpers every output shares: one line, a table cell, a config's changes, a number."""

from __future__ import annotations

from typing import Any

from bilevel.runtime.outputs.safe_text import for_markdown, for_terminal


def one_line(text: Any) -> str:
    """Tabs and newlines would break a TSV row; control characters are shown escaped."""
    return " ".join(for_terminal(text or "", lines=True).split())


def short(text: Any, limit: int) -> str:
    """One line, cut to `limit` characters with an ellipsis."""
    s = one_line(text)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def cell(text: Any, limit: int = 120) -> str:
    """A Markdown table cell: one line of inert Markdown (`safe_text.for_markdown`), cut to `limit`."""
    return for_markdown(text, limit)


def changes_text(changes: dict | None, empty: str = "(none)") -> str:
    if not changes:
        return empty
    return ", ".join(f"{k}={v}" for k, v in sorted(changes.items()))


def bpb(value: float | None) -> str:
    return "—" if value is None else f"{value:.6f}"
