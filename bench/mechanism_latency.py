"""Mechanism hook latency end to end, beside the raw stdio round trip of an idle container.

Prints figures; passes or fails nothing. All numbers come from one run on one machine:
  - raw: a JSON line echoed by a Python loop in the mechanism image (same attach socket);
  - hook calls with a realistic view (a 100-trial history), full path: encode, socket,
    daemon, RestrictedPython, reply, strict decode, schema check;
  - `mechanism check` wall time for each reference mechanism (container start included).
Targets (DESIGN.md): hook p50 <= 1 ms, p99 <= 5 ms; check <= 2 s.

Run: .venv/bin/python bench/mechanism_latency.py [--calls N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bilevel.runtime import policy
from bilevel.runtime.mechanisms.host import ContainerTransport, SandboxedMechanism
from bilevel.runtime.mechanisms.validation import synthetic_trace, validate
from bilevel.runtime.mechanisms.wire import decode, encode
from bilevel.runtime.sandbox import engine, images

LIBRARY = Path(__file__).resolve().parents[1] / "outer" / "library"
TRIVIAL = """
class Mechanism:
    name = "trivial"

    def context(self, view):
        return []
"""


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def line(label: str, ms: list[float]) -> str:
    return (f"{label:<44} p50 {pct(ms, 50):6.3f} ms   p99 {pct(ms, 99):6.3f} ms"
            f"   mean {statistics.fmean(ms):6.3f} ms   n={len(ms)}")


def raw_roundtrip(client, pol, payload: dict, n: int, ack: bool) -> list[float]:
    command = ["python3", "-I", "/bilevel/mechanism/echo.py"] + (["--ack"] if ack else [])
    t = ContainerTransport(client, pol, command=command)
    cap = int(pol.mechanism["max_message_kb"]) * 1024
    try:
        msg = {"op": "call", "hook": "context", "args": [payload]}
        out = []
        for i in range(n + 50):
            t0 = time.perf_counter()
            t.send(encode(msg, cap), time.monotonic() + 5)
            decode(t.recv_line(time.monotonic() + 5), cap)
            if i >= 50:
                out.append((time.perf_counter() - t0) * 1000)
        return out
    finally:
        t.close()


def hook_latency(pol, source: str, hook: str, args: tuple, n: int, seed: int = 0) -> list[float]:
    m = SandboxedMechanism("bench", source, policy=pol, seed=seed)
    try:
        assert m.start().ok, m.quarantine_info
        out = []
        for i in range(n + 50):
            t0 = time.perf_counter()
            r = m.call(hook, *args)
            if not r.ok:
                raise RuntimeError(f"{hook} failed: {r.outcome} {r.error}")
            if i >= 50:
                out.append((time.perf_counter() - t0) * 1000)
        return out
    finally:
        m.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1000)
    args = ap.parse_args()
    client = engine.connect()
    images.image_for(client, "mechanism")
    pol = policy.load()
    _records, view = synthetic_trace(100)
    size = len(json.dumps(view))
    print(f"view: 100-trial history, {size / 1024:.1f} KiB of JSON per call")
    print(line("raw round trip: view in, short ack out", raw_roundtrip(client, pol, view,
                                                                      args.calls, True)))
    print(line("raw round trip: view in, view echoed back", raw_roundtrip(client, pol, view,
                                                                         args.calls, False)))
    print(line("hook: trivial context(view)", hook_latency(pol, TRIVIAL, "context", (view,),
                                                           args.calls)))
    print(line("hook: ucb_bandit suggest(view)",
               hook_latency(pol, (LIBRARY / "ucb_bandit.py").read_text(), "suggest", (view,),
                            args.calls)))
    cands = [{"changes": {"LEARNING_RATE": 0.001 * i}, "hypothesis": "h"} for i in range(1, 9)]
    print(line("hook: tabu review(8 candidates, view)",
               hook_latency(pol, (LIBRARY / "tabu.py").read_text(), "review", (cands, view),
                            args.calls)))
    print("mechanism check wall time (container start, compile, load, smoke test):")
    for path in sorted(LIBRARY.glob("*.py")):
        if path.name == "__init__.py":
            continue
        t0 = time.perf_counter()
        verdict = validate(path.read_text(), pol, name=path.stem)
        wall = time.perf_counter() - t0
        print(f"  {path.stem:<18} {wall:5.2f} s   {'accepted' if verdict.accepted else verdict.reason}")


if __name__ == "__main__":
    main()
