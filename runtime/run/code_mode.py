"""Code mode's part of a run: the incumbent source, the code proposer, and each iteration.

The run's schedule hands its iterations here when `--mode code` (`Schedule.iterate`): the
proposer (the task's offline library, or the LLM with the source, the trace and the interface
contract fenced as data) returns an edit, `inner/code_loop.py` applies it as text and runs the
trial, and this module journals the record. The incumbent source is the script of the last kept
trial, read back from the artifact store, so a resume continues from the same code.
"""

from __future__ import annotations

from bilevel.inner import tasks
from bilevel.inner.code_loop import CodeStep, iterate_code
from bilevel.inner.code_proposer import OfflineCodeProposer, code_messages
from bilevel.inner.loop import Step
from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView
from bilevel.runtime.llm.parsing import fence
from bilevel.runtime.vocabulary import Level, LLMAnswer, TrialKind


def incumbent_source(journal: Journal, view: RunView, task: tasks.Task) -> str:
    """The script of the last kept iteration's trial, else the task's code-mode script."""
    by_id = {t.trial_id: t for t in view.attempts}
    for rec in reversed(view.iterations):
        t = by_id.get(rec.trial_id) if rec.kept else None
        if t is not None and t.script_sha:
            return journal.artifacts.get_text(t.script_sha)
    return task.code_source()


class CodeMode:
    """Built once per run (or resume); `iterate` replaces the params-mode iteration."""

    def __init__(self, schedule, task: tasks.Task) -> None:
        self.task = task
        view = RunView.read(schedule.journal)
        self.source = incumbent_source(schedule.journal, view, task)
        self.offline = OfflineCodeProposer(task.name, schedule.cfg.seed, tried=view.code_edits_tried)
        self.max_bytes = int(schedule.trials.policy.evaluation["max_script_kb"]) * 1024

    def propose_edit(self, schedule, state, sections: list[dict], source: str) -> dict | None:
        if not schedule.llm.online:
            return self.offline.propose()
        msgs = code_messages(source=source, best=state.best, history=state.history, sections=sections,
                             guidance=state.guidance, fence=fence)
        text = schedule.llm.chat_text(msgs, Level.INNER, "propose_code")
        schedule.llm_answer = LLMAnswer.USABLE if ">>>>>>> REPLACE" in text else LLMAnswer.FAILED
        return {"name": "llm", "text": text}

    def resumed(self, schedule, seq: int | None, done) -> dict | None:
        """An interrupted (or finished but unrecorded) trial's recorded script, to run it again."""
        if seq is None and done is None:
            return None
        view = RunView.read(schedule.journal)
        t = done or next(a for a in reversed(view.attempts) if a.seq == seq)
        return {"script": schedule.journal.artifacts.get_text(t.script_sha), "hypothesis": t.hypothesis or ""}

    def iterate(self, schedule, seq: int | None = None, done=None) -> dict:
        it = schedule.state.iteration + 1
        schedule.mechs.iteration = it
        kinds, seqs = iter([TrialKind.PROPOSAL, TrialKind.REPEAT]), iter([seq])
        incumbent = self.source

        finished = iter([done] if done is not None else [])

        def run_trial(config: dict, hypothesis: str, script: str) -> dict:
            t = next(finished, None)
            if t is not None:  # already run and journaled: its result, not a second run
                next(kinds)
                return {"trial_id": t.trial_id, "seq": t.seq, "status": t.status, "val_bpb": t.val_bpb,
                        "training_seconds": t.training_seconds, "peak_mem_mb": t.peak_mem_mb, "reason": t.reason}
            return schedule.trials.run(config, hypothesis, kind=next(kinds), iteration=it, seq=next(seqs, None),
                                       script=script, incumbent=incumbent)

        step = Step(mechs=schedule.mechs, propose=schedule.propose, run_trial=run_trial,
                    offline=schedule.offline, mode=schedule.cfg.acceptance)
        cstep = CodeStep(step=step, max_bytes=self.max_bytes,
                         propose_edit=lambda state, sections, source: self.propose_edit(schedule, state, sections,
                                                                                         source))
        schedule.llm_answer = None
        record, self.source = iterate_code(schedule.state, cstep, self.source,
                                           resumed=self.resumed(schedule, seq, done))
        schedule.judge_llm_answer(record)
        schedule.journal.record_iteration(record)
        schedule.progress()
        schedule.log.info("iteration", iteration=it, status=record["status"], val_bpb=record["val_bpb"],
                          kept=record["kept"], source=record["source"], edit=record.get("edit"))
        return record
