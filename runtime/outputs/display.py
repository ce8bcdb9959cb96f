"""The live view of a run: a rich panel on a terminal, plain event lines otherwise.

Why: whoever starts an overnight run wants to glance at it (current trial against its budget,
best so far, budgets left, which mechanisms are working); whoever pipes it to a file or a CI log
wants a short history, not a repaint flood. So on a terminal a background refresh (rich's Live
thread, ~2 Hz) keeps the elapsed time moving between `update` calls, and off a terminal a line
is printed only when something happened: a trial started or ended, the best changed, a
mechanism was activated, retired or quarantined.
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape as rich_escape
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from bilevel.runtime.outputs.safe_text import for_terminal
from bilevel.runtime.run.schedule import Progress
from bilevel.runtime.vocabulary import MechanismState

REFRESH_HZ = 2
RECENT = 5
STATE_STYLE = {MechanismState.QUARANTINED: "[red]quarantined[/]", MechanismState.ACTIVE: "[green]active[/]",
               MechanismState.RETIRED: "[dim]retired[/]"}


def snapshot(progress: Progress) -> dict:
    """What the display shows of a run's progress, all of it read from the progress's `RunView`."""
    view = progress.view
    best = view.best
    return {
        "run_id": view.run.run_id if view.run else None, "iteration": progress.iteration,
        "iterations": progress.iterations, "trial": progress.trial,
        "slots": list(progress.slots), "waiting": progress.waiting,
        "best": {"val_bpb": best.val_bpb, "seq": best.seq} if best else None,
        "baseline": view.baseline_val_bpb, "budgets": progress.budgets,
        "mechanisms": [{"name": m.name, "state": m.state.value, "calls": dict(m.calls)} for m in view.mechanisms],
        "recent": [{"seq": t.seq, "kind": t.kind.value, "status": t.status.value, "val_bpb": t.val_bpb,
                    "kept": t.kept, "hypothesis": t.hypothesis} for t in view.finished[-RECENT:]],
        "llm": view.llm_status() if view.online else None,
        "llm_wait": progress.llm_wait,   # live: its `tokens` grow while the answer streams
    }


def wait_text(wait: dict, now: float | None = None) -> str:
    """The LLM round being waited for: level, purpose, elapsed, tokens streamed so far."""
    elapsed = (now if now is not None else time.monotonic()) - wait.get("started_monotonic", 0.0)
    tokens = wait.get("tokens") or 0
    return (f"waiting for the LLM: level {wait.get('level')} {_short(wait.get('purpose'), 40)}, "
            f"{_fmt_secs(elapsed)} elapsed" + (f", ~{tokens:,} tokens so far" if tokens else ""))


def llm_text(llm: dict | None) -> str | None:
    """Who decided, per level (LLM / offline fallback / mechanism), and the unusable streak."""
    if not llm:
        return None
    parts = []
    for level, d in (llm.get("decisions") or {}).items():
        if d["asked"] or d["fallback"] or d["llm"]:
            mech = f" · mechanism {d['mechanism']}" if d.get("mechanism") else ""
            parts.append(f"L{level} llm {d['llm']} · fallback {d['fallback']}{mech} "
                         f"({d['usable']}/{d['asked']} answers usable)")
    streak = llm.get("unusable_streak") or 0
    text = "LLM decisions: " + ("; ".join(parts) or "none yet")
    return text + (f"; {streak} unusable in a row" if streak else "")


def _fmt_changes(changes: dict | None, limit: int = 90) -> str:
    text = for_terminal(", ".join(f"{k}={v}" for k, v in sorted((changes or {}).items())) or "(no changes)")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt_bpb(value: float | None) -> str:
    return "—" if value is None else f"{value:.6f}"


def _fmt_secs(seconds: float | None) -> str:
    if seconds is None:
        return "∞"
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _short(text: Any, limit: int) -> str:
    """One line of untrusted text (a hypothesis, a name), control characters shown escaped."""
    s = " ".join(for_terminal(text or "", lines=True).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


class LiveDisplay:
    """Shows run snapshots. Use as a context manager; call `update(snapshot)` whenever the run moves.

    `file` defaults to stdout. `plain` forces (True) or forbids (False) line mode; by default
    it is used whenever the output is not a terminal.
    """

    def __init__(self, file: TextIO | None = None, *, plain: bool | None = None, recent: int = RECENT) -> None:
        self.console = Console(file=file)
        stream = file if file is not None else sys.stdout
        if plain is None:
            isatty = getattr(stream, "isatty", None)
            plain = not (callable(isatty) and isatty()) or not self.console.is_terminal
        self.plain = plain
        self.recent = recent
        self._lock = threading.Lock()
        self._snap: dict[str, Any] = {}
        self._received = time.monotonic()
        self._live: Live | None = None
        # What plain mode has already reported, so a repeated snapshot prints nothing.
        self._started = False
        self._trial_seq: int | None = None
        self._seen: dict[int, str] = {}
        self._best: float | None = None
        self._mech_state: dict[str, str] = {}
        self._llm_line: str | None = None
        self._waiting: dict | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> LiveDisplay:
        if not self.plain:
            self._live = Live(console=self.console, get_renderable=self._render,
                              refresh_per_second=REFRESH_HZ, transient=False, redirect_stdout=False,
                              redirect_stderr=False)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    # ---- input ---------------------------------------------------------------------------

    def observe(self, progress: Progress) -> None:
        """An observer of a run (`Run(observers=...)`)."""
        self.update(snapshot(progress))

    def update(self, snapshot: dict) -> None:
        """Take the run's latest state; plain mode prints what changed since the last one."""
        with self._lock:
            self._snap = dict(snapshot)
            self._received = time.monotonic()
        if self.plain:
            for line in self._events(snapshot):
                self._emit(line)

    def _emit(self, line: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        self.console.file.write(f"[{stamp}] {line}\n")
        self.console.file.flush()

    def _events(self, snap: dict) -> list[str]:
        """Lines for what changed since the last snapshot: at most a few per call, usually none."""
        lines: list[str] = []
        best = (snap.get("best") or {}).get("val_bpb")
        best_seq = (snap.get("best") or {}).get("seq")
        recent = snap.get("recent") or []
        mechs = {m["name"]: m["state"] for m in snap.get("mechanisms") or []}
        trial = snap.get("trial")
        if not self._started:
            # A resumed run may already have history: one summary line, not one per old trial.
            self._started = True
            self._seen = {r["seq"]: r.get("status", "") for r in recent}
            self._best = best
            self._mech_state = mechs
            active = [n for n, s in mechs.items() if s == "active"]
            lines.append(f"run {snap.get('run_id', '?')}: iteration {snap.get('iteration', 0)}/"
                         f"{snap.get('iterations', '?')}, baseline {_fmt_bpb(snap.get('baseline'))}, "
                         f"best {_fmt_bpb(best)}" + (f" (trial {best_seq})" if best_seq is not None else "")
                         + (f", mechanisms: {_short(', '.join(active), 200)}" if active else ""))
        for r in sorted(recent, key=lambda r: r["seq"]):
            if self._seen.get(r["seq"]) == r.get("status"):
                continue
            self._seen[r["seq"]] = r.get("status", "")
            if r.get("status") == "running":
                continue
            line = f"trial {r['seq']} {r.get('status')}"
            if r.get("val_bpb") is not None:
                line += f" val_bpb {r['val_bpb']:.6f}"
            if r.get("kind") == "baseline":
                line += " (baseline)"
            elif r.get("status") == "ok":
                line += " kept" if r.get("kept") else " discarded"
            if best is not None and best != self._best and best_seq == r["seq"]:
                line += f" — new best {best:.6f}"
                self._best = best
            lines.append(line + f": {_short(r.get('hypothesis'), 80)}")
        if best is not None and best != self._best:
            self._best = best
            lines.append(f"new best {best:.6f}" + (f" (trial {best_seq})" if best_seq is not None else ""))
        if trial and trial.get("seq") != self._trial_seq:
            self._trial_seq = trial.get("seq")
            lines.append(f"trial {trial.get('seq')} started (iteration {snap.get('iteration', '?')}/"
                         f"{snap.get('iterations', '?')}, budget {_fmt_secs(trial.get('budget_s'))}): "
                         f"{_fmt_changes(trial.get('changes'))}")
        for name, state in mechs.items():
            if self._mech_state.get(name) != state:
                lines.append(f"mechanism {_short(name, 80)} {state}")
        self._mech_state = mechs
        lines += self._wait_events(snap.get("llm_wait"))
        line = llm_text(snap.get("llm"))
        if line and line != self._llm_line:
            self._llm_line = line
            lines.append(line)
        return lines

    def _wait_events(self, wait: dict | None) -> list[str]:
        """A line when an LLM round starts, and one when it ends, with how long it took."""
        out = []
        if self._waiting is not None and wait is not self._waiting:
            done = self._waiting
            out.append(f"LLM answered level {done.get('level')} {_short(done.get('purpose'), 40)} after "
                       f"{_fmt_secs(time.monotonic() - done.get('started_monotonic', 0.0))}"
                       + (f" (~{done['tokens']:,} tokens streamed)" if done.get("tokens") else ""))
            self._waiting = None
        if wait is not None and wait is not self._waiting:
            self._waiting = wait
            out.append(wait_text(wait))
        return out

    # ---- terminal rendering --------------------------------------------------------------

    def _render(self) -> Panel:
        with self._lock:
            snap, age = self._snap, time.monotonic() - self._received
        title = (f"bilevel run {snap.get('run_id', '…')} · "
                 f"iteration {snap.get('iteration', 0)}/{snap.get('iterations', '?')}")
        gap = Text("")
        top = self._slots_view(snap) if snap.get("slots") or snap.get("waiting") else self._trial_view(snap)
        parts = [top, self._summary_view(snap, age)]
        if snap.get("llm_wait"):
            parts.insert(1, Text(wait_text(snap["llm_wait"]), style="bold magenta"))
        llm = llm_text(snap.get("llm"))
        if llm:
            parts.append(Text(llm, style="yellow" if (snap["llm"].get("unusable_streak") or 0) else ""))
        return Panel(Group(*parts, gap, self._mechanism_view(snap), gap, self._recent_view(snap)),
                     title=title, border_style="cyan")

    def _slots_view(self, snap: dict) -> Any:
        """Parallel slots: one row per busy slot (its trial, elapsed against budget, its CPUs or
        GPUs), then what the orchestrator waits for (an LLM round, a Level 2 session, trials)."""
        grid = Table.grid(padding=(0, 2))
        for trial in snap.get("slots") or []:
            started = trial.get("started_monotonic")
            elapsed = time.monotonic() - started if started is not None else 0.0
            grid.add_row(Text(f"slot {trial.get('slot')}", style="bold"), Text(f"trial {trial.get('seq')}"),
                         Text(f"{_fmt_secs(elapsed)} / {_fmt_secs(trial.get('budget_s'))}"),
                         Text(_short(trial.get("share", ""), 40), style="dim"),
                         Text(_fmt_changes(trial.get("changes"), 60), style="dim"))
        waiting = snap.get("waiting")
        return Group(grid, Text(f"waiting for {_short(waiting, 80)}" if waiting else "", style="yellow"))

    def _trial_view(self, snap: dict) -> Any:
        trial = snap.get("trial")
        if not trial:
            return Text("no trial running", style="dim")
        budget = float(trial.get("budget_s") or 0) or 1.0
        started = trial.get("started_monotonic")
        elapsed = time.monotonic() - started if started is not None else 0.0
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(ratio=1)
        grid.add_column(no_wrap=True)
        over = elapsed > budget
        bar_style = "yellow" if over else "green"
        limit = f" (killed at {_fmt_secs(trial['deadline_s'])})" if trial.get("deadline_s") else ""
        grid.add_row(Text(f"trial {trial.get('seq')}", style="bold"),
                     ProgressBar(total=budget, completed=min(elapsed, budget), complete_style=bar_style),
                     Text(f"{_fmt_secs(elapsed)} / {_fmt_secs(budget)}{limit}", style="yellow" if over else ""))
        return Group(grid, Text(_fmt_changes(trial.get("changes"), 200), style="dim"))  # Text: no markup

    def _summary_view(self, snap: dict, age: float) -> Table:
        best = snap.get("best") or {}
        budgets = snap.get("budgets") or {}
        t = Table.grid(padding=(0, 3))
        for _ in range(3):
            t.add_column()
        base = snap.get("baseline")
        delta = ""
        if base is not None and best.get("val_bpb") is not None:
            delta = f" (Δ {best['val_bpb'] - base:+.4f})"
        time_left = budgets.get("time_left_s")
        if time_left is not None:
            time_left = time_left - age  # keep the countdown moving between updates
        tokens, usd = budgets.get("tokens_left"), budgets.get("usd_left")
        t.add_row(Text.assemble(("best ", "bold"), _fmt_bpb(best.get("val_bpb")),
                                f" (trial {best.get('seq')})" if best.get("seq") is not None else "", delta),
                  Text.assemble(("baseline ", "bold"), _fmt_bpb(base)),
                  Text.assemble(("left ", "bold"), f"time {_fmt_secs(time_left)} · tokens ",
                                "∞" if tokens is None else f"{tokens:,}", " · USD ",
                                "∞" if usd is None else f"${usd:.2f}"))
        return t

    def _mechanism_view(self, snap: dict) -> Any:
        mechs = snap.get("mechanisms") or []
        if not mechs:
            return Text("no mechanisms", style="dim")
        t = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        t.add_column("mechanism")
        t.add_column("state")
        t.add_column("calls")
        for m in mechs:
            state = STATE_STYLE.get(m["state"], m["state"])
            calls = ", ".join(f"{h} {n}" for h, n in sorted((m.get("calls") or {}).items())) or "—"
            t.add_row(rich_escape(_short(m.get("name", "?"), 64)), state, calls)
        return t

    def _recent_view(self, snap: dict) -> Any:
        recent = sorted(snap.get("recent") or [], key=lambda r: r["seq"])[-self.recent:]
        if not recent:
            return Text("no results yet", style="dim")
        t = Table(box=None, show_header=True, header_style="bold", pad_edge=False, expand=True)
        for col in ("trial", "status", "val_bpb", "kept", "hypothesis"):
            t.add_column(col, no_wrap=True, overflow="ellipsis", ratio=1 if col == "hypothesis" else None)
        for r in recent:
            status = r.get("status", "?")
            style = "green" if r.get("kept") else ("red" if status not in ("ok", "running") else "")
            t.add_row(str(r["seq"]), status, _fmt_bpb(r.get("val_bpb")), "yes" if r.get("kept") else "",
                      rich_escape(_short(r.get("hypothesis"), 100)), style=style)
        return t
