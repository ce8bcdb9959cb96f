"""The trusted evaluator: the validation split stays here; the model container gets inputs only.

Invariant (DESIGN 5, code mode): the metric comes from trusted code the candidate cannot reach.
The model runs in its own container (`channel`) with no data; this process holds the validation
windows, sends each batch's input tokens, and computes bits per byte itself from the returned
logits against targets that never leave it (a window's last byte is never sent at all).

One evaluation: pass A over the batches in a secret order (the metric); pass B in another
secret order, with `causality_batches` batches re-sent with their future tokens changed at a
secret cut per row, interleaved where the model cannot tell (the order and causality gates).
The orders and cuts come from `secret`, a per-run secret the host never writes anywhere a
sandbox can read.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from bilevel.runtime.evaluation import gates
from bilevel.runtime.evaluation.channel import ModelContainer
from bilevel.runtime.evaluation.gates import GateFailure


@dataclass(frozen=True)
class Spec:
    """The task's evaluation set, the same as its params-mode harness uses (so numbers compare)."""

    windows: int = 256        # windows spread evenly over the validation split
    seq_len: int = 128        # bytes per window fed to the model (each window has one more, its last target)
    vocab: int = 256
    batch: int = 32


@dataclass
class Evaluation:
    val_bpb: float | None = None
    gate: str | None = None
    reason: str = "ok"
    num_params: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)   # startup, metric, gates


def windows(val: bytes, spec: Spec) -> torch.Tensor:
    """The fixed eval set: `spec.windows` windows of seq_len + 1 bytes, evenly spaced."""
    data = torch.frombuffer(bytearray(val), dtype=torch.uint8)
    last = len(data) - spec.seq_len - 1
    starts = torch.tensor([i * last // (spec.windows - 1) for i in range(spec.windows)])
    return data[starts[:, None] + torch.arange(spec.seq_len + 1)].long()


def _ids(x: torch.Tensor) -> bytes:
    return x.to(torch.int32).contiguous().numpy().tobytes()


def _perturbed(x: torch.Tensor, rng: random.Random, vocab: int) -> tuple[torch.Tensor, list[int]]:
    """A copy of x where each row's tokens after a secret cut are all different from before."""
    g = torch.Generator().manual_seed(rng.getrandbits(62))
    cuts = [rng.randrange(0, x.shape[1] - 1) for _ in range(x.shape[0])]
    shift = torch.randint(1, vocab, x.shape, generator=g)
    after = torch.arange(x.shape[1])[None, :] > torch.tensor(cuts)[:, None]
    return torch.where(after, (x + shift) % vocab, x), cuts


def _orders(n: int, rng: random.Random) -> tuple[list[int], list[int]]:
    a = list(range(n))
    rng.shuffle(a)
    b = list(a)
    while n > 1 and b == a:
        rng.shuffle(b)
    return a, b


def run(model: ModelContainer, val: bytes, spec: Spec, *, secret: int, causality_batches: int,
        tolerance: float) -> Evaluation:
    """Evaluate the started model container; a failed gate is an Evaluation with `gate` set."""
    out = Evaluation()
    t0 = time.monotonic()
    try:
        out.num_params = model.ready()
        t1 = time.monotonic()
        out.val_bpb = _passes(model, windows(val, spec), spec, random.Random(secret), causality_batches,
                              tolerance, out)
    except GateFailure as exc:
        out.val_bpb, out.gate, out.reason = None, str(exc.gate), str(exc)
        return out
    out.seconds["startup"] = round(t1 - t0, 3)
    return out


def _passes(model: ModelContainer, win: torch.Tensor, spec: Spec, rng: random.Random, n_probe: int,
            tolerance: float, out: Evaluation) -> float:
    batches = [win[i : i + spec.batch] for i in range(0, len(win), spec.batch)]
    order_a, order_b = _orders(len(batches), rng)
    probed = set(rng.sample(range(len(batches)), min(n_probe, len(batches))))
    bits = math.log(2)

    def score(i: int, x: torch.Tensor) -> tuple[float, torch.Tensor]:
        logits = gates.logits(model.forward(_ids(x), x.shape[0], x.shape[1], spec.vocab),
                              (x.shape[0], x.shape[1], spec.vocab))
        y = batches[i][:, 1:]
        nats = F.cross_entropy(logits.reshape(-1, spec.vocab), y.reshape(-1), reduction="sum").item()
        return nats / (bits * y.numel()), logits

    t = time.monotonic()
    bpb_a, kept = [0.0] * len(batches), {}
    for i in order_a:
        bpb_a[i], logits = score(i, batches[i][:, :-1])
        if i in probed:
            kept[i] = logits
    out.seconds["metric"] = round(time.monotonic() - t, 3)
    t = time.monotonic()
    # Pass B, with the causality probes interleaved at secret places among the batches.
    plan = [("batch", i) for i in order_b]
    for i in sorted(probed):
        plan.insert(rng.randrange(len(plan) + 1), ("probe", i))
    bpb_b, probes = [0.0] * len(batches), []
    for what, i in plan:
        x = batches[i][:, :-1]
        if what == "batch":
            bpb_b[i], _ = score(i, x)
            continue
        changed, cuts = _perturbed(x, rng, spec.vocab)
        probe = gates.logits(model.forward(_ids(changed), x.shape[0], x.shape[1], spec.vocab),
                             (x.shape[0], x.shape[1], spec.vocab))
        probes.append((i, probe, cuts))
    # Order first: a model with state fails both, and state is then the true diagnosis; a
    # stateless model that peeks passes the order gate and fails causality.
    gates.same_order(bpb_a, bpb_b, tolerance)
    for i, probe, cuts in probes:
        gates.causal(kept[i], probe, cuts, tolerance)
    out.seconds["gates"] = round(time.monotonic() - t, 3)
    counts = [b[:, 1:].numel() for b in batches]
    return sum(v * c for v, c in zip(bpb_a, counts, strict=True)) / sum(counts)
