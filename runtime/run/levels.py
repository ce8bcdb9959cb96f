"""The outer levels as the run drives them: a Level 1.5 cycle and a Level 2 session.

The decisions themselves are the outer package's (`outer/strategy.py`, `outer/research.py`);
this module gives them the run's evidence, journals what they decided (every research round's
prompt and output as artifacts), and carries the decision out on the loop's state and on the
run's mechanisms.
"""

from __future__ import annotations

import os
import signal

from bilevel.inner.loop import LoopState
from bilevel.outer import portfolio, research, strategy
from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView
from bilevel.runtime.llm.parsing import fence
from bilevel.runtime.run.llm_use import RunLLM
from bilevel.runtime.run.mechanisms import RunMechanisms
from bilevel.runtime.vocabulary import RESEARCH_INTENT, Level, LLMAnswer, MechanismState


def strategy_cycle(state: LoopState, llm: RunLLM, journal: Journal, min_active: int) -> None:
    """Level 1.5: freeze or unfreeze constants and write guidance (the LLM's, else the offline rule)."""
    cfg = strategy.SearchConfig(active=state.active, frozen=state.frozen, guidance=state.guidance)
    decision = None
    if llm.online:
        decision = llm.chat_json(strategy.llm_messages(cfg, state.history, fence), Level.STRATEGY, "strategy",
                                 schema=strategy.decision_schema(sorted(state.space)), schema_name="search_config")
    source = "llm" if decision else "offline"
    answer = (LLMAnswer.USABLE if decision else LLMAnswer.FAILED) if llm.online else None
    decision = decision or strategy.offline_decision(cfg, state.history)
    new = strategy.apply_decision(
        cfg, [n for n in decision.get("freeze", []) if isinstance(n, str)],
        [n for n in decision.get("unfreeze", []) if isinstance(n, str)],
        decision.get("guidance", ""), sorted(state.space), min_active)
    state.active, state.frozen, state.guidance = new.active, new.frozen, new.guidance
    # `llm`: what became of the LLM's answer (None: not asked); RunView counts it as honest fallback.
    journal.record_decision(level=Level.STRATEGY, kind=f"search_config:{source}",
                            payload={**new.to_dict(), "llm": answer}, iteration=state.iteration)


def research_session(state: LoopState, cycle: int, *, llm: RunLLM, mechs: RunMechanisms, journal: Journal,
                     seed: int) -> None:
    """Level 2: weigh the active mechanisms' standing, then add, replace or retire one.

    Crash-safe in two steps: the session's decision (with its module's artifact ref) is journaled
    as an intent before anything is activated, and the outcome after. A resume that finds the
    intent without its outcome (`RunView.research_in_flight`) carries out that same decision
    instead of holding the session again and drawing a different one.
    """
    intent = RunView.read(journal).research_in_flight(state.iteration)
    if intent is None:
        intent = _hold_session(state, cycle, llm=llm, mechs=mechs, journal=journal, seed=seed)
        journal.event(RESEARCH_INTENT, intent)
        crash_point("research:intent")
    payload = {k: v for k, v in intent.items() if k != "iteration"}
    activated = False
    if payload["accepted"]:
        activated, why, mech_id = _activate_once(intent, mechs, journal)
        payload.update(activated=activated, mech_id=mech_id, activation=why)
        crash_point("research:activated")
    # A replaced mechanism goes only once its successor is running; a retire needs no successor.
    if payload["target"] and (payload["action"] == "retire" or activated):
        payload["retired"] = _retire_once(payload, mechs, journal)
    journal.record_decision(level=Level.RESEARCH, kind="research_session", payload=payload,
                            iteration=state.iteration)


def _hold_session(state: LoopState, cycle: int, *, llm: RunLLM, mechs: RunMechanisms, journal: Journal,
                  seed: int) -> dict:
    """The session itself (the LLM's rounds, else the offline rule): its decision as a payload."""
    view = RunView.read(journal)
    stand = portfolio.standing(mechs.rows(), [r.payload for r in view.iterations], state.iteration)
    if llm.online:
        def chat(messages: list[dict], round_name: str) -> str:
            return llm.chat_text(messages, Level.RESEARCH, f"research:{round_name}")
        session = research.llm_session(chat, fence, state.history, stand, mechs.validate)
    else:
        used = [m.name for m in view.mechanisms]
        session = research.offline_session(stand, used, seed, cycle, mechs.validate)
    put = journal.artifacts.put
    target_id = mechs.live_id(session.target) if session.target else None
    return {"cycle": cycle, "iteration": state.iteration, "origin": session.origin, "name": session.name,
            "action": session.action, "target": session.target, "target_id": target_id, "why": session.why,
            "accepted": session.accepted, "reason": session.reason,
            "source_ref": put(session.source) if session.source else None,
            "rounds": [{"round": r["round"], "prompt_ref": put(r["prompt"]), "output_ref": put(r["output"])}
                       for r in session.rounds]}


def _activate_once(intent: dict, mechs: RunMechanisms, journal: Journal) -> tuple[bool, str, int]:
    """Activate the intent's module, unless a crash left it activated already (then say so)."""
    it = intent["iteration"]
    for m in RunView.read(journal).mechanisms:
        if m.source_ref == intent["source_ref"] and m.activated_at_iteration == it + 1:
            running = mechs.is_live(m.mech_id)
            return running, "active (activation finished on resume)" if running else m.state.value, m.mech_id
    source = journal.artifacts.get_text(intent["source_ref"])
    return mechs.activate(intent["name"], intent["origin"], source, it)


def _retire_once(payload: dict, mechs: RunMechanisms, journal: Journal) -> int | None:
    """Retire the target, or name it as retired when a crash came after its retirement."""
    retired = mechs.retire(payload["target"])
    if retired is None and payload.get("target_id") is not None:
        row = RunView.read(journal).mechanism(payload["target_id"])
        if row is not None and row.state == MechanismState.RETIRED:
            return row.mech_id
    return retired


def crash_point(name: str) -> None:
    """A test hook: `BILEVEL_CRASH_AT=<name>` SIGKILLs the run here, as a power cut would; the
    crash-safety tests use it between journaling an intent and its outcome. Unset, it does nothing."""
    if os.environ.get("BILEVEL_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
