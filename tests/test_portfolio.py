"""Level 2's add / replace / retire decisions, from the evidence the iteration records hold.

Pure logic: the records are synthetic, the validation step is a stand-in. The end-to-end
versions (a journaled retire through the real LLM client, and the offline replace in a run)
live in tests/test_run_llm.py and tests/test_run.py.
"""

from __future__ import annotations

from bilevel.outer import portfolio, research


def rec(iteration: int, source: str = "proposer", kept: bool = False, effects: dict | None = None) -> dict:
    return {"iteration": iteration, "source": source, "kept": kept, "effects": effects or {}, "rejected": []}


def mech(name: str, since: int, active: bool = True) -> dict:
    return {"name": name, "origin": "library", "activated_at_iteration": since, "active": active,
            "calls": {"suggest": 3}}


RECORDS = [
    rec(1, "proposer", kept=True, effects={"tabu": {"constraints": {"forbid": ["X"]}}}),  # informs only
    rec(2, "bandit", kept=True),                                                           # a win
    rec(3, "proposer", kept=True, effects={"critic": {"reviewed": {"in": 2, "out": 1}}}),  # a win by review
    rec(4, "bandit", kept=False),                                                          # shaped, no win
    rec(5, "proposer", effects={"voter": {"accept": "discard"}}),
]


def test_standing_counts_only_what_decided_a_candidate_or_verdict():
    stand = {s["name"]: s for s in portfolio.standing(
        [mech("tabu", 1), mech("bandit", 1), mech("critic", 1), mech("voter", 4), mech("gone", 1, active=False)],
        RECORDS, iteration=5)}
    assert set(stand) == {"tabu", "bandit", "critic", "voter"}       # a retired one has no standing
    assert (stand["tabu"]["shaped"], stand["tabu"]["wins"]) == (0, 0)
    assert (stand["bandit"]["shaped"], stand["bandit"]["wins"]) == (2, 1)
    assert (stand["critic"]["shaped"], stand["critic"]["wins"]) == (1, 1)
    assert (stand["voter"]["shaped"], stand["voter"]["iterations_active"]) == (1, 2)
    assert stand["bandit"]["effects"] == {"chosen": 2, "chosen_kept": 1}
    assert stand["tabu"]["calls"] == {"suggest": 3}


def test_only_records_since_activation_count():
    # The bandit's win at iteration 2 predates this activation (a same-named successor, say).
    stand = portfolio.standing([mech("bandit", 3)], RECORDS, iteration=5)
    assert stand[0]["wins"] == 0 and stand[0]["shaped"] == 1 and stand[0]["iterations_active"] == 3


def test_idlest_needs_patience_and_no_win():
    stand = portfolio.standing([mech("tabu", 1), mech("bandit", 1), mech("voter", 4)], RECORDS, iteration=5)
    assert portfolio.idlest(stand) == "tabu"                 # 5 iterations, nothing decided
    assert portfolio.idlest(stand, patience=6) is None        # nobody has had 6 iterations yet
    young = portfolio.standing([mech("voter", 4)], RECORDS, iteration=5)
    assert portfolio.idlest(young) is None                    # 2 iterations: still new


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


def test_report_reads_a_session_as_a_decision():
    from bilevel.runtime.outputs.report import _session_text

    text = _session_text({"action": "replace", "target": "tabu", "why": "tabu decided no kept trial in 6 iterations",
                          "name": "doe", "origin": "library", "accepted": True, "activated": True,
                          "activation": "active", "retired": 1})
    assert text == ("replace tabu (tabu decided no kept trial in 6 iterations); doe (library): activated; "
                    "retired mechanism 1; module: active")
