"""Keep or discard a trial: the `strict` rule of the paper, or `noise-aware`.

Arbitration with mechanisms' `accept` hooks (one rule, also in the README):
1. a trial that did not end `ok` is never kept;
2. any mechanism voting "discard" vetoes a keep;
3. otherwise a mechanism voting "keep" can keep an `ok` trial whose val_bpb is within the
   noise margin (at least 0.01 bpb) of the best, even when it does not beat it;
4. otherwise the mode's own rule decides.
"""

from __future__ import annotations

import statistics


def noise_floor(baseline_bpbs: list[float]) -> float:
    """Run-to-run noise of repeated baseline trials (their standard deviation)."""
    return statistics.stdev(baseline_bpbs) if len(baseline_bpbs) >= 2 else 0.0


def decide(
    *, mode: str, status: str, val_bpb: float | None, best: float, noise: float,
    votes: list[tuple[str, str | None]], confirmed: bool = False,
) -> tuple[str, str]:
    """("keep" | "discard" | "confirm", reason). "confirm" asks for one repeat trial."""
    if status != "ok" or val_bpb is None:
        return "discard", f"trial ended {status}"
    vetoes = [m for m, v in votes if v == "discard"]
    keeps = [m for m, v in votes if v == "keep"]
    gain = best - val_bpb
    if vetoes and gain > 0:
        return "discard", f"vetoed by mechanism {vetoes[0]}"
    if keeps and not vetoes and gain <= 0 and -gain <= max(noise, 0.01):
        return "keep", f"kept by mechanism {keeps[0]} within the noise margin"
    if gain <= 0:
        return "discard", f"no gain ({val_bpb:.4f} vs best {best:.4f})"
    if mode == "strict" or gain >= noise or confirmed:
        return "keep", f"gain {gain:.4f}" + (" (confirmed by a repeat)" if confirmed else "")
    return "confirm", f"gain {gain:.4f} is below the noise floor {noise:.4f}: repeat to confirm"
