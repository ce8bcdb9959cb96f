"""Facades: the only things an `import` statement inside a mechanism can give.

Why not modules: a module object re-exports its own imports (`statistics.sys`,
`random._os`, `collections.abc`), and a function's module globals are one attribute away.
A facade is a read-only namespace holding only the callables and constants listed here
(invariant 3). `random` is a seeded `random.Random` instance's methods, so a replay with the
same seed and call sequence draws the same numbers.
"""

from __future__ import annotations

import bisect
import collections
import heapq
import itertools
import math
import random
import statistics
from types import MappingProxyType

from restricted_policy import MAX_COMBINATORIAL, Fuel, Guards

MATH_NAMES = (
    "acos acosh asin asinh atan atan2 atanh cbrt ceil copysign cos cosh degrees dist erf erfc "
    "exp exp2 expm1 fabs floor fmod frexp fsum gamma gcd hypot isclose isfinite isinf isnan "
    "isqrt lcm ldexp lgamma log log10 log1p log2 modf nextafter pow radians remainder sin sinh "
    "sqrt tan tanh trunc ulp e pi tau inf nan"
).split()
STATISTICS_NAMES = (
    "fmean geometric_mean harmonic_mean mean median median_grouped median_high median_low mode "
    "multimode pstdev pvariance quantiles stdev variance correlation covariance "
    "linear_regression StatisticsError"
).split()
RANDOM_NAMES = (
    "random uniform randint randrange choice choices sample shuffle gauss normalvariate "
    "lognormvariate expovariate betavariate gammavariate triangular vonmisesvariate "
    "paretovariate weibullvariate"
).split()
ITERTOOLS_NAMES = (
    "accumulate chain combinations combinations_with_replacement compress dropwhile filterfalse "
    "groupby islice pairwise permutations product starmap takewhile tee zip_longest"
).split()
HEAPQ_NAMES = "heappush heappop heapify heapreplace heappushpop nlargest nsmallest merge".split()
BISECT_NAMES = "bisect bisect_left bisect_right insort insort_left insort_right".split()
CONTAINER_TYPES = (
    collections.deque, collections.Counter, collections.defaultdict, collections.OrderedDict,
)


class Facade:
    """A frozen namespace; attribute reads find only its listed members."""

    __slots__ = ("_name", "_members")

    def __init__(self, name: str, members: dict) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_members", MappingProxyType(dict(members)))

    def __getattr__(self, attr: str):
        try:
            return self._members[attr]
        except KeyError:
            raise AttributeError(f"{self._name}.{attr} is not available in the sandbox") from None

    def __setattr__(self, attr, value):
        raise TypeError("facades are read-only")

    def __delattr__(self, attr):
        raise TypeError("facades are read-only")

    def __repr__(self) -> str:
        return f"<facade {self._name}>"


def _capped(fn, cap: int):
    def wrapped(*args):
        if any(type(a) is int and abs(a) > cap for a in args):
            raise OverflowError(f"{fn.__name__}: argument over the sandbox cap of {cap}")
        return fn(*args)

    wrapped.__name__ = fn.__name__
    return wrapped


def _pick(module, names: list[str]) -> dict:
    return {n: getattr(module, n) for n in names if hasattr(module, n)}


def _math(fuel: Fuel, guards: Guards) -> dict:
    members = _pick(math, MATH_NAMES)
    for n in ("factorial", "comb", "perm"):
        members[n] = _capped(getattr(math, n), MAX_COMBINATORIAL)

    def prod(iterable, *, start=1):
        out = start
        for x in guards.getiter(iterable):
            out = guards.mul(out, x)
        return out

    members["prod"] = prod
    return members


def _random(seed: int) -> dict:
    rng = random.Random(seed)
    return {n: getattr(rng, n) for n in RANDOM_NAMES}


def _itertools(guards: Guards) -> dict:
    members = _pick(itertools, ITERTOOLS_NAMES)

    # Invariant 3 (fuel): no unbounded producers (count, cycle, repeat without times).
    def repeat(obj, times):
        if type(times) is not int or times > 10_000_000:
            raise ValueError("itertools.repeat needs a `times` of at most 10_000_000")
        return itertools.repeat(obj, times)

    members["repeat"] = repeat
    return members


def make_facades(allowed: list[str], seed: int, fuel: Fuel, guards: Guards) -> dict[str, Facade]:
    """The facades this mechanism may import, per the policy's `facades` list."""
    builders = {
        "math": lambda: _math(fuel, guards),
        "random": lambda: _random(seed),
        "statistics": lambda: _pick(statistics, STATISTICS_NAMES),
        "itertools": lambda: _itertools(guards),
        "collections": lambda: {t.__name__: t for t in CONTAINER_TYPES},
        "heapq": lambda: _pick(heapq, HEAPQ_NAMES),
        "bisect": lambda: _pick(bisect, BISECT_NAMES),
    }
    if "collections" in allowed:
        guards.add_container_types(*CONTAINER_TYPES)
    return {name: Facade(name, builders[name]()) for name in allowed if name in builders}


def importer(facades: dict[str, Facade]):
    """The sandbox's `__import__`: a facade or ImportError, never a module."""

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level != 0 or name not in facades:
            raise ImportError(
                f"import of {name!r} is not allowed; available facades: {sorted(facades)}"
            )
        return facades[name]

    return guarded_import
