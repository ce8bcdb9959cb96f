"""The ablation's numbers: per-run results read from the journals, per-group summaries, flags and
the permutation test of whether group C differs from A and from B.

Why a separate module: the statistics must be checkable on synthetic results (tests feed
`RunResult`s directly), and the journal reading must stay read-only so a report can be written
while runs are live. Δval_bpb is always best − the run's shared baseline (the mean of repeated
baseline trials at the run's seed), so it is negative when a group improved.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView
from bilevel.runtime.vocabulary import Level

EXACT_LIMIT = 20_000        # enumerate every relabelling up to this many, else sample
RESAMPLES = 10_000          # Monte-Carlo relabellings
_TIE = 1e-12                # differences of means this close count as equal (float noise)


@dataclass
class RunResult:
    """One group × seed run, as its journal tells it."""

    group: str
    seed: int
    run: str                                   # the run folder, relative to the ablation folder
    levels: list[str]
    baseline: float                            # the shared baseline of this seed
    curve: list[float]                         # best-so-far: [baseline, after iteration 1, ...]
    iterations: int = 0                        # planned
    state: str | None = None
    state_reason: str | None = None
    kept: int = 0
    crashes: int = 0                           # finished trials that did not end ok
    trials: int = 0
    generated: int = 0                         # Level 2 sessions that produced a mechanism
    accepted: int = 0                          # ... that passed validation and were activated
    quarantined: int = 0
    # {id, name, origin, state, activated_at, quarantined, active, calls}
    mechanisms: list[dict] = field(default_factory=list)
    llm_calls: int = 0
    tokens: int = 0
    usd: float = 0.0

    @property
    def best(self) -> float:
        return self.curve[-1]

    @property
    def delta(self) -> float:
        return self.best - self.baseline

    @property
    def iterations_done(self) -> int:
        return len(self.curve) - 1


def read_run(run_dir: Path, *, group: str, seed: int, baseline: float, rel: str) -> RunResult:
    """A group run's result, read through a read-only journal (works while the run is live)."""
    with Journal.open_readonly(run_dir) as j:
        view = RunView.read(j)
    cfg = view.config
    sessions = [d.payload for d in view.decisions_at(Level.RESEARCH)]
    mechanisms = [{"id": m.mech_id, "name": m.name, "origin": m.origin.value, "state": m.state.value,
                   "quarantined": m.quarantined, "active": m.active, "activated_at": m.activated_at_iteration,
                   "calls": dict(m.calls)}
                  for m in view.mechanisms]
    return RunResult(
        group=group, seed=seed, run=rel, levels=list(cfg.get("levels") or []), baseline=baseline,
        curve=view.best_by_iteration(baseline), iterations=int(cfg.get("iterations") or 0),
        state=view.run.state if view.run else None, state_reason=view.run.state_reason if view.run else None,
        kept=sum(bool(t.kept) for t in view.finished if not t.is_baseline),
        crashes=sum(t.failed for t in view.finished),
        trials=len(view.finished),
        generated=sum(bool(s.get("source_ref")) for s in sessions),
        accepted=sum(bool(s.get("activated")) for s in sessions),
        quarantined=sum(m["quarantined"] for m in mechanisms), mechanisms=mechanisms,
        llm_calls=view.llm_totals["calls"], tokens=view.llm_totals["tokens"], usd=view.llm_totals["usd"],
    )


# ---- noise ----------------------------------------------------------------------------------


def pooled_sd(samples: Sequence[Sequence[float]]) -> float | None:
    """Within-seed run-to-run noise: the pooled standard deviation of repeated baseline trials.

    Pooled within seeds because the training seed shifts val_bpb by itself; mixing seeds would
    count that shift as noise. None when no seed has two values.
    """
    df = sum(len(s) - 1 for s in samples if len(s) >= 2)
    if df == 0:
        return None
    ss = sum(statistics.variance(s) * (len(s) - 1) for s in samples if len(s) >= 2)
    return math.sqrt(ss / df)


# ---- groups ---------------------------------------------------------------------------------


@dataclass
class GroupSummary:
    group: str
    levels: list[str]
    runs: list[RunResult]

    @property
    def deltas(self) -> list[float]:
        return [r.delta for r in self.runs]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.deltas) if self.runs else None

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.deltas) if len(self.runs) >= 2 else None

    def total(self, attr: str) -> float:
        return sum(getattr(r, attr) for r in self.runs)


