"""Trusted harness for tinygpt: data loading, batch sampling and the val_bpb metric.

Why it is separate from train.py: the script is rewritten per trial, the harness never is.
It lives in the trial image (the launcher puts it on sys.path and may set DATA_DIR), so the
metric is computed by this code on a fixed slice of the held-out plays, whatever the script's
constants. Imports only the standard library and torch.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

DATA_DIR = "/data"      # read-only split from corpus.prepare(); the launcher may overwrite this
VOCAB_SIZE = 256        # bytes
MAX_SEQ_LEN = 128       # context length: every eval window has exactly this many bytes
EVAL_WINDOWS = 256      # windows spread evenly over val: 256 * 128 = 32768 scored bytes
EVAL_BATCH = 32         # windows per forward pass (memory only; the result does not depend on it)
# One CPU thread: on a 2-core box a second thread makes these tiny models ~1.5x faster when the
# machine is idle, but ~20x slower as soon as anything else runs (OpenMP threads spin at every
# barrier), and a wall-clock budget turns that into val_bpb noise. One thread stays steady.
CPU_THREADS = 1


def load_split(split: str) -> torch.Tensor:
    """The bytes of 'train' or 'val' as a 1-D uint8 tensor."""
    if split not in ("train", "val"):
        raise ValueError(f"unknown split {split!r}")
    data = Path(DATA_DIR, f"{split}.bin").read_bytes()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def get_batch(
    data: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows (inputs, next-byte targets) as int64 tensors of shape (B, T)."""
    if not 1 <= seq_len <= MAX_SEQ_LEN:
        raise ValueError(f"seq_len must lie in [1, {MAX_SEQ_LEN}], got {seq_len}")
    starts = torch.randint(len(data) - seq_len - 1, (batch_size,), generator=generator)
    offsets = torch.arange(seq_len + 1)
    chunk = data[starts[:, None] + offsets].long()
    return chunk[:, :-1].to(device), chunk[:, 1:].to(device)


def eval_windows(val: torch.Tensor) -> torch.Tensor:
    """The fixed eval set: EVAL_WINDOWS windows of MAX_SEQ_LEN + 1 bytes, evenly spaced."""
    last = len(val) - MAX_SEQ_LEN - 1
    starts = torch.tensor([i * last // (EVAL_WINDOWS - 1) for i in range(EVAL_WINDOWS)])
    return val[starts[:, None] + torch.arange(MAX_SEQ_LEN + 1)].long()


@torch.no_grad()
def evaluate_bpb(model: torch.nn.Module, device: torch.device | str = "cpu") -> float:
    """Bits per byte of `model` on the fixed eval set; model(idx) must give (B, T, 256) logits.

    Summed cross-entropy in nats over every scored byte, divided by ln 2 and the byte count.
    """
    windows = eval_windows(load_split("val"))
    was_training = model.training
    model.eval()
    nats, count = 0.0, 0
    try:
        for i in range(0, len(windows), EVAL_BATCH):
            chunk = windows[i : i + EVAL_BATCH].to(device)
            x, y = chunk[:, :-1], chunk[:, 1:]
            logits = model(x)
            want = (*x.shape, VOCAB_SIZE)
            if tuple(logits.shape) != want:
                raise ValueError(f"logits shape {tuple(logits.shape)}, expected {want}")
            logits = logits.float().reshape(-1, VOCAB_SIZE)
            nats += F.cross_entropy(logits, y.reshape(-1), reduction="sum").item()
            count += y.numel()
    finally:
        model.train(was_training)
    return nats / (math.log(2) * count)
