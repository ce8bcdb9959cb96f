"""`RunView`: the one read model of a run's journal. Every fact a reader shows is derived here.

Why one place: the run's state rebuild on resume, `bilevel status`, the report, the live display
and the ablation statistics all ask the same questions (which trial is the baseline, which is
the best, what state a mechanism is in, what the LLM cost). Each answer is defined once below, on
typed records (`records.py`), so no two views of a run can disagree.

A view is a snapshot: `RunView.read(journal)` reads everything once (a handful of queries, a few
milliseconds for an overnight run) and never changes. It works on a writer or a read-only journal,
so it also serves `status` and `report` while a run is live.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bilevel.runtime.journal.records import Decision, Iteration, LLMUse, Mechanism, RunInfo, Trial
from bilevel.runtime.journal.schema import TRIAL_STATUSES
from bilevel.runtime.journal.store import Journal
from bilevel.runtime.vocabulary import DecisionSource, Level, LLMAnswer, MechanismOrigin


@dataclass(frozen=True)
class RunView:
    run: RunInfo | None
    attempts: tuple[Trial, ...]            # every attempt, in the order they were started
    iterations: tuple[Iteration, ...]      # the iteration records, in the order they were written
    mechanisms: tuple[Mechanism, ...]
    decisions: tuple[Decision, ...]
    llm_levels: tuple[LLMUse, ...]
    llm_totals: dict[str, Any]             # {calls, tokens, usd}: the status contract's `llm`
    llm_answers: tuple[tuple[int, str, str], ...] = ()  # (iteration, level, LLMAnswer), in order

    @classmethod
    def read(cls, journal: Journal) -> RunView:
        run = journal.run()
        decisions = tuple(Decision.from_row(d) for d in journal.decisions())
        retired = _retirements(decisions)
        calls = journal.mechanism_call_counts()
        iteration_events = journal.events("iteration")
        return cls(
            run=RunInfo.from_row(run) if run else None,
            attempts=tuple(Trial.from_row(t) for t in journal.trials()),
            iterations=tuple(Iteration.from_payload(e["payload"] or {}) for e in iteration_events),
            mechanisms=tuple(Mechanism.from_row(m, calls.get(m["mech_id"], {}), retired.get(m["mech_id"]))
                             for m in journal.mechanisms()),
            decisions=decisions,
            llm_levels=tuple(LLMUse(**{**row, "failed": row["failed"] or 0, "usd": float(row["usd"]),
                                       "purposes": row["purposes"] or ""})
                             for row in journal.llm_by_level()),
            llm_totals=journal.llm_totals(),
            llm_answers=_llm_answers(iteration_events, decisions),
        )

    # ---- the run ----------------------------------------------------------------------------

    @property
    def config(self) -> dict:
        return self.run.config if self.run else {}

    @property
    def shared_baseline(self) -> float | None:
        """An ablation's group run measures no baseline of its own: it is given the shared one."""
        return self.config.get("baseline_val_bpb")

    # ---- trials -----------------------------------------------------------------------------

    @property
    def trials(self) -> list[Trial]:
        """One per seq, in seq order: its finished attempt, else its latest."""
        by_seq: dict[int, Trial] = {}
        for t in self.attempts:
            prior = by_seq.get(t.seq)
            if prior is None or not prior.finished:
                by_seq[t.seq] = t
        return [by_seq[s] for s in sorted(by_seq)]

    @property
    def finished(self) -> list[Trial]:
        """Distinct finished trials (one per seq), in seq order."""
        return [t for t in self.trials if t.finished]

    @property
    def to_rerun(self) -> list[Trial]:
        """The latest attempt of each seq that ended interrupted or lost to the engine."""
        return [t for t in self.trials if t.to_rerun]

    def trial_counts(self) -> dict[str, int]:
        """Attempts by status, every status present (zeros included) for a stable shape."""
        counts = dict.fromkeys(TRIAL_STATUSES, 0)
        for t in self.attempts:
            counts[t.status] += 1
        return counts

    @property
    def iteration_reached(self) -> int:
        return max((t.iteration for t in self.finished), default=0)

    # ---- baseline and best: defined here and nowhere else --------------------------------------

    @property
    def baselines(self) -> list[Trial]:
        """The baseline trials that ended ok, in seq order."""
        return [t for t in self.finished if t.is_baseline and t.status == "ok"]

    @property
    def baseline(self) -> Trial | None:
        """The run's own baseline: its first ok baseline trial."""
        return self.baselines[0] if self.baselines else None

    @property
    def baseline_val_bpb(self) -> float | None:
        if self.baseline is not None:
            return self.baseline.val_bpb
        return self.shared_baseline

    @property
    def incumbents(self) -> list[Trial]:
        """The trials that count for "best" (`Trial.is_incumbent`), in seq order."""
        return [t for t in self.finished if t.is_incumbent]

    @property
    def best(self) -> Trial | None:
        """The best incumbent trial: the lowest val_bpb among the baseline and the kept trials."""
        return min(self.incumbents, key=lambda t: t.val_bpb, default=None)

    @property
    def best_val_bpb(self) -> float | None:
        """The best val_bpb, the shared baseline counting as one where the run has no baseline."""
        values = [t.val_bpb for t in self.incumbents]
        if self.baseline is None and self.shared_baseline is not None:
            values.append(self.shared_baseline)
        return min(values, default=None)

    def best_by_seq(self) -> list[tuple[int, float]]:
        """The running best after each incumbent trial: (seq, best so far)."""
        out, best = [], float("inf")
        for t in self.incumbents:
            best = min(best, t.val_bpb)
            out.append((t.seq, best))
        return out

    def best_by_iteration(self, start: float) -> list[float]:
        """Best so far after each recorded iteration, starting at `start` (the baseline)."""
        curve = [start]
        for rec in sorted(self.iterations, key=lambda r: r.iteration):
            kept = [t.val_bpb for t in self.incumbents if 0 < t.iteration <= rec.iteration]
            curve.append(min([start, *kept]))
        return curve

    # ---- mechanisms, decisions, LLM use -------------------------------------------------------

    def mechanism(self, mech_id: int) -> Mechanism | None:
        return next((m for m in self.mechanisms if m.mech_id == mech_id), None)

    def decisions_at(self, level: str) -> list[Decision]:
        return [d for d in self.decisions if d.level == level]

    def decided(self, level: str, iteration: int) -> bool:
        """Whether a Level 1.5 or Level 2 decision was recorded at this iteration."""
        return any(d.level == level and d.iteration == iteration for d in self.decisions)

    def record_of(self, trial_id: int | None) -> Iteration | None:
        return next((r for r in self.iterations if r.trial_id is not None and r.trial_id == trial_id), None)

    @property
    def online(self) -> bool:
        """Whether the run was given an LLM (a run that fell back to offline mid-way still was)."""
        return self.config.get("llm", "offline") != "offline"

    def llm_decisions(self) -> dict[str, dict[str, int]]:
        """Per level: who took each decision (`DecisionSource`), and how many LLM answers were
        sought (`asked`) and how many were usable. In a run with an LLM every decision the
        offline rule took is a fallback, whatever the reason (an unusable answer, a failed call,
        a spent budget under --offline-fallback): the counts never pass an offline run for an
        LLM one."""
        out = {lv.value: {"asked": 0, "usable": 0, **dict.fromkeys(DecisionSource, 0)} for lv in Level}
        offline = DecisionSource.FALLBACK if self.online else DecisionSource.OFFLINE
        for rec in self.iterations:
            row = out[Level.INNER]
            answer = rec.payload.get("llm")
            if rec.source in ("proposer", "fallback"):
                llm_chose = rec.source == "proposer" and (answer == LLMAnswer.USABLE or (
                    "llm" not in rec.payload and self.online))   # older journals did not say
                row[DecisionSource.LLM if llm_chose else offline] += 1
            elif rec.source != "resumed":
                row[DecisionSource.MECHANISM] += 1
        for d in self.decisions:
            if d.level not in (Level.STRATEGY, Level.RESEARCH) or not isinstance(d.payload, dict):
                continue
            row = out[d.level]
            if d.level == Level.STRATEGY:
                by_llm = d.kind.endswith(":llm")
            else:
                by_llm = d.payload.get("origin") == MechanismOrigin.GENERATED
                by_llm = by_llm and _research_answer(d.payload) == LLMAnswer.USABLE
            row[DecisionSource.LLM if by_llm else offline] += 1
        for _it, level, answer in self.llm_answers:
            out[level]["asked"] += 1
            out[level]["usable"] += answer == LLMAnswer.USABLE
        return out

    @property
    def unusable_streak(self) -> int:
        """How many LLM answers in a row, up to now and across levels, were not usable."""
        n = 0
        for _it, _level, answer in reversed(self.llm_answers):
            if answer == LLMAnswer.USABLE:
                break
            n += 1
        return n

    def llm_status(self) -> dict[str, Any]:
        """The status contract's `llm` object ({calls, tokens, usd}), with additive keys."""
        return {**self.llm_totals, "decisions": self.llm_decisions(), "unusable_streak": self.unusable_streak}

    # ---- `bilevel status --json` ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The status object of DESIGN's CLI contract."""
        run = self.run
        return {
            "run_id": run.run_id if run else None,
            "state": run.state.value if run else None,
            "state_reason": run.state_reason if run else None,
            "trials": self.trial_counts(),
            "baseline_val_bpb": self.baseline_val_bpb,
            "best_val_bpb": self.best_val_bpb,
            "mechanisms": [
                {"id": m.mech_id, "name": m.name, "origin": m.origin.value, "state": m.state.value,
                 "active": m.active, "quarantined": m.quarantined, "calls": dict(m.calls)}
                for m in self.mechanisms
            ],
            "llm": self.llm_status(),
        }


