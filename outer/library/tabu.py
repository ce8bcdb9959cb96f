"""Tabu search over recent proposals.

Remembers the (parameter, value) moves of the last trials. `review` drops candidates that
would repeat a recent move, and `constraints` forbids parameters whose recent moves all failed,
so the search stops circling the same few points.
"""


class Mechanism:
    name = "tabu-search"
    tenure = 8          # trials a move stays tabu
    fail_limit = 2      # failed moves of one parameter (in the window) before it is forbidden

    def __init__(self):
        self.moves = []     # [(iteration, name, value, kept)], newest last

    def observe(self, record):
        for name, value in sorted(record.get("changes", {}).items()):
            self.moves.append((record.get("iteration", 0), name, value, bool(record.get("kept"))))
        self.moves = self.moves[-self.tenure * 4:]

    def recent(self):
        iterations = sorted(set(m[0] for m in self.moves))[-self.tenure:]
        return [m for m in self.moves if m[0] in iterations]

    def same(self, a, b):
        if isinstance(a, bool) or isinstance(b, bool):
            return a is b
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return abs(a - b) <= 1e-12 + 1e-9 * abs(b)
        return a == b

    def is_tabu(self, name, value):
        for move in self.recent():
            if move[1] == name and self.same(move[2], value):
                return True
        return False

    def review(self, candidates, view):
        kept = []
        for cand in candidates:
            changes = cand.get("changes", {})
            if not any(self.is_tabu(n, v) for n, v in changes.items()):
                kept.append(cand)
        return kept

    def constraints(self, view):
        failures, successes = {}, {}
        for move in self.recent():
            if move[3]:
                successes[move[1]] = successes.get(move[1], 0) + 1
            else:
                failures[move[1]] = failures.get(move[1], 0) + 1
        forbid = sorted(n for n, k in failures.items()
                        if k >= self.fail_limit and successes.get(n, 0) == 0)
        free = [n for n in view.get("active", []) if n not in view.get("frozen", [])]
        if free and all(n in forbid for n in free):
            forbid = []     # never leave the search with nothing to change
        return {"forbid": forbid, "ranges": {}}

    def context(self, view):
        moves = self.recent()
        if not moves:
            return []
        lines = [f"- {m[1]} = {m[2]!r} ({'kept' if m[3] else 'not kept'})" for m in moves[-12:]]
        return [{"title": "tabu moves",
                 "text": "Do not repeat these recent moves:\n" + "\n".join(lines)}]
