"""Acceptance follows its documented rule: strict or noise-aware, with mechanism votes."""

from __future__ import annotations

from bilevel.inner.acceptance import decide


def test_acceptance_rule():
    kw = dict(best=2.0, noise=0.05, votes=[])
    assert decide(mode="strict", status="ok", val_bpb=1.99, **kw)[0] == "keep"
    assert decide(mode="noise-aware", status="ok", val_bpb=1.99, **kw)[0] == "confirm"
    assert decide(mode="noise-aware", status="ok", val_bpb=1.90, **kw)[0] == "keep"
    assert decide(mode="strict", status="crash", val_bpb=None, **kw)[0] == "discard"
    veto = dict(best=2.0, noise=0.0, votes=[("m", "discard")])
    assert decide(mode="strict", status="ok", val_bpb=1.5, **veto)[0] == "discard"
    push = dict(best=2.0, noise=0.0, votes=[("m", "keep")])
    assert decide(mode="strict", status="ok", val_bpb=2.005, **push)[0] == "keep"
    assert decide(mode="strict", status="ok", val_bpb=2.5, **push)[0] == "discard"
    assert decide(mode="strict", status="timeout", val_bpb=None, **push)[0] == "discard"
