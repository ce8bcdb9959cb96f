"""The ablation's report: `ABL/ablation.md` and `ABL/ablation.png`, from the manifest and the journals.

Why: the comparison is only worth trusting if a reader sees, next to each effect, its p-value,
the noise floor, whether Level 2's mechanisms actually ran, and how to reproduce it. Everything
is read read-only, so the report can be rewritten while runs are live; files are replaced
atomically, as the run report does.
"""

from __future__ import annotations

import statistics
from datetime import UTC, datetime
from pathlib import Path

from bilevel.runtime.ablation.protocol import GROUPS, read_manifest, run_folder
from bilevel.runtime.ablation.stats import GroupSummary, RunResult, TestResult, compare, flags, read_run, summarize
from bilevel.runtime.files import atomic_write
from bilevel.runtime.outputs.plot import save_figure
from bilevel.runtime.outputs.safe_text import for_markdown
from bilevel.runtime.outputs.text import cell

COLORS = {"A": "tab:blue", "B": "tab:orange", "C": "tab:green", "D": "tab:purple"}
NAMES = {"A": "Level 1", "B": "Levels 1 + 1.5", "C": "Levels 1 + 1.5 + 2", "D": "Levels 1 + 2"}


def collect(out: Path, manifest: dict) -> list[RunResult]:
    """Every group run of the ablation that has a journal, with its seed's shared baseline."""
    results = []
    for group in manifest["groups"]:
        for seed in manifest["protocol"]["seeds"]:
            rel = run_folder(group, seed)
            base = manifest["baselines"].get(str(seed))
            if base and (out / rel / "journal.db").exists():
                results.append(read_run(out / rel, group=group, seed=seed, baseline=base["mean"], rel=rel))
    return results


def _f(value: float | None, digits: int = 4, sign: bool = True) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _llm_line(protocol: dict) -> str:
    if str(protocol["llm"]).lower() == "offline":
        return ("**OFFLINE**: no LLM was called. Level 1 used the seeded offline proposer, Level 1.5 its "
                "rules, and Level 2 drew mechanisms from the reference library (`outer/library/`) through the "
                "same validation and sandbox, so groups C and D test library mechanisms, not LLM-written ones.")
    url = f" at `{protocol['llm_base_url']}`" if protocol.get("llm_base_url") else ""
    return f"`{protocol['llm']}`{url}, the same model at every level of every group"


def _budget_line(manifest: dict, n_runs: int) -> str:
    tokens, usd = manifest.get("per_run_max_tokens"), manifest.get("per_run_max_usd")
    if tokens is None and usd is None:
        return "none"
    parts = []
    if tokens is not None:
        parts.append(f"{tokens:,} tokens")
    if usd is not None:
        parts.append(f"${usd:.2f}")
    return (f"{' and '.join(parts)} per group run: the ablation's `--max-tokens`/`--max-usd` split evenly "
            f"across its {n_runs} group runs (the baseline runs make no LLM call)")


def _groups_table(summaries: list[GroupSummary]) -> list[str]:
    out = ["| group | levels | runs | Δval_bpb mean ± sd | Δ per seed | kept | crashes "
           "| mechanisms generated / accepted / quarantined | LLM calls | tokens | USD |",
           "|---|---|---:|---|---|---:|---:|---|---:|---:|---:|"]
    for s in summaries:
        mean = "—" if s.mean is None else _f(s.mean) + (f" ± {s.sd:.4f}" if s.sd is not None else " (one seed)")
        per_seed = ", ".join(f"s{r.seed} {_f(r.delta)}" for r in s.runs) or "—"
        out.append(f"| {s.group} | {', '.join(s.levels)} | {len(s.runs)} | {mean} | {per_seed} "
                   f"| {int(s.total('kept'))} | {int(s.total('crashes'))} "
                   f"| {int(s.total('generated'))} / {int(s.total('accepted'))} / {int(s.total('quarantined'))} "
                   f"| {int(s.total('llm_calls'))} | {int(s.total('tokens')):,} | ${s.total('usd'):.4f} |")
    return out


