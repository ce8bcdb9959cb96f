"""What gVisor costs the mechanism sandbox: runc against runsc, in one run, on one machine.

Prints figures; passes or fails nothing. For each runtime, interleaved round by round so that
load on the machine falls on both alike:
  - the raw stdio round trip (a 2 KB JSON line, echoed) through the mechanism image;
  - hook calls with a 100-trial view (trivial context, ucb_bandit suggest), full path;
  - `mechanism check` wall time of one reference mechanism (container start included).
Each figure is the median over --rounds rounds; the last column is runsc / runc.

Run: .venv/bin/python bench/runsc_cost.py [--calls N] [--rounds R]
Needs runsc registered with dockerd (bash scripts/engine.sh; `bilevel doctor` says whether it works).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mechanism_latency import LIBRARY, TRIVIAL, hook_latency, pct, raw_roundtrip  # noqa: E402

from bilevel.runtime import policy  # noqa: E402
from bilevel.runtime.mechanisms.validation import synthetic_trace, validate  # noqa: E402
from bilevel.runtime.sandbox import engine, images, runtimes  # noqa: E402

RUNTIMES = ("runc", "runsc")


def _policy(runtime: str) -> policy.Policy:
    return policy.parse(f'[mechanism]\nruntime = "{runtime}"\n', f"bench-{runtime}")


def _check_s(pol: policy.Policy, source: str) -> float:
    t0 = time.perf_counter()
    verdict = validate(source, pol, name="bench")
    if not verdict.accepted:
        raise RuntimeError(f"mechanism check refused the reference mechanism: {verdict.reason}")
    return time.perf_counter() - t0


def one_round(client, calls: int, view: dict) -> dict[str, dict[str, float]]:
    payload = {"x": "y" * 2000}
    ucb = (LIBRARY / "ucb_bandit.py").read_text()
    out: dict[str, dict[str, float]] = {}
    for runtime in RUNTIMES:
        pol = _policy(runtime)
        raw = raw_roundtrip(client, pol, payload, calls, False)
        triv = hook_latency(pol, TRIVIAL, "context", (view,), calls)
        sugg = hook_latency(pol, ucb, "suggest", (view,), calls)
        out[runtime] = {
            "raw 2 KB round trip p50 ms": pct(raw, 50), "raw 2 KB round trip p99 ms": pct(raw, 99),
            "hook context(view) p50 ms": pct(triv, 50), "hook context(view) p99 ms": pct(triv, 99),
            "hook ucb suggest(view) p50 ms": pct(sugg, 50), "hook ucb suggest(view) p99 ms": pct(sugg, 99),
            "mechanism check s": _check_s(pol, ucb),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    client = engine.connect()
    images.image_for(client, "mechanism")
    status = runtimes.runsc_status(client, policy.load())
    if not status.works:
        sys.exit(f"runsc cannot run here: {status.detail}")
    _records, view = synthetic_trace(100)
    rounds = [one_round(client, args.calls, view) for _ in range(args.rounds)]
    print(f"{args.rounds} rounds x {args.calls} calls; medians over rounds")
    print(f"{'figure':<34} {'runc':>10} {'runsc':>10} {'ratio':>7}")
    for key in rounds[0]["runc"]:
        a = statistics.median(r["runc"][key] for r in rounds)
        b = statistics.median(r["runsc"][key] for r in rounds)
        print(f"{key:<34} {a:10.3f} {b:10.3f} {b / a:7.2f}")


if __name__ == "__main__":
    main()