def summarize(results: Sequence[RunResult], groups: Sequence[str], levels: dict[str, list[str]]
              ) -> list[GroupSummary]:
    """One summary per group, in the given order; a group with no run yet has an empty summary."""
    return [GroupSummary(g, levels[g], sorted((r for r in results if r.group == g), key=lambda r: r.seed))
            for g in groups]


def flags(results: Sequence[RunResult]) -> list[str]:
    """What a reader must not miss: Level 2 mechanisms that never ran, and runs cut short.

    The published experiment's mechanisms were never called; here a Level-2 run with an
    activated mechanism that has no journaled hook call, or with no activated mechanism at all,
    is flagged, so a "Level 2 helped" claim cannot rest on code that did nothing.
    """
    out = []
    for r in sorted(results, key=lambda r: (r.group, r.seed)):
        name = f"{r.group}-s{r.seed}"
        if "2" in r.levels:
            if not r.mechanisms:
                out.append(f"{name}: Level 2 is on but no mechanism was activated")
            for m in r.mechanisms:
                if sum(m["calls"].values()) == 0:
                    out.append(f"{name}: mechanism {m['name']} (id {m['id']}, activated for iteration "
                               f"{m['activated_at']}) was never called")
        if r.state != "finished" or r.iterations_done < r.iterations:
            why = f" ({r.state_reason})" if r.state_reason else ""
            out.append(f"{name}: {r.state or 'not started'} after {r.iterations_done} of {r.iterations} "
                       f"iterations{why}")
    return out


# ---- the permutation test -------------------------------------------------------------------


@dataclass
class TestResult:
    effect: float            # mean(x) - mean(y)
    p: float                 # two-sided
    method: str              # "exact" or "monte-carlo"
    permutations: int        # relabellings enumerated or drawn
    min_p: float             # the smallest p this test could give with these sample sizes


def _mean_diff(values: Sequence[float], idx: Sequence[int], total: float) -> float:
    s = sum(values[i] for i in idx)
    n, m = len(idx), len(values) - len(idx)
    return s / n - (total - s) / m


def permutation_test(x: Sequence[float], y: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0,
                     exact_limit: int = EXACT_LIMIT) -> TestResult:
    """Two-sided permutation test of the difference of means of `x` and `y`.

    Every relabelling of the pooled values is enumerated when there are at most `exact_limit`
    (p = the share whose |difference| reaches the observed one, the observed labelling included);
    otherwise `resamples` random relabellings with a seeded generator, p = (1 + hits) / (1 + resamples)
    so that a sampled p is never 0. Why a permutation test: a handful of seeds per group, no
    normality to assume.
    """
    if not x or not y:
        raise ValueError("both samples need at least one value")
    values = [*x, *y]
    n, total = len(x), sum(values)
    observed = statistics.fmean(x) - statistics.fmean(y)
    count = math.comb(len(values), n)
    if count <= exact_limit:
        diffs = [abs(_mean_diff(values, idx, total)) for idx in itertools.combinations(range(len(values)), n)]
        hits = sum(d >= abs(observed) - _TIE for d in diffs)
        top = max(diffs)
        min_p = sum(d >= top - _TIE for d in diffs) / count
        return TestResult(observed, hits / count, "exact", count, min_p)
    rng = random.Random(seed)
    idx = list(range(len(values)))
    hits = 0
    for _ in range(resamples):
        rng.shuffle(idx)
        hits += abs(_mean_diff(values, idx[:n], total)) >= abs(observed) - _TIE
    return TestResult(observed, (1 + hits) / (1 + resamples), "monte-carlo", resamples, 1 / (1 + resamples))


def compare(summaries: Sequence[GroupSummary], pairs: Sequence[tuple[str, str]] = (("C", "A"), ("C", "B")),
            seed: int = 0) -> list[tuple[str, str, TestResult | None]]:
    """The tests the issue asks for; None where a group has no finished run yet."""
    by = {s.group: s for s in summaries}
    out = []
    for a, b in pairs:
        if a in by and b in by:
            xa, xb = by[a].deltas, by[b].deltas
            out.append((a, b, permutation_test(xa, xb, seed=seed) if xa and xb else None))
    return out
