"""The outer levels as the run drives them: a Level 1.5 cycle and a Level 2 session.

The decisions themselves are the outer package's (`outer/strategy.py`, `outer/research.py`);
this module gives them the run's evidence, journals what they decided (every research round's
prompt and output as artifacts), and carries the decision out on the loop's state and on the
run's mechanisms.
"""

from __future__ import annotations

from bilevel.inner.loop import LoopState
from bilevel.outer import portfolio, research, strategy
from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView
from bilevel.runtime.llm.parsing import fence
from bilevel.runtime.run.llm_use import RunLLM
from bilevel.runtime.run.mechanisms import RunMechanisms
from bilevel.runtime.vocabulary import Level, LLMAnswer


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
    """Level 2: weigh the active mechanisms' standing, then add, replace or retire one."""
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
    payload = {"cycle": cycle, "origin": session.origin, "name": session.name,
               "action": session.action, "target": session.target, "why": session.why,
               "accepted": session.accepted, "reason": session.reason,
               "source_ref": put(session.source) if session.source else None,
               "rounds": [{"round": r["round"], "prompt_ref": put(r["prompt"]), "output_ref": put(r["output"])}
                          for r in session.rounds]}
    activated = False
    if session.accepted:
        activated, why, mech_id = mechs.activate(session.name, session.origin, session.source, state.iteration)
        payload.update(activated=activated, mech_id=mech_id, activation=why)
    # A replaced mechanism goes only once its successor is running; a retire needs no successor.
    if session.target and (session.action == "retire" or activated):
        payload["retired"] = mechs.retire(session.target)
    journal.record_decision(level=Level.RESEARCH, kind="research_session", payload=payload,
                            iteration=state.iteration)
