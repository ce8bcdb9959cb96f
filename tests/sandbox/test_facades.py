"""The facade layer on its own (invariant 3), not only through the getattr guard behind it.

A facade must be a `Facade`, never the module, and must hold only its curated members: the
red-team attacks reach `statistics.sys` and the like through the guard, which would still stop
them if this layer were gone. Here the layer is tested in this process, from its source file,
and a legitimate use of every facade runs through the real daemon.
"""

from __future__ import annotations

import ast
import importlib
import sys
import types

import pytest

from bilevel.runtime.mechanisms.validation import synthetic_trace

import mechanism_fixtures as fx
from locations import ROOT

make_mech = fx.make_mech
mech_client = fx.mech_client
NAMES = ["math", "random", "statistics", "itertools", "collections", "heapq", "bisect"]
# What a whole module would give away: its own imports and its internals.
LEAKS = {
    "statistics": ["sys", "math", "random", "_sum", "__dict__", "__loader__", "__builtins__"],
    "random": ["_os", "_sha512", "Random", "SystemRandom", "seed", "getstate", "setstate", "__dict__"],
    "math": ["__loader__", "__spec__", "__dict__", "factorial.__globals__"],
    "collections": ["abc", "_sys", "namedtuple", "__dict__", "_collections_abc"],
    "itertools": ["count", "cycle", "__dict__"],
    "heapq": ["__dict__", "_heapify_max", "__builtins__"],
    "bisect": ["__dict__", "__builtins__"],
}


@pytest.fixture(scope="module")
def facades_module():
    folder = str(ROOT / "sandbox" / "images" / "mechanism")
    sys.path.insert(0, folder)
    try:
        mod = importlib.import_module("facades")
        rp = importlib.import_module("restricted_policy")
        yield mod, rp
    finally:
        sys.path.remove(folder)
        for name in ("facades", "restricted_policy"):
            sys.modules.pop(name, None)


@pytest.fixture
def made(facades_module):
    mod, rp = facades_module
    fuel = rp.Fuel(100_000)
    return mod, mod.make_facades(NAMES, 7, fuel, rp.Guards(fuel))


def _curated(mod, name: str) -> set[str]:
    lists = {"math": mod.MATH_NAMES + ["factorial", "comb", "perm", "prod"], "random": mod.RANDOM_NAMES,
             "statistics": mod.STATISTICS_NAMES, "itertools": mod.ITERTOOLS_NAMES + ["repeat"],
             "collections": [t.__name__ for t in mod.CONTAINER_TYPES], "heapq": mod.HEAPQ_NAMES,
             "bisect": mod.BISECT_NAMES}
    return set(lists[name])


@pytest.mark.parametrize("name", NAMES)
def test_a_facade_is_a_frozen_namespace_of_its_curated_members_only(made, name):
    mod, facades = made
    f = facades[name]
    assert type(f) is mod.Facade and not isinstance(f, types.ModuleType)
    members = dict(f._members)
    assert members and set(members) <= _curated(mod, name)
    assert not any(isinstance(v, types.ModuleType) for v in members.values())
    for leak in LEAKS[name]:
        head, _, rest = leak.partition(".")
        with pytest.raises(AttributeError):
            obj = getattr(f, head)
            if rest:
                getattr(obj, rest)
                raise AttributeError  # reachable, but only through a member: the guard's job
    with pytest.raises(TypeError):
        f.mean = print
    with pytest.raises(TypeError):
        del f._members


def test_only_the_policys_facades_are_importable(facades_module):
    mod, rp = facades_module
    fuel = rp.Fuel(1000)
    facades = mod.make_facades(["math"], 1, fuel, rp.Guards(fuel))
    imp = mod.importer(facades)
    assert imp("math") is facades["math"]
    for name in ("statistics", "os", "sys", "builtins"):
        with pytest.raises(ImportError, match="not allowed"):
            imp(name)
    with pytest.raises(ImportError):
        imp("math", level=1)


def test_a_legitimate_use_of_each_facade_in_process(made):
    _mod, f = made
    assert f["statistics"].mean([1, 2, 3]) == 2 and f["statistics"].median([3, 1, 2]) == 2
    assert f["math"].sqrt(16) == 4.0 and f["math"].prod([2, 3, 4]) == 24 and f["math"].factorial(5) == 120
    assert f["heapq"].nsmallest(2, [5, 1, 3]) == [1, 3]
    assert f["bisect"].bisect_left([1, 2, 4], 3) == 2
    assert list(f["itertools"].combinations("abc", 2)) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert list(f["itertools"].repeat(0, 3)) == [0, 0, 0]
    assert f["collections"].Counter("aab")["a"] == 2
    assert 0 <= f["random"].random() < 1


LEGIT = """
import math, random, statistics, itertools, collections, heapq, bisect

class Mechanism:
    name = "facade-user"
    def suggest(self, view):
        xs = [3.0, 1.0, 2.0]
        c = collections.Counter("aab")
        out = {
            "mean": statistics.mean(xs), "stdev": round(statistics.stdev(xs), 6),
            "sqrt": math.sqrt(16), "prod": math.prod([2, 3, 4]),
            "small": heapq.nsmallest(2, xs), "pos": bisect.bisect_left([1, 2, 4], 3),
            "pairs": len(list(itertools.combinations("abcd", 2))), "a": c["a"],
            "r": 0 <= random.random() < 1,
        }
        return [{"changes": {"X": 1}, "hypothesis": repr(out)}]
"""


@pytest.mark.docker
def test_a_legitimate_use_of_each_facade_in_the_sandbox(make_mech):
    _r, view = synthetic_trace(2)
    reply = make_mech(LEGIT).call("suggest", view)
    assert reply.outcome == "ok", reply.error
    got = ast.literal_eval(reply.value[0]["hypothesis"])
    assert got == {"mean": 2.0, "stdev": 1.0, "sqrt": 4.0, "prod": 24, "small": [1.0, 2.0], "pos": 2,
                   "pairs": 6, "a": 2, "r": True}
