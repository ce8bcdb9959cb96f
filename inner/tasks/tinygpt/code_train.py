"""tinygpt in code mode: the whole training script is the candidate, model and training alike.

The declared interface (README "Code mode"): this module defines `build_model(config)`, whose
forward maps token ids (B, T) to logits (B, T, 256), and trains only under `__main__`; at the end
it saves the model with `harness.save_model(model, config)` (weights-only checkpoint plus the
config) into /out. The evaluator imports this module in a container of its own with no data,
calls `build_model(config)`, loads the checkpoint and measures val_bpb itself: whatever this
script prints is not the metric. Only the training split is mounted here.
"""
# The tunable constants come first, before the imports.
# ruff: noqa: E402

N_LAYER = 2             # transformer blocks
N_EMBD = 64             # model width
N_HEAD = 2              # attention heads, each about N_EMBD // N_HEAD wide (rotary: even)
MLP_RATIO = 4           # hidden width of the MLP, as a multiple of N_EMBD
BATCH_SIZE = 16         # sequences per step
LEARNING_RATE = 1e-3    # peak AdamW learning rate
WEIGHT_DECAY = 0.1      # AdamW weight decay, on matrices only
BETA2 = 0.99            # AdamW second-moment decay
WARMUP_FRAC = 0.05      # fraction of the time budget spent warming the LR up
COOLDOWN_FRAC = 0.5     # fraction of the time budget spent decaying the LR at the end
FINAL_LR_FRAC = 0.1     # LR at the end, as a fraction of LEARNING_RATE
GRAD_CLIP = 1.0         # max gradient norm (0 disables clipping)
DROPOUT = 0.0           # dropout in attention and MLP outputs
TIE_EMBEDDINGS = False  # share the input embedding with the output head
TIME_BUDGET = 30        # seconds of training, counted after start-up (set by the runtime)
SEED = 1337             # set by the runtime

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from harness import CPU_THREADS, MAX_SEQ_LEN, VOCAB_SIZE, get_batch, load_split, save_model


def model_config() -> dict:
    """What build_model needs, from the constants: saved beside the weights as model.json."""
    return {"n_layer": N_LAYER, "n_embd": N_EMBD, "n_head": N_HEAD, "mlp_ratio": MLP_RATIO,
            "dropout": DROPOUT, "tie_embeddings": TIE_EMBEDDINGS}


def rotary(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs by position, so attention sees relative offsets."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * freqs).flatten(-2).type_as(x)


class Block(nn.Module):
    def __init__(self, cfg: dict, head_dim: int) -> None:
        super().__init__()
        n_embd, self.n_head, self.head_dim = cfg["n_embd"], cfg["n_head"], head_dim
        self.ln1 = nn.LayerNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * self.n_head * head_dim, bias=False)
        self.proj = nn.Linear(self.n_head * head_dim, n_embd, bias=False)
        self.ln2 = nn.LayerNorm(n_embd)
        self.fc = nn.Linear(n_embd, cfg["mlp_ratio"] * n_embd, bias=False)
        self.out = nn.Linear(cfg["mlp_ratio"] * n_embd, n_embd, bias=False)
        self.dropout = cfg["dropout"]
        self.drop = nn.Dropout(self.dropout)

    def forward(self, x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        qkv = self.qkv(self.ln1(x)).view(B, T, 3, self.n_head, self.head_dim).transpose(1, 3)
        q, k = rotary(qkv[:, :, :2], freqs).unbind(2)
        y = F.scaled_dot_product_attention(
            q, k, qkv[:, :, 2], is_causal=True,
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(B, T, -1)))
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))


class GPT(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        n_embd, n_layer = cfg["n_embd"], cfg["n_layer"]
        head_dim = max(2, n_embd // cfg["n_head"] // 2 * 2)
        self.tok = nn.Embedding(VOCAB_SIZE, n_embd)
        self.blocks = nn.ModuleList(Block(cfg, head_dim) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, VOCAB_SIZE, bias=False)
        if cfg["tie_embeddings"]:
            self.head.weight = self.tok.weight
        for name, p in self.named_parameters():
            if p.dim() == 2:  # residual outputs start small so deep stacks begin near identity
                residual = name.endswith(("proj.weight", "out.weight"))
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer) if residual else 0.02)
        inv_freq = 10000.0 ** (-torch.arange(0, head_dim, 2) / head_dim)
        angles = torch.outer(torch.arange(MAX_SEQ_LEN), inv_freq)
        self.register_buffer("freqs", torch.polar(torch.ones_like(angles), angles), persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx)
        for block in self.blocks:
            x = block(x, self.freqs[: idx.shape[1]])
        return self.head(self.ln_f(x))


def build_model(config: dict) -> nn.Module:
    """The interface the evaluator calls: a model from its config, weights loaded afterwards."""
    return GPT(config)


def lr_scale(progress: float) -> float:
    """Warmup, flat, then linear cooldown to FINAL_LR_FRAC; valid for any fractions in [0, 1]."""
    warm = progress / WARMUP_FRAC if WARMUP_FRAC > 0 else 1.0
    cool = (1 - progress) / COOLDOWN_FRAC if COOLDOWN_FRAC > 0 else 1.0
    cool = FINAL_LR_FRAC + (1 - FINAL_LR_FRAC) * max(0.0, cool)
    return min(1.0, warm, cool)


def train() -> None:
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(CPU_THREADS)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)
    train_data = load_split("train")
    cfg = model_config()
    model = build_model(cfg).to(device)
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LEARNING_RATE, betas=(0.9, BETA2), fused=cuda,
    )
    print(f"params {sum(p.numel() for p in model.parameters()) / 1e6:.3f}M | device {device}", flush=True)
    # The first step (warm-up of kernels and allocators) is not counted against the budget.
    step, training_time, last_print = 0, 0.0, 0.0
    while training_time < TIME_BUDGET:
        t0 = time.perf_counter()
        lr = LEARNING_RATE * lr_scale(min(1.0, training_time / TIME_BUDGET))
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_data, BATCH_SIZE, MAX_SEQ_LEN, gen, device)
        with autocast:
            logits = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, VOCAB_SIZE), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if GRAD_CLIP > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        loss_f = loss.item()
        if not math.isfinite(loss_f) or loss_f > 100:
            raise SystemExit(f"FAIL: loss {loss_f} at step {step}")
        if step > 0:
            training_time += time.perf_counter() - t0
        step += 1
        if training_time - last_print >= 5 or step == 1:
            last_print = training_time
            print(f"step {step:05d} | loss {loss_f:.4f} | lr {lr:.2e} | {training_time:5.1f}s", flush=True)
    save_model(model.to("cpu").float(), cfg)
    print(f"saved the model after {step} steps", flush=True)


if __name__ == "__main__":
    train()
