"""The gates a code-mode number must pass before it is accepted; each failure names its gate.

Each gate answers one way an LLM-written model could score well without predicting well:

- checkpoint: weights only (never a pickle, which would run code when loaded), within the size
  and parameter caps, so a model cannot buy its score with memory it was not allowed;
- interface: `build_model(config)` builds a model the checkpoint fits, strictly;
- shape and finite: logits (B, T, vocabulary), every one finite, so the loss is defined;
- causality: the logits at positions <= t do not move when the tokens after t change, so the
  model cannot read the next token from its input (the targets are the inputs shifted by one);
- order: two passes over the batches in different secret orders agree batch by batch, so the
  model cannot carry what it saw in one batch into another (a cache of the validation text);
- deadline and memory: the evaluation's own limits (enforced in `channel`).

Pure functions over host data; `evaluator` calls them.
"""

from __future__ import annotations

import json
import os
import stat

import torch

from bilevel.runtime.evaluation import checkpoint_format
from bilevel.runtime.vocabulary import Gate


class GateFailure(Exception):
    """A gate the model did not pass; `gate` names it (a `vocabulary.Gate`)."""

    def __init__(self, gate: Gate, reason: str) -> None:
        super().__init__(f"{gate} gate: {reason}")
        self.gate, self.reason = gate, reason


def checkpoint(path: str, *, max_mb: float, max_params: int) -> checkpoint_format.Header:
    """The checkpoint's header after every rule of the format and the policy's caps."""
    try:
        header = checkpoint_format.read_header(path, int(max_mb * 2**20))
    except checkpoint_format.FormatError as exc:
        raise GateFailure(Gate.CHECKPOINT, f"not a weights-only checkpoint: {exc}") from None
    if header.num_params > max_params:
        raise GateFailure(Gate.CHECKPOINT, f"{header.num_params} parameters, over the cap of {max_params}")
    return header


def read_plain(path: str, cap: int) -> bytes:
    """A file the sandbox wrote, read as data: a regular file (a link is never followed), capped."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise GateFailure(Gate.INTERFACE, f"{os.path.basename(path)} cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise GateFailure(Gate.INTERFACE, f"{os.path.basename(path)} is not a regular file")
        data = f.read(cap + 1)
    if len(data) > cap:
        raise GateFailure(Gate.INTERFACE, f"{os.path.basename(path)} is over its cap of {cap} bytes")
    return data


def config(data: bytes) -> dict:
    """The model's config: a JSON object (NaN and Infinity refused)."""
    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=refuse)
    except (ValueError, RecursionError) as exc:
        raise GateFailure(Gate.INTERFACE, f"model.json is not JSON: {str(exc)[:120]}") from None
    if not isinstance(value, dict):
        raise GateFailure(Gate.INTERFACE, "model.json is not a JSON object")
    return value


def logits(raw: bytes, shape: tuple[int, int, int]) -> torch.Tensor:
    """The reply's bytes as float32 logits, every one finite."""
    out = torch.frombuffer(bytearray(raw), dtype=torch.float32).reshape(shape)
    if not bool(torch.isfinite(out).all()):
        bad = int((~torch.isfinite(out)).sum())
        raise GateFailure(Gate.FINITE, f"{bad} of {out.numel()} logits are not finite")
    return out


def causal(base: torch.Tensor, probe: torch.Tensor, cuts: list[int], tolerance: float) -> None:
    """Row i of `probe` had every token after position cuts[i] changed: its log-probabilities at
    positions <= cuts[i] must equal `base`'s within `tolerance`."""
    lb, lp = torch.log_softmax(base, -1), torch.log_softmax(probe, -1)
    for i, cut in enumerate(cuts):
        diff = float((lb[i, : cut + 1] - lp[i, : cut + 1]).abs().max())
        if diff > tolerance:
            raise GateFailure(Gate.CAUSALITY, f"the prediction at position <= {cut} changed by {diff:.3g} when "
                              f"only tokens after position {cut} changed: the model looks at future tokens")


def same_order(bpb_a: list[float], bpb_b: list[float], tolerance: float) -> None:
    """Per batch, bits per byte in the first and the second pass (different orders) agree."""
    for i, (a, b) in enumerate(zip(bpb_a, bpb_b, strict=True)):
        if abs(a - b) > tolerance:
            raise GateFailure(Gate.ORDER, f"batch {i} scored {a:.4f} bpb in one pass and {b:.4f} in another, "
                              "in a different order: the model keeps state across batches")
