"""A code-mode iteration with stand-in trials: code edits on odd iterations, constants on even
ones (as typed edits into the code), a rejected edit journaled with its reason and the loop going
on, and a kept edit becoming the incumbent source."""

from __future__ import annotations

from bilevel.inner import code_edits as ce
from bilevel.inner import edits, tasks
from bilevel.inner.code_loop import CodeStep, iterate_code
from bilevel.inner.code_proposer import OfflineCodeProposer
from bilevel.inner.loop import LoopState, Step
from bilevel.inner.proposer import OfflineProposer


class NoMechs:
    def call_all(self, hook, *args):
        return []

    def review_chain(self, candidates, view):
        return iter(())

    def quarantine(self, name, hook, reason):
        raise AssertionError("no mechanism to quarantine")


def _setup(edits_to_propose, results):
    task = tasks.load("tinygpt")
    state = LoopState(space=task.space, incumbent=task.defaults(), best=3.0, baseline=3.0, active=sorted(task.space))
    ran = []
    it = iter(results)

    def run(config, hypothesis, script):
        ran.append((config, hypothesis, script))
        return {"trial_id": len(ran), **next(it)}

    proposals = iter(edits_to_propose)
    step = Step(mechs=NoMechs(), propose=lambda s, sec: None, run_trial=run, offline=OfflineProposer(task.space, 0))
    cstep = CodeStep(step=step, propose_edit=lambda s, sec, src: next(proposals, None), max_bytes=64 * 1024)
    return task, state, cstep, ran


def test_a_kept_code_edit_becomes_the_incumbent_source_and_constants_follow():
    edit = OfflineCodeProposer("tinygpt", 0).propose()
    task, state, cstep, ran = _setup([edit], [{"status": "ok", "val_bpb": 2.5}, {"status": "ok", "val_bpb": 2.9}])
    source = task.code_source()
    rec, source2 = iterate_code(state, cstep, source)
    assert rec["kept"] and rec["edit"] == edit["name"] and rec["changes"] == {}
    assert source2 == ran[0][2] != source and ce.apply_blocks(source, edit["blocks"], max_bytes=1 << 16) == source2
    rec2, source3 = iterate_code(state, cstep, source2)      # iteration 2: a constants step, in the code
    assert rec2["changes"] and not rec2["kept"] and source3 == source2
    consts = edits.read_constants(ran[1][2])
    assert all(consts[k] == v for k, v in rec2["changes"].items())
    assert edit["hypothesis"] in ran[0][1]


def test_an_edit_that_does_not_apply_is_rejected_and_the_iteration_goes_on():
    bad = {"name": "broken", "hypothesis": "h", "blocks": [ce.Block("no such line\n", "x\n")]}
    task, state, cstep, ran = _setup([bad], [{"status": "ok", "val_bpb": 3.5}])
    rec, source = iterate_code(state, cstep, task.code_source())
    assert rec["rejected"][0]["edit"] == "broken" and "not found" in rec["rejected"][0]["why"]
    assert rec["changes"] and rec.get("edit") is None and len(ran) == 1   # a constants step ran instead
    assert source == task.code_source()


def test_an_llm_answer_is_parsed_as_blocks():
    text = ("HYPOTHESIS: relu squared\n<<<<<<< SEARCH\n"
            "        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))\n=======\n"
            "        return x + self.drop(self.out(F.relu(self.fc(self.ln2(x))).square()))\n>>>>>>> REPLACE\n")
    task, state, cstep, ran = _setup([{"name": "llm", "text": text}], [{"status": "ok", "val_bpb": 2.0}])
    rec, source = iterate_code(state, cstep, task.code_source())
    assert rec["kept"] and rec["hypothesis"] == "relu squared" and ".square()" in source


def test_the_proposer_drafts_the_constants_of_even_iterations_only():
    """With an LLM, an even iteration's constants are its proposal; an odd iteration whose code edit
    did not apply falls back to the offline proposer, so it makes no second LLM call."""
    bad = {"name": "broken", "hypothesis": "h", "blocks": [ce.Block("no such line\n", "x\n")]}
    task, state, cstep, ran = _setup([bad], [{"status": "ok", "val_bpb": 3.5}, {"status": "ok", "val_bpb": 3.4}])
    asked = []
    key, value = "BETA2", 0.95

    def propose(s, sections):
        asked.append(s.iteration)
        return {"changes": {key: value}, "hypothesis": "the proposer's constants"}

    cstep.step.propose = propose
    rec1, source = iterate_code(state, cstep, task.code_source())
    rec2, _ = iterate_code(state, cstep, source)
    assert asked == [2]
    assert rec1["hypothesis"] != "the proposer's constants"
    assert rec2["changes"] == {key: value} and rec2["hypothesis"] == "the proposer's constants"
    assert edits.read_constants(ran[1][2])[key] == value
