"""A UCB1 bandit over which parameter to change.

Each free parameter is an arm; its reward is the improvement of the best val_bpb that a
trial changing it brought (0 when it did not improve or failed). `suggest` proposes a move
of the arm with the highest upper confidence bound (untried arms first); `context` shows
the table.
"""

import math
import random


class Mechanism:
    name = "ucb-bandit"
    exploration = 1.0

    def __init__(self):
        self.pulls = {}
        self.reward = {}
        self.total = 0

    def observe(self, record):
        changes = record.get("changes", {})
        gain = 0.0
        bpb, before = record.get("val_bpb"), record.get("best_before")
        if record.get("status") == "ok" and bpb is not None and before is not None:
            gain = max(0.0, before - bpb)
        for name in changes:
            self.pulls[name] = self.pulls.get(name, 0) + 1
            self.reward[name] = self.reward.get(name, 0.0) + gain / len(changes)
        self.total += 1

    def arms(self, view):
        frozen = view.get("frozen", [])
        return [n for n in view.get("active", []) if n not in frozen and n in view.get("space", {})]

    def score(self, name):
        n = self.pulls.get(name, 0)
        if n == 0:
            return None
        mean = self.reward.get(name, 0.0) / n
        return mean + self.exploration * math.sqrt(2.0 * math.log(max(self.total, 1)) / n) * 0.01

    def pick(self, view):
        arms = self.arms(view)
        for name in arms:
            if self.pulls.get(name, 0) == 0:
                return name
        best, best_score = None, None
        for name in arms:
            s = self.score(name)
            if best_score is None or s > best_score:
                best, best_score = name, s
        return best

    def move(self, spec, current):
        kind, lo, hi = spec.get("type"), spec.get("min"), spec.get("max")
        if kind == "bool":
            return not bool(current)
        if kind == "choice":
            options = [v for v in spec.get("values", []) if v != current]
            return random.choice(options) if options else current
        if kind == "int":
            step = random.choice([-1, 1]) * max(1, int((hi - lo) / 8))
            return int(min(hi, max(lo, current + step)))
        if lo is not None and lo > 0:
            value = current * random.choice([0.5, 0.7, 1.4, 2.0])
        else:
            value = current + random.choice([-1, 1]) * 0.15 * (hi - lo)
        return float(min(hi, max(lo, value)))

    def suggest(self, view):
        name = self.pick(view)
        if name is None:
            return []
        spec = view["space"][name]
        value = self.move(spec, view.get("incumbent", {}).get(name))
        return [{"changes": {name: value},
                 "hypothesis": f"UCB picks {name} (pulls {self.pulls.get(name, 0)})"}]

    def context(self, view):
        rows = []
        for name in self.arms(view):
            n = self.pulls.get(name, 0)
            mean = self.reward.get(name, 0.0) / n if n else 0.0
            rows.append(f"- {name}: tried {n}x, mean gain {mean:.4f}")
        if not rows:
            return []
        return [{"title": "parameter bandit (UCB1)",
                 "text": "\n".join(rows) + f"\nnext arm: {self.pick(view)}"}]