def _tests(tests: list[tuple[str, str, TestResult | None]], noise: float | None) -> list[str]:
    out = ["Two-sided permutation test of the per-seed Δval_bpb, effect = mean Δ of the first group − mean Δ "
           "of the second (negative: the first group went lower). Every relabelling is enumerated when there are "
           "few; otherwise 10,000 seeded random relabellings.", "",
           "| comparison | effect (bpb) | effect / noise σ | p | test | smallest p these sample sizes allow |",
           "|---|---:|---:|---:|---|---:|"]
    if not tests:
        return out + ["| (needs C and A or B, each with a finished run) | | | | | |"]
    for a, b, t in tests:
        if t is None:
            out.append(f"| {a} vs {b} | — | — | — | not enough runs yet | — |")
            continue
        ratio = f"{t.effect / noise:+.2f}" if noise else "—"
        out.append(f"| {a} vs {b} | {_f(t.effect)} | {ratio} | {t.p:.3f} | {t.method}, {t.permutations:,} "
                   f"relabellings | {t.min_p:.3f} |")
    if any(t is not None and t.min_p > 0.05 for _, _, t in tests):
        out += ["", "With this few seeds per group no difference can reach p < 0.05, whatever the effect: "
                "read the effects against the noise floor, and add seeds to test them."]
    return out


def _mechanisms_table(results: list[RunResult]) -> list[str]:
    rows = [(r, m) for r in sorted(results, key=lambda r: (r.group, r.seed)) for m in r.mechanisms]
    if not rows:
        return ["No mechanism was activated in any run."]
    out = ["| run | id | mechanism | origin | activated for iteration | state | calls per hook | total |",
           "|---|---:|---|---|---:|---|---|---:|"]
    for r, m in rows:
        calls = ", ".join(f"{h} {n}" for h, n in sorted(m["calls"].items())) or "**never called**"
        state = m["state"]
        out.append(f"| {r.group}-s{r.seed} | {m['id']} | {cell(m['name'], 40)} | {m['origin']} "
                   f"| {m['activated_at'] if m['activated_at'] is not None else '—'} | {state} | {calls} "
                   f"| {sum(m['calls'].values())} |")
    return out


