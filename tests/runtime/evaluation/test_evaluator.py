"""The evaluator's passes and gates, on models run in this test's own process (no container):
an honest causal model passes and scores what a direct computation gives; a model that peeks at
the next token, one that keeps state across batches, and one with bad logits each fail their gate."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bilevel.inner.tasks.tinygpt import harness
from bilevel.runtime.evaluation import evaluator
from bilevel.runtime.evaluation.gates import GateFailure

SPEC = evaluator.Spec(windows=64, seq_len=32, vocab=256, batch=8)


class InProcess:
    """Stands in for `channel.ModelContainer`: the same two calls, a model of this test's."""

    def __init__(self, fn) -> None:
        self.fn, self.calls = fn, 0

    def ready(self) -> int:
        return 1

    def forward(self, ids: bytes, batch: int, seq_len: int, vocab: int) -> bytes:
        self.calls += 1
        x = torch.frombuffer(bytearray(ids), dtype=torch.int32).reshape(batch, seq_len).long()
        return self.fn(x).float().contiguous().numpy().tobytes()


def _bigram(x: torch.Tensor) -> torch.Tensor:
    # Causal: position t depends on x[t] only.
    return torch.nn.functional.one_hot((x + 1) % 256, 256).float() * 3.0


def _peek(x: torch.Tensor) -> torch.Tensor:
    nxt = torch.cat([x[:, 1:], x[:, -1:]], 1)   # the token after t, read from the input
    return F.one_hot(nxt, 256).float() * 10.0


def _val() -> bytes:
    g = torch.Generator().manual_seed(0)
    return bytes(torch.randint(0, 256, (5000,), generator=g, dtype=torch.uint8).tolist())


def test_windows_are_the_params_mode_harness_windows():
    val = _val()
    spec = evaluator.Spec()
    want = harness.eval_windows(torch.frombuffer(bytearray(val), dtype=torch.uint8))
    assert torch.equal(evaluator.windows(val, spec), want)


def test_an_honest_model_passes_and_is_scored_on_hidden_targets():
    val = _val()
    model = InProcess(_bigram)
    out = evaluator.run(model, val, SPEC, secret=1, causality_batches=2, tolerance=1e-3)
    assert out.gate is None, out.reason
    win = evaluator.windows(val, SPEC)
    nats = F.cross_entropy(_bigram(win[:, :-1]).reshape(-1, 256), win[:, 1:].reshape(-1), reduction="sum")
    assert out.val_bpb == pytest.approx(float(nats) / (math.log(2) * win[:, 1:].numel()), rel=1e-6)
    assert model.calls == 2 * (SPEC.windows // SPEC.batch) + 2     # two passes and two probes
    assert set(out.seconds) == {"startup", "metric", "gates"}


def test_a_model_that_peeks_at_the_next_token_fails_causality():
    out = evaluator.run(InProcess(_peek), _val(), SPEC, secret=2, causality_batches=2, tolerance=1e-3)
    assert out.gate == "causality" and out.val_bpb is None
    assert "looks at future tokens" in out.reason


def test_a_model_with_state_across_batches_fails_the_order_gate():
    seen = []

    def stateful(x):
        seen.append(1)
        return _bigram(x) * (1 + 0.05 * len(seen))   # grows more confident with every batch

    out = evaluator.run(InProcess(stateful), _val(), SPEC, secret=3, causality_batches=2, tolerance=1e-3)
    assert out.gate == "order" and "keeps state" in out.reason


@pytest.mark.parametrize("bad, gate", [(float("nan"), "finite"), (float("inf"), "finite")])
def test_non_finite_logits_fail(bad, gate):
    def fn(x):
        out = _bigram(x)
        out[0, 0, 0] = bad
        return out

    out = evaluator.run(InProcess(fn), _val(), SPEC, secret=4, causality_batches=2, tolerance=1e-3)
    assert out.gate == gate


def test_the_secret_decides_the_orders():
    orders = {tuple(evaluator._orders(8, __import__("random").Random(s))[0]) for s in range(5)}
    assert len(orders) > 1
    a, b = evaluator._orders(8, __import__("random").Random(0))
    assert a != b and sorted(a) == sorted(b) == list(range(8))


def test_gate_failure_names_its_gate():
    exc = GateFailure(evaluator.gates.Gate.ORDER, "why")
    assert str(exc) == "order gate: why"