def _retirements(decisions: Iterable[Decision]) -> dict[int, int | None]:
    """mech_id -> the iteration after which a Level 2 session retired it."""
    return {d.payload["retired"]: d.iteration for d in decisions
            if d.level == Level.RESEARCH and isinstance(d.payload, dict) and d.payload.get("retired")}


def _research_answer(payload: dict) -> str:
    """A Level 2 LLM session's answer: usable when its module was accepted or it retired one."""
    if payload.get("accepted") or payload.get("action") == "retire":
        return LLMAnswer.USABLE
    return LLMAnswer.FAILED if not payload.get("source_ref") else LLMAnswer.REFUSED


def _llm_answers(iteration_events: list[dict], decisions: Iterable[Decision]) -> tuple[tuple[int, str, str], ...]:
    """Every decision the LLM was asked for, with what became of it, in the order the schedule
    takes them: at iteration i, Level 1 first, then Level 1.5, then Level 2 (timestamps can tie)."""
    out = []
    for e in iteration_events:
        p = e["payload"] or {}
        if p.get("llm"):
            out.append((p.get("iteration") or 0, Level.INNER.value, p["llm"]))
    for d in decisions:
        if not isinstance(d.payload, dict):
            continue
        if d.level == Level.STRATEGY and d.payload.get("llm"):
            out.append((d.iteration or 0, d.level, d.payload["llm"]))
        elif d.level == Level.RESEARCH and d.payload.get("origin") == MechanismOrigin.GENERATED:
            out.append((d.iteration or 0, d.level, _research_answer(d.payload)))
    return tuple(sorted(out, key=lambda a: (a[0], float(a[1]))))
