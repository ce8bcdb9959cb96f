"""`progress.png`: val_bpb per trial, kept trials, failures, the running best, the baseline and
mechanism activations, drawn from a `RunView`; and the one atomic figure writer."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

from bilevel.runtime.files import atomic_write
from bilevel.runtime.journal.records import Trial
from bilevel.runtime.journal.view import RunView
from bilevel.runtime.outputs.safe_text import for_plot
from bilevel.runtime.vocabulary import MechanismState

COLORS = ["tab:purple", "tab:blue", "tab:orange", "tab:brown", "tab:cyan", "tab:olive"]
STYLE = {"font.size": 13, "axes.titlesize": 15, "axes.labelsize": 14, "legend.fontsize": 12}


def levels_of(config: dict) -> list[str]:
    """The run's levels as strings ("1", "1.5", "2"), whether configured as a list or "1,1.5,2"."""
    raw = config.get("levels") or ["1"]
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    return [str(x).strip() for x in items if str(x).strip()]


def is_offline(config: dict) -> bool:
    llm = config.get("llm")
    return llm is None or str(llm).lower() == "offline"


def title(view: RunView) -> str:
    cfg = view.config
    llm = "LLM: OFFLINE" if is_offline(cfg) else f"LLM: {cfg.get('llm')}"
    run_id = view.run.run_id if view.run else "?"
    return f"run {run_id} · task {cfg.get('task', '?')} · {llm} · levels {', '.join(levels_of(cfg))}"


def activation_x(view: RunView, iteration: int) -> float:
    """Where a mechanism activated at `iteration` goes on the trial axis: just before the first
    trial of that iteration (it shaped that trial), or after the last trial if none ran yet."""
    first: dict[int, int] = {}
    for t in view.trials:
        first.setdefault(t.iteration, t.seq)
    later = [s for it, s in first.items() if it >= iteration]
    if later:
        return min(later) - 0.5
    return (max(first.values()) + 0.5) if first else 0.0


def save_figure(fig, path: Path) -> Path:
    """Write a figure atomically, so a reader never sees half a PNG."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write(path, buf.getvalue())


def plot_progress(view: RunView, path: Path) -> Path:
    """Draw the run's progress into `path` (PNG)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(12, 7), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        ymax = _scale(ax, view)
        _trials(ax, view, ymax)
        _running_best(ax, view)
        _off_axis_marks(ax, view, ymax)
        _activations(ax, view)
        _frame(ax, view)
        return save_figure(fig, path)


def _ok(view: RunView) -> list[Trial]:
    return [t for t in view.trials if t.status == "ok"]


def _scale(ax, view: RunView) -> float | None:
    """Fit the y axis to the interesting band: a wild discarded trial must not flatten the rest.
    Returns the top of the axis (None when no trial finished ok)."""
    values = [t.val_bpb for t in _ok(view)]
    if not values:
        ax.text(0.5, 0.5, "no finished trials yet", transform=ax.transAxes, ha="center",
                va="center", color="0.4", fontsize=16)
        return None
    lo, hi = min(values), max(values)
    anchor = view.baseline.val_bpb if view.baseline else hi
    span = max(anchor - lo, 1e-3)
    ceiling = min(hi, anchor + 1.5 * span)
    pad = 0.08 * max(ceiling - lo, 1e-3)
    ax.set_ylim(lo - 1.6 * pad, ceiling + 2.5 * pad)
    return ceiling + 2.5 * pad


def _trials(ax, view: RunView, ymax: float | None) -> None:
    """Discarded and kept trials as points, the baseline as a line and a diamond."""
    def shown(ts: list[Trial]) -> tuple[list, list]:
        inside = [t for t in ts if ymax is None or t.val_bpb <= ymax]
        return [t.seq for t in inside], [t.val_bpb for t in inside]

    proposals = [t for t in _ok(view) if not t.is_baseline]
    discarded = [t for t in proposals if not t.kept]
    kept = [t for t in proposals if t.kept]
    if discarded:
        ax.scatter(*shown(discarded), s=36, color="0.65", zorder=2, label="discarded")
    if kept:
        ax.scatter(*shown(kept), s=110, color="tab:green", edgecolor="darkgreen", zorder=4, label="kept")
    base = view.baseline
    if base:
        ax.axhline(base.val_bpb, color="0.25", linestyle="--", linewidth=1.4, zorder=1,
                   label=f"baseline {base.val_bpb:.4f}")
        ax.scatter([base.seq], [base.val_bpb], s=110, marker="D", color="0.25", zorder=4)


