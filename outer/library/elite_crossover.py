"""Elite-pool crossover.

Keeps the `pool` best configurations seen (status ok, lowest val_bpb). `suggest` mates two
elites by uniform crossover and proposes the child's differences from the incumbent, so new
candidates recombine what already worked instead of wandering. A child whose configuration
has already been run is never proposed: a repeat would spend a trial to learn nothing.
"""

import random


class Mechanism:
    name = "elite-crossover"
    pool = 4
    children = 2

    def __init__(self):
        self.elites = []    # [(val_bpb, iteration, config)], best first
        self.tried = []     # every configuration run so far, as a sorted list of items

    def observe(self, record):
        config = sorted(record.get("config", {}).items())
        if config not in self.tried:
            self.tried.append(config)
        bpb = record.get("val_bpb")
        if record.get("status") != "ok" or bpb is None:
            return None
        self.elites.append((bpb, record.get("iteration", 0), dict(record.get("config", {}))))
        self.elites = sorted(self.elites, key=lambda e: (e[0], e[1]))[: self.pool]
        return None

    def suggest(self, view):
        if len(self.elites) < 2:
            return []
        incumbent = view.get("incumbent", {})
        frozen = view.get("frozen", [])
        out = []
        for _ in range(self.children * 4):
            a, b = random.sample(self.elites, 2)
            changes = {}
            for name in sorted(set(a[2]) | set(b[2])):
                if name in frozen:
                    continue
                parent = a if random.random() < 0.5 else b
                value = parent[2].get(name, incumbent.get(name))
                if name in incumbent and value != incumbent[name]:
                    changes[name] = value
            child = dict(incumbent)
            child.update(changes)
            if sorted(child.items()) in self.tried:
                continue
            if changes and all(c["changes"] != changes for c in out):
                out.append({"changes": changes,
                            "hypothesis": f"crossover of elites from iterations {a[1]} and {b[1]}"})
            if len(out) >= self.children:
                break
        return out
