"""Trusted training-side harness for tinygpt in code mode: the training split, batches, saving.

Why it differs from `harness.py`: in code mode the script is LLM-written code, so nothing it can
reach may compute or see the metric. This harness holds no evaluation at all, and only the
training split is mounted in the training container (the validation split is not there to
read). The script saves its model with `save_model`, as a weights-only checkpoint
(`checkpoint_format`: no pickle) plus its config, into /out; the host's evaluator measures it.
Mounted read-only into the training container (and into the model container, where there is
no data at all, so that the model's source can import it). Byte-level, like `harness.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import checkpoint_format
import torch

DATA_DIR = "/data"      # holds train.bin only in code mode; the launcher may overwrite this
OUT_DIR = "/out"
VOCAB_SIZE = 256        # bytes
MAX_SEQ_LEN = 128       # the evaluator feeds windows of exactly this many bytes
CPU_THREADS = 1         # as harness.py: one thread stays steady on a loaded machine
DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
          torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
          torch.bool: "BOOL"}


def load_split(split: str) -> torch.Tensor:
    """The bytes of 'train' as a 1-D uint8 tensor (the validation split is not mounted)."""
    if split != "train":
        raise ValueError(f"code mode trains on the 'train' split only, not {split!r}")
    data = Path(DATA_DIR, "train.bin").read_bytes()
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


def save_model(model: torch.nn.Module, config: dict, out_dir: str = OUT_DIR) -> None:
    """The declared interface's output: `model.safetensors` (weights only) and `model.json`
    (the config the evaluator passes to the script's `build_model(config)`)."""
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t   # numpy has no bfloat16
        tensors[name] = (DTYPES[t.dtype], tuple(t.shape), raw.numpy().tobytes())
    checkpoint_format.write(os.path.join(out_dir, "model.safetensors"), tensors)
    with open(os.path.join(out_dir, "model.json"), "w") as f:
        json.dump(config, f)
