"""Level 1 in code mode: one iteration that edits the training code, or its constants.

Odd iterations try a code edit first (the offline library or the LLM): applied on the host as
text (`code_edits`), checked by parsing and by size, never run here. An edit that does not apply
is a rejected proposal, with its reason in the iteration's record, and the iteration goes on with
a constants step from the offline proposer. Even iterations, and every iteration once the
proposer has no edit left, take a constants step as params mode does (`loop.pick`: the
mechanisms' suggestions and reviews, the constraints enforced, the proposer's constants: the
LLM's with an LLM), written as typed edits into the incumbent's code.
So mechanisms work in both modes. Acceptance and the record are `loop.conclude`'s.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .code_edits import CodeEditError, apply_blocks, check_script, parse_blocks
from .edits import EditError, apply, read_constants
from .loop import LoopState, Step, conclude, gather, pick


@dataclass
class CodeStep:
    """What a code-mode iteration needs besides a params-mode `Step`."""

    step: Step                                                   # its run_trial takes (config, hypothesis, script)
    propose_edit: Callable[[LoopState, list[dict], str], dict | None]   # (state, sections, source) -> edit
    max_bytes: int


def config_of(script: str, state: LoopState) -> dict:
    """The constants of the search space as the script has them (the loop's view of a trial)."""
    consts = read_constants(script)
    return {k: consts.get(k, v) for k, v in state.incumbent.items()}


def _constants_step(state: LoopState, cstep: CodeStep, view: dict, effects: dict, merged: dict,
                    source: str, proposal: dict | None) -> tuple[dict, str, list]:
    chosen, rejected = pick(state, cstep.step, view, effects, merged, proposal)
    # Invariant 2: the values were checked against the space; they go into the code as literals.
    script = apply(source, chosen["changes"])
    return chosen, script, rejected


def iterate_code(state: LoopState, cstep: CodeStep, source: str, resumed: dict | None = None) -> tuple[dict, str]:
    """Run one code-mode iteration; returns its record and the incumbent source after it.
    `resumed` ({"script", "hypothesis"}) reruns an interrupted trial's recorded script instead."""
    state.iteration += 1
    view = state.view()
    effects: dict[str, dict] = {}
    rejected: list = []
    chosen = script = None
    if resumed is not None:
        chosen = {"changes": {}, "hypothesis": resumed["hypothesis"], "source": "resumed"}
        script, merged = resumed["script"], None
    else:
        sections, merged = gather(state, cstep.step, view, effects)
    if resumed is None and state.iteration % 2 == 1:
        edit = cstep.propose_edit(state, sections, source)
        if edit is not None:
            try:
                blocks = edit["blocks"] if "blocks" in edit else parse_blocks(str(edit.get("text", "")))
                script = apply_blocks(source, list(blocks), max_bytes=cstep.max_bytes)
                chosen = {"changes": {}, "hypothesis": _hypothesis(edit), "source": "proposer",
                          "edit": edit.get("name")}
            except CodeEditError as exc:
                rejected.append({"source": "proposer", "changes": {}, "edit": edit.get("name"),
                                 "why": f"code edit rejected: {exc}"})
    if script is None:
        # The proposer's constants: the LLM's (or the offline proposer's) on an even iteration; on an
        # odd one, whose code edit did not apply, the offline proposer's (one LLM call an iteration).
        st = cstep.step
        proposal = st.propose(state, sections) if state.iteration % 2 == 0 else st.offline.propose(
            state.incumbent, state.active, state.history)
        try:
            chosen, script, more = _constants_step(state, cstep, view, effects, merged, source, proposal)
        except EditError as exc:   # a kept edit removed a constant: the incumbent runs again
            chosen, script, more = {"changes": {}, "hypothesis": "incumbent again", "source": "fallback"}, source, [
                {"source": "proposer", "changes": {}, "why": f"typed edit refused: {exc}"}]
        rejected += more
    check_script(script, max_bytes=cstep.max_bytes)
    config = config_of(script, state)
    chosen = {**chosen, "changes": {k: v for k, v in config.items() if state.incumbent.get(k) != v}}
    step = cstep.step
    run = step.run_trial
    step = Step(mechs=step.mechs, propose=step.propose, run_trial=lambda c, h: run(c, h, script),
                offline=step.offline, mode=step.mode, refuse=step.refuse)
    result = run(config, chosen["hypothesis"], script)
    record = conclude(state, step, iteration=state.iteration, chosen=chosen, config=config, result=result,
                      view=view, effects=effects, rejected=rejected)
    record["edit"] = chosen.get("edit")
    return record, (script if record["kept"] else source)


def _hypothesis(edit: dict) -> str:
    if "hypothesis" in edit:
        return str(edit["hypothesis"])[:500]
    m = re.search(r"^HYPOTHESIS:\s*(.+)$", str(edit.get("text", "")), re.M)
    return (m.group(1).strip() if m else "an LLM code edit")[:500]