def _running_best(ax, view: RunView) -> None:
    steps = view.best_by_seq()
    if not steps:
        return
    xs, ys = [s for s, _ in steps], [b for _, b in steps]
    xs.append(max(t.seq for t in view.trials) + 0.5)
    ys.append(ys[-1])
    ax.step(xs, ys, where="post", color="tab:green", linewidth=2.2, zorder=3, label="running best")
    b = view.best
    if b:
        ax.annotate(f"best {b.val_bpb:.4f} (trial {b.seq})", (b.seq, b.val_bpb), xytext=(0, -22),
                    textcoords="offset points", ha="center", color="darkgreen", fontsize=12)


def _off_axis_marks(ax, view: RunView, ymax: float | None) -> None:
    """Failed trials as red crosses, off-scale ones as triangles, along the top edge."""
    from matplotlib.transforms import blended_transform_factory

    top = blended_transform_factory(ax.transData, ax.transAxes)
    failed = [t for t in view.trials if t.failed]
    off = [t for t in _ok(view) if ymax is not None and t.val_bpb > ymax]
    if failed:
        ax.scatter([t.seq for t in failed], [0.97] * len(failed), transform=top, marker="x", s=90,
                   color="tab:red", linewidth=2.2, zorder=5, clip_on=False, label="failed")
    if off:
        ax.scatter([t.seq for t in off], [0.97] * len(off), transform=top, marker="^", s=60,
                   color="0.65", zorder=5, clip_on=False, label="off scale")


def _activations(ax, view: RunView) -> None:
    """A dotted line and a label per activated mechanism, with its quarantine or retirement."""
    from matplotlib.transforms import blended_transform_factory

    top = blended_transform_factory(ax.transData, ax.transAxes)
    shown = [m for m in view.mechanisms if m.activated_at_iteration is not None]
    for i, m in enumerate(shown):
        x = activation_x(view, m.activated_at_iteration)
        color = COLORS[i % len(COLORS)]
        ax.axvline(x, color=color, linestyle=":", linewidth=1.8, zorder=1)
        label = f"{for_plot(m.name, 48)} (iteration {m.activated_at_iteration})"
        if m.state == MechanismState.QUARANTINED:
            label += f"\n quarantined at iteration {m.quarantined_at_iteration}"
        elif m.state == MechanismState.RETIRED and m.retired_after is not None:
            label += f"\n retired after iteration {m.retired_after}"
        # Staggered heights so labels of nearby activations do not overprint each other.
        ax.text(x, 0.92 - 0.09 * (i % 3), " " + label, transform=top, ha="left", va="top", color=color,
                fontsize=11, zorder=6, bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 1})


def _frame(ax, view: RunView) -> None:
    ax.set_title(title(view))
    ax.set_xlabel("trial (seq)")
    ax.set_ylabel("val_bpb (lower is better)")
    if view.trials:
        ax.set_xlim(-0.8, max(t.seq for t in view.trials) + 0.8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=6, frameon=False)


STATUS_COLORS = {"ok": "tab:green", "crash": "tab:red", "timeout": "tab:orange", "oom": "tab:purple",
                 "invalid": "tab:brown", "interrupted": "tab:gray", "infra": "black", "running": "tab:cyan"}


def _seconds(stamp: str | None, origin: datetime) -> float | None:
    return None if not stamp else (datetime.fromisoformat(stamp) - origin).total_seconds()


def plot_slots(view: RunView, path: Path) -> Path:
    """`slots.png`: one row per parallel slot, one bar per attempt (start to end), coloured by outcome."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    slots = view.slots()
    starts = [a["started_at"] for s in slots for a in s["attempts"]]
    origin = datetime.fromisoformat(min(starts)) if starts else datetime.now(UTC)
    now = (datetime.now(UTC) - origin).total_seconds()
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(12, 1.6 + 0.9 * max(len(slots), 1)), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        seen = set()
        for row, s in enumerate(slots):
            for a in s["attempts"]:
                x0 = _seconds(a["started_at"], origin)
                x1 = _seconds(a["ended_at"], origin)
                width = max((now if x1 is None else x1) - x0, 0.1)
                ax.barh(row, width, left=x0, height=0.6, color=STATUS_COLORS.get(a["status"], "tab:gray"),
                        edgecolor="white")
                ax.text(x0 + width / 2, row, str(a["seq"]), ha="center", va="center", fontsize=9, color="white")
                seen.add(a["status"])
        ax.set_yticks(range(len(slots)), [f"slot {s['slot']}" for s in slots])
        ax.invert_yaxis()
        ax.set_xlabel("seconds since the first trial started")
        ax.set_title(f"slots · {title(view)}", fontsize=11)
        ax.legend(handles=[Patch(color=STATUS_COLORS[k], label=k) for k in STATUS_COLORS if k in seen],
                  loc="upper right", fontsize=9)
        return save_figure(fig, path)
