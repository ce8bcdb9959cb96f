"""The reference mechanism doe: a design that covers every stratum of each constant once."""

from __future__ import annotations

import math

import pytest

from bilevel.runtime.mechanisms.validation import SPACE

import mechanism_fixtures as fx
from library_fixtures import source, view_with

make_mech = fx.make_mech
mech_client = fx.mech_client


@pytest.mark.docker
def test_doe_covers_every_stratum_once(make_mech):
    m = make_mech(source("doe"), seed=2)
    view = view_with([])
    points = [m.call("suggest", view).value[0]["changes"] for _ in range(8)]
    assert m.call("suggest", view).value == []            # the design is exhausted
    for name in ["LEARNING_RATE", "WEIGHT_DECAY", "N_EMBD"]:
        lo, hi = SPACE[name]["min"], SPACE[name]["max"]
        if name == "LEARNING_RATE":                       # log-spaced: spans 3 decades
            pos = [math.log(p[name] / lo) / math.log(hi / lo) for p in points]
        else:
            pos = [(p[name] - lo) / (hi - lo) for p in points]
        strata = sorted(min(int(u * 8), 7) for u in pos)
        assert strata == list(range(8)), (name, strata)
