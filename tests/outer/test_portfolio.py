"""Level 2's standing of each mechanism, from the evidence the iteration records hold.

Pure logic: the records are synthetic (tests/helpers/portfolio_records.py)."""

from __future__ import annotations

from bilevel.outer import portfolio

from portfolio_records import RECORDS, mech


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
