"""Level 2's add / replace / retire decisions, offline and from an LLM's decision line.

Pure logic: the records are synthetic, the validation step is a stand-in. The end-to-end
versions (a journaled retire through the real LLM client, and the offline replace in a run)
live in tests/scenarios/test_run_llm.py and tests/scenarios/test_run.py.
"""

from __future__ import annotations

from bilevel.outer import portfolio, research

from portfolio_records import RECORDS, mech, rec


def accept_all(source: str) -> tuple[bool, str]:
    return True, "smoke: ok"


def test_offline_adds_then_replaces_the_idle_then_retires_when_the_library_is_spent():
    lib = sorted(research.library_sources())
    first = research.offline_session([], [], seed=0, cycle=0, validate=accept_all)
    assert (first.action, first.target, first.accepted) == ("add", None, True) and first.name in lib
    idle = portfolio.standing([mech(first.name, 1)], [rec(i) for i in range(1, 7)], iteration=6)
    second = research.offline_session(idle, [first.name], seed=0, cycle=1, validate=accept_all)
    assert (second.action, second.target) == ("replace", first.name)
    assert second.name not in (first.name,) and second.name in lib
    assert first.name in second.rounds[0]["output"]           # the reason is journaled with the session
    assert second.why == f"{first.name} decided no kept trial in 6 iterations (patience 4)"
    spent = research.offline_session(idle, lib, seed=0, cycle=2, validate=accept_all)
    assert (spent.action, spent.target, spent.accepted, spent.source) == ("retire", first.name, False, None)
    done = research.offline_session([], lib, seed=0, cycle=3, validate=accept_all)
    assert (done.action, done.target, done.accepted) == ("add", None, False)


def test_llm_decision_line_is_parsed_and_checked_against_the_active_set():
    active = ["tabu", "ucb bandit"]
    assert research._decision("DECISION: retire tabu\nbecause", active)[:2] == ("retire", "tabu")
    assert research._decision("**DECISION: replace ucb bandit**", active)[:2] == ("replace", "ucb bandit")
    assert research._decision("decision: ADD", active)[:2] == ("add", None)
    # A target that is not active, or no decision at all, adds: nothing is switched off by mistake.
    assert research._decision("DECISION: retire plateau", active)[:2] == ("add", None)
    assert research._decision("I would retire tabu", active)[:2] == ("add", None)


def test_llm_retire_skips_the_generate_round():
    asked = []

    def chat(messages: list[dict], round_name: str) -> str:
        asked.append(round_name)
        return "DECISION: retire tabu" if round_name == "specify" else "notes"

    stand = portfolio.standing([mech("tabu", 1)], RECORDS, iteration=5)
    s = research.llm_session(chat, lambda text, tag: text, [], stand, accept_all)
    assert asked == ["explore", "critique", "specify"]
    assert (s.action, s.target, s.accepted, s.source) == ("retire", "tabu", False, None)


def test_research_prompts_fence_every_untrusted_part():
    from bilevel.runtime.llm.parsing import fence

    from fences import assert_fenced, assert_not_fenced

    prompts = {}

    def chat(messages: list[dict], round_name: str) -> str:
        assert "CANARY" not in messages[0]["content"]
        prompts[round_name] = messages[1]["content"]
        if round_name == "specify":
            return "DECISION: add\nCANARY-SPEC"
        if round_name in ("generate", "repair"):
            return "```python\nclass Mechanism:\n    name = 'x'  # CANARY-MODULE\n```"
        return f"CANARY-REPLY-{round_name}"

    stand = portfolio.standing([mech("CANARY-NAME", 1)], RECORDS, iteration=5)
    trace = [{"iteration": 1, "hypothesis": "CANARY-HYPOTHESIS", "mechanism": "CANARY-NAME"}]
    research.llm_session(chat, fence, trace, stand, lambda src: (False, "CANARY-REASON from the sandbox"))
    assert list(prompts) == ["explore", "critique", "specify", "generate", "repair"]
    assert_fenced(prompts["explore"], "CANARY-HYPOTHESIS")
    assert_fenced(prompts["explore"], "CANARY-NAME")
    assert_fenced(prompts["critique"], "CANARY-REPLY-explore")
    assert_fenced(prompts["specify"], "CANARY-REPLY-critique")
    assert_fenced(prompts["specify"], "CANARY-NAME")
    assert_fenced(prompts["generate"], "CANARY-SPEC")
    assert_fenced(prompts["repair"], "CANARY-MODULE")
    # The validation's reason quotes the module (and what the sandbox said of it): data too.
    assert_fenced(prompts["repair"], "CANARY-REASON")
    assert_not_fenced(prompts["repair"], "Return a corrected complete module")
