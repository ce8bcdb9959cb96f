"""A Latin-hypercube design of experiments over the free parameters.

At the first `suggest` it lays out `points` design points: along every parameter, each point
falls in a different one of `points` equal strata (log-spaced when the range spans decades),
so a few trials cover the whole space. It then proposes the design points one by one.
"""

import random


class Mechanism:
    name = "latin-hypercube"
    points = 8
    per_call = 1
    max_dims = 4

    def __init__(self):
        self.design = []
        self.next = 0

    def level(self, spec, u):
        kind, lo, hi = spec.get("type"), spec.get("min"), spec.get("max")
        if kind == "bool":
            return u >= 0.5
        if kind == "choice":
            values = spec.get("values", [])
            return values[min(int(u * len(values)), len(values) - 1)] if values else None
        if lo is not None and lo > 0 and hi / lo >= 100:
            value = lo * (hi / lo) ** u
        else:
            value = lo + (hi - lo) * u
        if kind == "int":
            return int(min(hi, max(lo, round(value))))
        return float(value)

    def build(self, view):
        frozen = view.get("frozen", [])
        space = view.get("space", {})
        dims = [n for n in view.get("active", []) if n in space and n not in frozen]
        dims = dims[: self.max_dims]
        columns = {}
        for name in dims:
            strata = list(range(self.points))
            random.shuffle(strata)
            columns[name] = [(s + random.random()) / self.points for s in strata]
        for i in range(self.points):
            changes = {}
            for name in dims:
                value = self.level(space[name], columns[name][i])
                if value is not None:
                    changes[name] = value
            if changes:
                self.design.append(changes)

    def suggest(self, view):
        if not self.design:
            self.build(view)
        out = []
        while self.next < len(self.design) and len(out) < self.per_call:
            out.append({"changes": self.design[self.next],
                        "hypothesis": f"Latin-hypercube design point {self.next + 1}"
                                      f" of {len(self.design)}"})
            self.next += 1
        return out
