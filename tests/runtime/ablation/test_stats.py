"""The ablation's statistics on synthetic results: no daemon, no journal."""

from __future__ import annotations

import math
import random

import pytest

from bilevel.runtime.ablation.protocol import GROUPS
from bilevel.runtime.ablation.stats import (
    compare,
    flags,
    permutation_test,
    pooled_sd,
    summarize,
)

from ablation_results import mech, result

# ---- the permutation test -------------------------------------------------------------------


def test_exact_enumeration_matches_a_hand_computation():
    # Pooled 1,2,3,4, two per side: the six relabellings give differences -2, -1, 0, 0, 1, 2.
    # |d| >= |-2| for two of the six, so p = 1/3; no relabelling can do better than that.
    t = permutation_test([1.0, 2.0], [3.0, 4.0])
    assert t.method == "exact" and t.permutations == 6
    assert t.effect == pytest.approx(-2.0)
    assert t.p == pytest.approx(1 / 3) and t.min_p == pytest.approx(1 / 3)
    # Unequal sizes, pooled 0,1,2, one on the left: differences -1.5, 0, 1.5, so p = 2/3.
    t = permutation_test([0.0], [1.0, 2.0])
    assert t.permutations == 3 and t.effect == pytest.approx(-1.5) and t.p == pytest.approx(2 / 3)


def test_a_known_large_effect_gives_a_small_p_exact_and_sampled():
    rng = random.Random(1)
    x = [rng.gauss(-0.05, 0.003) for _ in range(6)]
    y = [rng.gauss(0.0, 0.003) for _ in range(6)]
    exact = permutation_test(x, y)                     # C(12, 6) = 924: enumerated
    assert exact.method == "exact" and exact.permutations == 924
    assert exact.p == pytest.approx(2 / 924)           # only the observed split and its mirror reach it
    assert exact.effect == pytest.approx(sum(x) / 6 - sum(y) / 6) and exact.effect < -0.04
    x = [rng.gauss(-0.05, 0.003) for _ in range(12)]
    y = [rng.gauss(0.0, 0.003) for _ in range(12)]
    sampled = permutation_test(x, y, resamples=2000, seed=3)   # C(24, 12) is far past the limit
    assert sampled.method == "monte-carlo" and sampled.permutations == 2000
    assert sampled.p == pytest.approx(1 / 2001)


def test_no_effect_gives_p_values_that_are_not_small():
    rng = random.Random(7)
    ps = []
    for _ in range(300):
        x = [rng.gauss(0.0, 0.01) for _ in range(4)]
        y = [rng.gauss(0.0, 0.01) for _ in range(4)]
        ps.append(permutation_test(x, y).p)
    # Under no effect p is about uniform: about 5% at or below 0.05, and a median near 0.5.
    assert sum(p <= 0.05 for p in ps) / len(ps) < 0.10
    assert 0.35 < sorted(ps)[len(ps) // 2] < 0.7


def test_sampled_p_is_seeded_and_never_zero():
    x, y = [0.1, 0.2, 0.15, 0.3] * 4, [0.12, 0.22, 0.1, 0.25] * 4
    a = permutation_test(x, y, resamples=500, seed=5, exact_limit=10)
    b = permutation_test(x, y, resamples=500, seed=5, exact_limit=10)
    c = permutation_test(x, y, resamples=500, seed=6, exact_limit=10)
    assert a.method == "monte-carlo" and a.p == b.p and a.p > 0
    assert 0.2 < a.p <= 1 and 0.2 < c.p <= 1                  # a small shift inside the spread


def test_empty_sample_is_refused():
    with pytest.raises(ValueError):
        permutation_test([], [1.0])


# ---- noise, curves, groups ------------------------------------------------------------------


def test_pooled_sd_keeps_seed_offsets_out_of_the_noise():
    # Variances 2 and 8, one degree of freedom each; the 10-bpb offset between seeds is not noise.
    assert pooled_sd([[1.0, 3.0], [10.0, 14.0]]) == pytest.approx(math.sqrt(5))
    assert pooled_sd([[1.0], [2.0]]) is None


def test_group_summary_mean_sd_and_comparisons():
    results = [result("A", 1, -0.01), result("A", 2, -0.03), result("C", 1, -0.05, kept=2),
               result("C", 2, -0.07, kept=1)]
    a, b, c = summarize(results, ["A", "B", "C"], GROUPS)
    assert a.mean == pytest.approx(-0.02) and a.sd == pytest.approx(math.sqrt(2) * 0.01)
    assert b.runs == [] and b.mean is None
    assert c.total("kept") == 3
    tests = compare([a, b, c])
    assert [(x, y) for x, y, _ in tests] == [("C", "A"), ("C", "B")]
    assert tests[0][2].effect == pytest.approx(-0.04) and tests[1][2] is None


def test_flags_name_level2_mechanisms_that_were_never_called():
    results = [
        result("C", 1, -0.01, mechanisms=[mech({"context": 3, "suggest": 3}), mech({}, "doe", 2)]),
        result("D", 1, 0.0),                                  # Level 2 on, nothing activated
        result("A", 1, 0.0),                                  # Level 1 only: nothing to flag
        result("B", 1, 0.0, planned=5),                       # 3 of its 5 iterations
    ]
    got = flags(results)
    assert any("C-s1" in f and "doe" in f and "never called" in f for f in got)
    assert not any("tabu" in f for f in got)
    assert any(f.startswith("D-s1") and "no mechanism was activated" in f for f in got)
    assert any(f.startswith("B-s1") and "3 of 5" in f for f in got)
    assert not any(f.startswith("A-s1") for f in got)
