"""tinygpt: a byte-level GPT trained on Shakespeare for a fixed wall-clock budget.

The constants below are the search space: a tuner rewrites their literals in a per-trial copy
(one `NAME = literal` per line). Data, batches and the val_bpb metric come from the trusted
harness, which the launcher puts on sys.path. Runs on CUDA when present, else on the CPU.
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
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from harness import CPU_THREADS, MAX_SEQ_LEN, VOCAB_SIZE, evaluate_bpb, get_batch, load_split

# Heads are HEAD_DIM wide, rounded to even for the rotary pairs; together need not match N_EMBD.
HEAD_DIM = max(2, N_EMBD // N_HEAD // 2 * 2)


def rotary(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs by position: attention then sees relative offsets, which lets a byte
    model learn to look back a few bytes far sooner than with learned position embeddings."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * freqs).flatten(-2).type_as(x)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head_dim = HEAD_DIM
        self.ln1 = nn.LayerNorm(N_EMBD)
        self.qkv = nn.Linear(N_EMBD, 3 * N_HEAD * self.head_dim, bias=False)
        self.proj = nn.Linear(N_HEAD * self.head_dim, N_EMBD, bias=False)
        self.ln2 = nn.LayerNorm(N_EMBD)
        self.fc = nn.Linear(N_EMBD, MLP_RATIO * N_EMBD, bias=False)
        self.out = nn.Linear(MLP_RATIO * N_EMBD, N_EMBD, bias=False)
        self.drop = nn.Dropout(DROPOUT)

    def forward(self, x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        qkv = self.qkv(self.ln1(x)).view(B, T, 3, N_HEAD, self.head_dim).transpose(1, 3)
        q, k = rotary(qkv[:, :, :2], freqs).unbind(2)  # (B, heads, T, head_dim) each
        y = F.scaled_dot_product_attention(
            q, k, qkv[:, :, 2], is_causal=True,
            dropout_p=DROPOUT if self.training else 0.0,
        )
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(B, T, -1)))
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))


class GPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB_SIZE, N_EMBD)
        self.blocks = nn.ModuleList(Block() for _ in range(N_LAYER))
        self.ln_f = nn.LayerNorm(N_EMBD)
        self.head = nn.Linear(N_EMBD, VOCAB_SIZE, bias=False)
        if TIE_EMBEDDINGS:
            self.head.weight = self.tok.weight
        for name, p in self.named_parameters():
            if p.dim() == 2:  # residual outputs start small so deep stacks begin near identity
                residual = name.endswith(("proj.weight", "out.weight"))
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * N_LAYER) if residual else 0.02)
        inv_freq = 10000.0 ** (-torch.arange(0, HEAD_DIM, 2) / HEAD_DIM)
        angles = torch.outer(torch.arange(MAX_SEQ_LEN), inv_freq)
        freqs = torch.polar(torch.ones_like(angles), angles)  # e^(i * position * frequency)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.tok(idx)
        for block in self.blocks:
            x = block(x, self.freqs[:T])
        return self.head(self.ln_f(x))


def lr_scale(progress: float) -> float:
    """Warmup, flat, then linear cooldown to FINAL_LR_FRAC; valid for any fractions in [0, 1]."""
    warm = progress / WARMUP_FRAC if WARMUP_FRAC > 0 else 1.0
    cool = (1 - progress) / COOLDOWN_FRAC if COOLDOWN_FRAC > 0 else 1.0
    cool = FINAL_LR_FRAC + (1 - FINAL_LR_FRAC) * max(0.0, cool)
    return min(1.0, warm, cool)


# ---------------------------------------------------------------------------- setup
torch.manual_seed(SEED)
gen = torch.Generator().manual_seed(SEED)
cuda = torch.cuda.is_available()
device = torch.device("cuda" if cuda else "cpu")
if not cuda:
    torch.set_num_threads(CPU_THREADS)
autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)  # bf16 on GPU only
train_data = load_split("train")

model = GPT().to(device)
num_params = sum(p.numel() for p in model.parameters())
decay = [p for p in model.parameters() if p.dim() == 2]
no_decay = [p for p in model.parameters() if p.dim() < 2]
optimizer = torch.optim.AdamW(
    [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
    lr=LEARNING_RATE, betas=(0.9, BETA2), fused=cuda,
)
print(f"params {num_params / 1e6:.3f}M | device {device} | threads {torch.get_num_threads()}",
      flush=True)

# ---------------------------------------------------------------------------- training
# The clock counts only time spent in steps; the first step (warm-up of kernels and
# allocators) is excluded, so the budget measures training, not start-up.
step, training_time, last_print = 0, 0.0, 0.0
while True:
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
    loss_f = loss.item()  # also synchronizes CUDA, so the timing below is real
    if not math.isfinite(loss_f) or loss_f > 100:
        print(f"FAIL: loss {loss_f} at step {step}", flush=True)
        raise SystemExit(1)
    if step > 0:
        training_time += time.perf_counter() - t0
    step += 1
    if training_time - last_print >= 5 or step == 1:
        last_print = training_time
        print(f"step {step:05d} | loss {loss_f:.4f} | lr {lr:.2e} | {training_time:5.1f}s",
              flush=True)
    if training_time >= TIME_BUDGET:
        break

# ---------------------------------------------------------------------------- evaluation
with autocast:
    val_bpb = evaluate_bpb(model, device)
if cuda:
    peak_mem_mb = torch.cuda.max_memory_allocated() / 2**20
else:
    peak_mem_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("---")
print(f"val_bpb: {val_bpb:.6f}")
print(f"training_seconds: {training_time:.1f}")
print(f"peak_mem_mb: {peak_mem_mb:.1f}")
print(f"num_steps: {step}")
print(f"num_params_M: {num_params / 1e6:.1f}")
