"""A FAKE karpathy/autoresearch checkout, for the adapter (`--task karpathy --repo PATH`).

The fake has the real one's shape, not its weight: a CPU `prepare.py` with a 1 s TIME_BUDGET
whose `evaluate_bpb` reads a number from its cache under `~/.cache/autoresearch`, and a
`train.py` with karpathy-style constants (literals, an expression, a tuple, a reporting one) that imports from
prepare and prints karpathy's summary keys. The host-side cache is a folder under tmp, found
through HOME (as prepare.py finds it) or through --cache.

Use the fixture with `from karpathy_checkout import checkout_fixture  # noqa: F401` in a test module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

VAL = 0.875  # what the fake's evaluate_bpb reads from the cache; it adds 0.001 per DEPTH

PREPARE = '''"""Fake prepare.py: karpathy-shaped, CPU only; its data lives under ~/.cache/autoresearch."""
import os

MAX_SEQ_LEN = 64
TIME_BUDGET = 1
CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "autoresearch")


class Tokenizer:
    @classmethod
    def from_directory(cls):
        return cls()


def make_dataloader(tokenizer, B, T, split):
    while True:
        yield B, T, 1


def evaluate_bpb(model, tokenizer, batch_size):
    with open(os.path.join(CACHE_DIR, "val.txt")) as f:
        return float(f.read()) + 0.001 * model["depth"]
'''

TRAIN = '''"""Fake train.py: karpathy-style constants and summary block, no GPU."""
import time

from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, evaluate_bpb, make_dataloader

ASPECT_RATIO = 64        # model_dim = depth * ASPECT_RATIO
WINDOW_PATTERN = "SSSL"  # sliding window pattern
TOTAL_BATCH_SIZE = 2**19 # an expression of literals: tunable, by powers of two
EMBEDDING_LR = 0.6       # learning rate for the embeddings
WARMUP_RATIO = 0.0
ADAM_BETAS = (0.8, 0.95) # a tuple: tunable element by element
PEAK_FLOPS = 989.5e12    # a reporting constant: never tunable
USE_VE = True
OFFSET = -8
DEPTH = 8                # transformer layers
LONG = (
    1)
lower_case = 3

t_start = time.time()
tok = Tokenizer.from_directory()
loader = make_dataloader(tok, 4, MAX_SEQ_LEN, "train")
step, training = 0, 0.0
while training < TIME_BUDGET:
    next(loader)
    time.sleep(0.05)
    step += 1
    training = time.time() - t_start
val_bpb = evaluate_bpb({"depth": DEPTH}, tok, 4)
print("---")
print(f"val_bpb:          {val_bpb:.6f}")
print(f"training_seconds: {training:.1f}")
print(f"total_seconds:    {time.time() - t_start:.1f}")
print("peak_vram_mb:     12.5")
print(f"num_steps:        {step}")
print(f"depth:            {DEPTH}")
'''


@pytest.fixture(name="checkout")
def checkout_fixture(tmp_path: Path) -> dict[str, Path]:
    """A fake checkout whose prepare.py 'has run': the cache under a tmp HOME holds val.txt."""
    repo, home = tmp_path / "autoresearch", tmp_path / "home"
    repo.mkdir()
    (repo / "prepare.py").write_text(PREPARE)
    (repo / "train.py").write_text(TRAIN)
    cache = home / ".cache" / "autoresearch"
    cache.mkdir(parents=True)
    (cache / "val.txt").write_text(f"{VAL}\n")
    return {"repo": repo, "home": home, "cache": cache, "tmp": tmp_path}
