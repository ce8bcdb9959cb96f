"""Benchmark: what code mode's separate evaluation costs (prints figures; no pass/fail).

In one run on one machine, alternating, several times each:
- a params-mode trial (the template, its harness computes val_bpb in the training container) and
  a code-mode trial of the same model at the same budget (training container, then the model
  container and the trusted evaluator): median wall time of each and their ratio (target <= 1.10
  at a 30 s budget);
- the gates' share of the evaluation: the second pass and the causality probes, against the
  whole evaluation (model start, the metric pass, the gates);
- the channel: logits per second through the model container's stdio against the same model's
  forward pass in this process (the same checkpoint, loaded here from the code-mode trial).

    .venv/bin/python bench/code_mode.py --budget 30 --runs 3
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bilevel.inner import tasks
from bilevel.runtime import policy
from bilevel.runtime.evaluation import channel, checkpoint_format, evaluator
from bilevel.runtime.evaluation.code_trial import run_code_trial
from bilevel.runtime.outputs.cli import trial_script
from bilevel.runtime.sandbox import engine, executor


def _in_process_model(task: tasks.Task, work: Path):
    """The code-mode model, built here from its own source and checkpoint: trusted for the bench
    only because it is the shipped incumbent, never an LLM's edit."""
    sys.path.insert(0, str(Path(checkpoint_format.__file__).parent))
    sys.modules["harness"] = _load("harness", task.folder / task.code["harness"])
    module = _load("bench_model", work / "eval" / "model.py")
    cfg = __import__("json").loads((work / "eval" / "model.json").read_text())
    model = module.build_model(cfg)
    header, data = checkpoint_format.read(str(work / "eval" / "model.safetensors"), 1 << 30)
    state = {t.name: torch.frombuffer(bytearray(data[t.begin:t.end]), dtype=torch.float32).reshape(t.shape)
             for t in header.tensors.values()}
    model.load_state_dict(state)
    return model.eval()


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def channel_rate(client, pol, task, work: Path, batches: int = 20) -> tuple[float, float]:
    """Logits per second: through the model container's channel, and in this process."""
    spec = evaluator.Spec(**task.code_inputs()["spec"])
    x = torch.randint(0, 256, (spec.batch, spec.seq_len))
    ids = x.to(torch.int32).numpy().tobytes()
    files = channel.ModelFiles(folder=work / "eval", harness=task.code_inputs()["harness"])
    with channel.ModelContainer(client, pol, files, labels={}) as m:
        m.arm(time.monotonic() + 600)
        m.ready()
        m.forward(ids, spec.batch, spec.seq_len, spec.vocab)
        t0 = time.perf_counter()
        for _ in range(batches):
            m.forward(ids, spec.batch, spec.seq_len, spec.vocab)
        through = batches * x.numel() * spec.vocab / (time.perf_counter() - t0)
    torch.set_num_threads(1)
    model = _in_process_model(task, work)
    with torch.no_grad():
        model(x)
        t0 = time.perf_counter()
        for _ in range(batches):
            model(x).float().numpy().tobytes()
        local = batches * x.numel() * spec.vocab / (time.perf_counter() - t0)
    return through, local


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=30)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    task, pol, client = tasks.load(), policy.load(), engine.connect()
    params_script = trial_script(task, {}, args.budget)
    code_script = trial_script(task, {}, args.budget, "code")
    walls: dict[str, list[float]] = {"params": [], "code": []}
    shares, evals = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            p = executor.run_trial(client, pol, script=params_script, budget_s=args.budget,
                                   work_dir=Path(tmp) / f"p{i}", **task.trial_inputs())
            c = run_code_trial(client, pol, script=code_script, budget_s=args.budget, work_dir=Path(tmp) / f"c{i}",
                               code_inputs=task.code_inputs())
            assert p.status == "ok" and c.status == "ok", (p.reason, c.reason, c.log_tail[-800:])
            walls["params"].append(p.wall_seconds)
            walls["code"].append(c.wall_seconds)
            s = c.evaluation_seconds
            evals.append(sum(s.values()))
            shares.append(s["gates"] / sum(s.values()))
            print(f"run {i}: params {p.wall_seconds:.2f} s (val_bpb {p.val_bpb:.4f}), code {c.wall_seconds:.2f} s "
                  f"(val_bpb {c.val_bpb:.4f}; evaluation {s})", flush=True)
        through, local = channel_rate(client, pol, task, Path(tmp) / "c0")
    mp, mc = statistics.median(walls["params"]), statistics.median(walls["code"])
    print(f"budget {args.budget:.0f} s, {args.runs} runs each")
    print(f"median wall: params {mp:.2f} s, code {mc:.2f} s, ratio {mc / mp:.3f} (target <= 1.10)")
    print(f"evaluation: median {statistics.median(evals):.2f} s; gates' share (second pass + causality probes) "
          f"median {statistics.median(shares):.1%}")
    print(f"channel: {through:,.0f} logits/s through the model container vs {local:,.0f} in process "
          f"(ratio {through / local:.2f})")


if __name__ == "__main__":
    main()
