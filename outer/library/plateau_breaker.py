"""A plateau breaker.

When the last `window` trials brought no kept improvement, the search is stuck in a local
basin of small steps. It then suggests bold jumps: the least-recently changed free
parameters move to the far side of their range, and `context` tells the proposer so.
"""


class Mechanism:
    name = "plateau-breaker"
    window = 4
    jumps = 2

    def plateau(self, view):
        history = view.get("history", [])
        if len(history) < self.window:
            return 0
        run = 0
        for rec in reversed(history):
            if rec.get("kept"):
                break
            run += 1
        return run if run >= self.window else 0

    def far(self, spec, current):
        kind, lo, hi = spec.get("type"), spec.get("min"), spec.get("max")
        if kind == "bool":
            return not bool(current)
        if kind == "choice":
            values = [v for v in spec.get("values", []) if v != current]
            return values[-1] if values else None
        if lo is None or hi is None or current is None:
            return None
        low_half = current <= lo + (hi - lo) / 2
        target = lo + (hi - lo) * (0.8 if low_half else 0.2)
        if kind == "int":
            return int(round(target))
        return float(target)

    def suggest(self, view):
        if not self.plateau(view):
            return []
        space, incumbent = view.get("space", {}), view.get("incumbent", {})
        frozen = view.get("frozen", [])
        last_changed = {}
        for rec in view.get("history", []):
            for name in rec.get("changes", {}):
                last_changed[name] = rec.get("iteration", 0)
        free = [n for n in view.get("active", []) if n in space and n not in frozen]
        free = sorted(free, key=lambda n: (last_changed.get(n, -1), n))
        out = []
        for name in free:
            value = self.far(space[name], incumbent.get(name))
            if value is not None and value != incumbent.get(name):
                out.append({"changes": {name: value},
                            "hypothesis": f"plateau: jump {name} to the far side of its range"})
            if len(out) >= self.jumps:
                break
        return out

    def context(self, view):
        run = self.plateau(view)
        if not run:
            return []
        return [{"title": "plateau detected",
                 "text": f"The last {run} trials improved nothing. Small steps are exhausted: "
                         "propose bolder changes, e.g. move a rarely changed parameter across "
                         "its range."}]