def _runs_table(results: list[RunResult]) -> list[str]:
    out = ["| run | levels | state | iterations | baseline | best | Δ | finished trials | report |",
           "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in sorted(results, key=lambda r: (r.group, r.seed)):
        out.append(f"| {r.group}-s{r.seed} | {', '.join(r.levels)} | {r.state} | {r.iterations_done} / "
                   f"{r.iterations} | {r.baseline:.6f} | {r.best:.6f} | {_f(r.delta, 6)} | {r.trials} "
                   f"| [{r.run}/report.md]({r.run}/report.md) |")
    return out


def markdown(out: Path, manifest: dict, results: list[RunResult]) -> str:
    p = manifest["protocol"]
    groups = manifest["groups"]
    summaries = summarize(results, groups, GROUPS)
    noise = manifest.get("noise_floor")
    bases = manifest.get("baselines") or {}
    base_text = "; ".join(f"seed {s}: mean {b['mean']:.6f} of {len(b['values'])} trials "
                          f"({', '.join(f'{v:.6f}' for v in b['values'])}, run `{b['run']}`)"
                          for s, b in bases.items()) or "not measured yet"
    n_runs = len(groups) * len(p["seeds"])
    lines = [
        f"# Ablation `{out.name}`", "",
        "The four groups of *Bilevel Autoresearch* (arXiv 2603.23420), under one protocol, with the controls the "
        "published experiment lacked.", "",
        f"- **Task:** {p['task']} · per-trial training budget {p['budget']:g} s · {p['iterations']} iterations per "
        f"run · seeds {', '.join(map(str, p['seeds']))} · acceptance strict · Level 1.5 every "
        f"{p['strategy_every']} iterations, Level 2 every {p['research_every']} Level 1.5 cycles (and before the "
        "first iteration)",
        f"- **LLM:** {_llm_line(p)}",
        "- **Protocol:** each group × seed is one ordinary, uninterrupted run in its own folder: the best is never "
        "reset mid-run and the trace is never truncated (no fresh runner, empty history or reset best per batch, "
        "unlike the published experiment). The group runs' configs differ only in `levels`; every run is "
        "resumable (`bilevel resume`), reportable (`bilevel report`) and replayable (`bilevel replay`).",
        f"- **Noise floor:** σ = {_f(noise, 6, sign=False)} bpb, the "
        f"{manifest.get('noise_floor_method', 'pooled within-seed standard deviation of the baseline trials')}, "
        "measured once and passed to every group run",
        f"- **Shared baselines** (each run's Δ is against its seed's): {base_text}",
        f"- **LLM budgets:** {_budget_line(manifest, n_runs)}",
        f"- **Reproduce or resume:** `{manifest.get('command', '')}`",
        "", "## Groups", "", *_groups_table(summaries),
        "", "![best-so-far Δval_bpb per group](ablation.png)",
        "", "## Does C differ from A and from B beyond noise?", "", *_tests(compare(summaries), noise),
        "", "## Flags", "",
    ]
    lines += [f"- ⚠ {for_markdown(f)}" for f in flags(results)] or [
        "None: every Level 2 run called its mechanisms, and every run finished its iterations."]
    lines += ["", "## Mechanism hook calls", "", *_mechanisms_table(results),
              "", "## Runs", "", *_runs_table(results),
              "", f"_Written {datetime.now(UTC).isoformat(timespec='seconds')} by `bilevel ablate` from "
              f"`{out.name}/ablation.json` and the runs' journals._", ""]
    return "\n".join(lines)


def plot(manifest: dict, results: list[RunResult], path: Path) -> Path:
    """Best-so-far Δval_bpb against iteration: thin per-seed lines, a thick mean per group, the noise band."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    p = manifest["protocol"]
    noise = manifest.get("noise_floor")
    with matplotlib.rc_context({"font.size": 13, "axes.titlesize": 14, "axes.labelsize": 14,
                                "legend.fontsize": 12}):
        fig = Figure(figsize=(12, 7.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        ax.axhline(0, color="0.2", linestyle="--", linewidth=1.4, zorder=2, label="shared baseline (Δ = 0)")
        if noise:
            ax.axhspan(-noise, noise, color="0.55", alpha=0.22, zorder=1, label=f"noise floor ±σ (σ = {noise:.4f})")
            ax.axhspan(-2 * noise, 2 * noise, color="0.55", alpha=0.10, zorder=1, label="±2σ")
        for group in manifest["groups"]:
            runs = [r for r in results if r.group == group]
            if not runs:
                continue
            color = COLORS.get(group, "0.3")
            for r in runs:
                xs = list(range(len(r.curve)))
                ax.plot(xs, [v - r.baseline for v in r.curve], drawstyle="steps-post", color=color, alpha=0.4,
                        linewidth=1.3, zorder=3)
            longest = max(len(r.curve) for r in runs)
            mean = [statistics.fmean(r.curve[i] - r.baseline for r in runs if i < len(r.curve))
                    for i in range(longest)]
            ax.plot(range(longest), mean, drawstyle="steps-post", color=color, linewidth=3.2, zorder=4,
                    label=f"{group}: {NAMES.get(group, group)} — mean of {len(runs)} seed(s), final {mean[-1]:+.4f}")
        if not results:
            ax.text(0.5, 0.5, "no group run yet", transform=ax.transAxes, ha="center", va="center",
                    color="0.4", fontsize=16)
        llm = "LLM: OFFLINE (library mechanisms)" if str(p["llm"]).lower() == "offline" else f"LLM: {p['llm']}"
        ax.set_title(f"Ablation · task {p['task']} · {llm} · {p['iterations']} iterations of {p['budget']:g} s"
                     f" · seeds {', '.join(map(str, p['seeds']))}\nthick: group mean · thin: one seed each")
        ax.set_xlabel("iteration")
        ax.set_ylabel("best-so-far val_bpb − baseline\n(lower is better)")
        ax.set_xlim(-0.2, max([p["iterations"], *(len(r.curve) - 1 for r in results)]) + 0.2)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
        save_figure(fig, path)
    return path


def write_report(out: Path) -> dict[str, Path]:
    """Write ablation.md and ablation.png into the ablation folder; return their paths by name."""
    out = Path(out)
    manifest = read_manifest(out)
    if manifest is None:
        raise ValueError(f"{out} holds no ablation (no ablation.json)")
    results = collect(out, manifest)
    paths = {"ablation.md": out / "ablation.md", "ablation.png": out / "ablation.png"}
    plot(manifest, results, paths["ablation.png"])
    atomic_write(paths["ablation.md"], markdown(out, manifest, results))
    return paths
