"""The one neutralisation module: each function against hostile text."""

from __future__ import annotations

from hostile_text import HOSTILE, assert_markdown_safe, assert_terminal_safe, unescaped

from bilevel.runtime.outputs.safe_text import for_markdown, for_plot, for_rich, for_terminal


def test_for_terminal_shows_every_control_character_escaped():
    out = for_terminal(HOSTILE)
    assert_terminal_safe(out)
    assert "\n" not in out and "\\x0a" in out                          # one line unless asked
    assert "\\x1b]52;c;" in out and "\\x1b]8;;" in out and "\\u202e" in out and "\\x9b" in out
    kept = for_terminal("step 1\tloss 2.0\nstep 2\r\n", lines=True)
    assert kept == "step 1\tloss 2.0\nstep 2\n"                          # a log tail keeps its lines
    assert for_terminal(None) == "" and for_terminal(3) == "3"


def test_for_rich_also_escapes_rich_markup():
    from io import StringIO

    from rich.console import Console

    buf = StringIO()
    Console(file=buf, force_terminal=True, color_system="truecolor", highlight=False).print(for_rich(HOSTILE))
    out = buf.getvalue()
    assert "\x1b]8;" not in out and "\x07" not in out               # no hyperlink, no title, no bell
    assert "[link=https://evil.example/r]" in out                    # shown as text, not taken as markup


def test_for_markdown_injects_no_link_image_html_or_column():
    out = for_markdown(HOSTILE)
    assert_markdown_safe(out)
    assert unescaped(out, "|") == 0 and "\n" not in out
    assert unescaped(out, "[") == 0 and unescaped(out, "<") == 0 and unescaped(out, "`") == 0
    assert for_markdown("LR=0.05, N_LAYER=3: fine") == "LR=0.05, N_LAYER=3: fine"   # plain text stays readable
    assert for_markdown("# heading").startswith("\\#") and for_markdown("- item").startswith("\\-")
    assert for_markdown("x" * 50, limit=10) == "x" * 9 + "…"


def test_for_plot_escapes_mathtext_and_controls():
    out = for_plot(HOSTILE)
    assert unescaped(out, "$") == 0 and "\x1b" not in out and "\n" not in out
