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

from bilevel.runtime.journal.artifacts import ArtifactStore
from bilevel.runtime.journal.records import Decision, Iteration, LLMUse, Mechanism, RunInfo, Trial
from bilevel.runtime.journal.schema import TRIAL_STATUSES
from bilevel.runtime.journal.store import Journal
from bilevel.runtime.vocabulary import RESEARCH_INTENT, DecisionSource, Level, LLMAnswer, MechanismOrigin, SlotState

# The journal event that says which slot (CPU set, GPU ids) an attempt ran in; written as the
# attempt's row is, before its container starts.
SLOT_EVENT = "trial_slot"
# The journal event that sets the run's grace, measured on its baseline (`TrialRunner`).
GRACE_EVENT = "trial_grace"


@dataclass(frozen=True)
class RunView:
    run: RunInfo | None
    attempts: tuple[Trial, ...]            # every attempt, in the order they were started
    iterations: tuple[Iteration, ...]      # the iteration records, in the order they were written
    mechanisms: tuple[Mechanism, ...]
    decisions: tuple[Decision, ...]
    llm_levels: tuple[LLMUse, ...]
    llm_totals: dict[str, Any]             # {calls, tokens, usd}: the status contract's `llm`
    slot_events: tuple[dict, ...] = ()     # {trial_id, seq, slot, cpuset, cpus, gpus, gpu_count}
    research_intents: tuple[dict, ...] = ()  # Level 2 decisions journaled before they were carried out
    call_refs: tuple[dict, ...] = ()       # artifact refs of large hook inputs and outputs
    llm_answers: tuple[tuple[int, str, str], ...] = ()  # (iteration, level, LLMAnswer), in order
    grace_events: tuple[dict, ...] = ()    # {grace_s, overhead_s, trial_id, policy_grace_s}

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
            slot_events=tuple(e["payload"] for e in journal.events(SLOT_EVENT)),
            research_intents=tuple(e["payload"] for e in journal.events(RESEARCH_INTENT)),
            call_refs=tuple(journal.mechanism_call_refs()),
            llm_answers=_llm_answers(iteration_events, decisions),
            grace_events=tuple(e["payload"] for e in journal.events(GRACE_EVENT)),
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

    def research_in_flight(self, iteration: int) -> dict | None:
        """The Level 2 decision in flight at `iteration`: journaled as an intent, its outcome not
        yet (a crash came between them). A resume carries out this one, never a new draw."""
        if self.decided(Level.RESEARCH, iteration):
            return None
        return next((i for i in reversed(self.research_intents)
                     if isinstance(i, dict) and i.get("iteration") == iteration), None)

    # ---- artifacts ------------------------------------------------------------------------------

    def artifact_uses(self) -> list[tuple[str, str]]:
        """(ref, where the run used it) for every artifact the journal names, in journal order."""
        uses: list[tuple[str, str]] = []
        for t in self.attempts:
            label = f"trial {t.seq}" + (f" attempt {t.attempt}" if t.attempt > 1 else "")
            uses += [(t.script_sha, f"{label}'s script"), (t.log_ref, f"{label}'s log"),
                     (t.diff_ref, f"{label}'s diff")]
        uses += [(m.source_ref, f"mechanism {m.mech_id} ({m.name})'s source") for m in self.mechanisms]
        for c in self.call_refs:
            uses.append((c["ref"], f"mechanism {c['mech_id']}'s call {c['seq']} ({c['hook']}) {c['field']}"))
        for d in self.decisions_at(Level.RESEARCH):
            p = d.payload if isinstance(d.payload, dict) else {}
            uses.append((p.get("source_ref"), f"Level 2 session {p.get('cycle')}'s module"))
            for r in p.get("rounds") or []:
                for key in ("prompt", "output"):
                    uses.append((r.get(f"{key}_ref"), f"Level 2 session {p.get('cycle')}'s {r.get('round')} {key}"))
        seen: set[tuple[str, str]] = set()
        return [u for u in uses if u[0] and not (u in seen or seen.add(u))]

    def damaged_artifacts(self, store: ArtifactStore) -> list[tuple[str, str, str]]:
        """(ref, where it was used, what is wrong) for each artifact that fails verification."""
        problems: dict[str, str | None] = {}
        out = []
        for ref, where in self.artifact_uses():
            if ref not in problems:
                problems[ref] = store.verify(ref)
            if problems[ref]:
                out.append((ref, where, problems[ref]))
        return out

    # ---- code mode -----------------------------------------------------------------------------

    @property
    def code_edits_tried(self) -> set[str]:
        """Names of the code edits proposed so far, run or rejected (the offline library draws each once)."""
        names = {r.payload.get("edit") for r in self.iterations}
        names |= {x.get("edit") for r in self.iterations for x in r.rejected if isinstance(x, dict)}
        return {n for n in names if isinstance(n, str)}

    def kept_code_trials(self) -> list[Trial]:
        """The code-mode trials an iteration kept, in order: the report shows each one's diff."""
        by_id = {t.trial_id: t for t in self.attempts}
        kept = [by_id.get(r.trial_id) for r in self.iterations if r.kept]
        return [t for t in kept if t is not None and t.is_code]

    def record_of(self, trial_id: int | None) -> Iteration | None:
        return next((r for r in self.iterations if r.trial_id is not None and r.trial_id == trial_id), None)

    @property
    def grace(self) -> dict | None:
        """The run's measured grace (the last one journaled), or None: the policy's grace_s holds."""
        return self.grace_events[-1] if self.grace_events else None

    # ---- slots: where each attempt ran ---------------------------------------------------------

    def slot_of(self, trial_id: int) -> dict | None:
        """The slot share an attempt ran in (None for attempts journaled before slots were)."""
        return next((e for e in self.slot_events if e["trial_id"] == trial_id), None)

    @property
    def gpu_hours(self) -> float:
        """GPU-hours spent: each attempt's GPUs x its wall time (a running one counts from its end)."""
        by_id = {t.trial_id: t for t in self.attempts}
        total = 0.0
        for e in self.slot_events:
            t = by_id.get(e["trial_id"])
            if t is not None and t.wall_seconds:
                total += e.get("gpu_count", 0) * t.wall_seconds
        return total / 3600

    def slots(self) -> list[dict[str, Any]]:
        """Per slot: its share, its state (running or idle), its current or last attempt, and the
        attempts it ran; `status --json`'s `slots`, the display and the report's timeline read it."""
        by_id = {t.trial_id: t for t in self.attempts}
        out: dict[int, dict[str, Any]] = {}
        for e in self.slot_events:
            t = by_id.get(e["trial_id"])
            if t is None:
                continue
            s = out.setdefault(e["slot"], {"slot": e["slot"], "cpuset": e.get("cpuset"), "cpus": e.get("cpus"),
                                           "gpus": e.get("gpus"), "attempts": []})
            s.update(cpuset=e.get("cpuset"), cpus=e.get("cpus"), gpus=e.get("gpus"))  # its latest share
            s["attempts"].append({"trial_id": t.trial_id, "seq": t.seq, "iteration": t.iteration,
                                  "kind": t.kind.value, "status": t.status.value, "started_at": t.started_at,
                                  "ended_at": t.ended_at})
        for s in out.values():
            last = s["attempts"][-1]
            running = last["status"] == "running" and self.run is not None and self.run.state == "running"
            s["state"] = (SlotState.RUNNING if running else SlotState.IDLE).value
            s["trial"] = last if running else None
            s["trials"] = len(s["attempts"])
        return [out[k] for k in sorted(out)]
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
            "slots": [{k: v for k, v in s.items() if k != "attempts"} for s in self.slots()],
            "gpu_hours": round(self.gpu_hours, 6),
            **({"grace": self.grace} if self.grace else {}),
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
