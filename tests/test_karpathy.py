"""The karpathy/autoresearch adapter (`--task karpathy --repo PATH`) on a FAKE checkout.

The fake has the real one's shape, not its weight: a CPU `prepare.py` with a 1 s TIME_BUDGET
whose `evaluate_bpb` reads a number from its cache under `~/.cache/autoresearch`, and a
`train.py` with karpathy-style constants (literals, an expression, a tuple) that imports from
prepare and prints karpathy's summary keys. The host-side cache is a folder under tmp, found
through HOME (as prepare.py finds it) or through --cache. Trials go through the real daemon.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bilevel.inner.edits import EditError
from bilevel.inner.tasks import karpathy, resolve
from bilevel.runtime.journal.store import Journal
from bilevel.runtime.sandbox.outcome import SummaryParser

BILEVEL = [sys.executable, "-m", "bilevel.runtime"]
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
TOTAL_BATCH_SIZE = 2**19 # an expression: not tunable
EMBEDDING_LR = 0.6       # learning rate for the embeddings
WARMUP_RATIO = 0.0
ADAM_BETAS = (0.8, 0.95) # a tuple: not tunable
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

HOSTILE = '''"""Untrusted script (code mode): tries to change the mounted cache and prepare.py."""
import os

import prepare

cache = prepare.CACHE_DIR
with open("/tmp/evil.py", "w") as f:
    f.write("TIME_BUDGET = 9999\\n")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


attempts = {
    "create_in_cache": lambda: write(os.path.join(cache, "pwned"), "x"),
    "overwrite_cache_file": lambda: write(os.path.join(cache, "val.txt"), "0.001"),
    "delete_cache_file": lambda: os.remove(os.path.join(cache, "val.txt")),
    "chmod_cache": lambda: os.chmod(cache, 0o777),
    "rename_cache": lambda: os.rename(cache, cache + ".old"),
    "overwrite_prepare": lambda: write(prepare.__file__, "TIME_BUDGET = 9999\\n"),
    "replace_prepare": lambda: os.replace("/tmp/evil.py", prepare.__file__),
    "pycache_beside_prepare": lambda: os.mkdir(os.path.join(os.path.dirname(prepare.__file__), "__pycache__")),
}
for name, attempt in attempts.items():
    try:
        attempt()
        print(f"WROTE {name}")
    except OSError as exc:
        print(f"denied {name}: {type(exc).__name__}")
print("---")
print("val_bpb: 1.5")
print("training_seconds: 0.1")
'''


@pytest.fixture
def checkout(tmp_path: Path) -> dict[str, Path]:
    """A fake checkout whose prepare.py 'has run': the cache under a tmp HOME holds val.txt."""
    repo, home = tmp_path / "autoresearch", tmp_path / "home"
    repo.mkdir()
    (repo / "prepare.py").write_text(PREPARE)
    (repo / "train.py").write_text(TRAIN)
    cache = home / ".cache" / "autoresearch"
    cache.mkdir(parents=True)
    (cache / "val.txt").write_text(f"{VAL}\n")
    return {"repo": repo, "home": home, "cache": cache, "tmp": tmp_path}


def bilevel(*args: str, home: Path, cwd: Path | None = None, env: dict | None = None,
            timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*BILEVEL, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "HOME": str(home), **(env or {})})


def tree_digest(*paths: Path) -> str:
    """Names, modes and bytes of every file under the paths: any change shows."""
    h = hashlib.sha256()
    for root in paths:
        for p in sorted([root, *root.rglob("*")] if root.is_dir() else [root]):
            h.update(f"{p}:{p.stat().st_mode:o}\0".encode())
            if p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


# ---- the task, without the daemon ---------------------------------------------------------------


def test_space_is_inferred_from_literal_upper_case_constants(checkout):
    task = karpathy.load_checkout(checkout["repo"], checkout["cache"])
    s = task.space
    assert sorted(s) == ["ASPECT_RATIO", "DEPTH", "EMBEDDING_LR", "OFFSET", "USE_VE", "WARMUP_RATIO",
                         "WINDOW_PATTERN"]          # not 2**19, the tuple, the multi-line one, lower case
    assert (s["ASPECT_RATIO"].type, s["ASPECT_RATIO"].min, s["ASPECT_RATIO"].max) == ("int", 16, 256)
    assert (s["DEPTH"].type, s["DEPTH"].min, s["DEPTH"].max) == ("int", 2, 32)
    assert (s["OFFSET"].type, s["OFFSET"].min, s["OFFSET"].max) == ("int", -32, -2)
    assert (s["EMBEDDING_LR"].type, s["EMBEDDING_LR"].min, s["EMBEDDING_LR"].max) == ("float", 0.06, 6.0)
    assert (s["WARMUP_RATIO"].type, s["WARMUP_RATIO"].min, s["WARMUP_RATIO"].max) == ("float", 0.0, 1.0)
    assert s["USE_VE"].type == "bool"
    assert s["WINDOW_PATTERN"].type == "choice" and s["WINDOW_PATTERN"].values == ("SSSL",)
    assert s["DEPTH"].doc == "transformer layers"
    assert task.defaults()["DEPTH"] == 8 and task.defaults_budget() == 1.0
    # The script has no TIME_BUDGET or SEED: the runtime writes neither into it.
    assert task.runtime_values(budget=1.0, seed=3) == {}
    assert task.trial_inputs()["ro_mounts"] == (
        (checkout["repo"].resolve() / "prepare.py", "/bilevel/checkout/prepare.py"),
        (checkout["cache"].resolve(), "~/.cache/autoresearch"))
    with pytest.raises(EditError, match="TIME_BUDGET"):
        task.check_budget(30)
    task.check_budget(1)


def test_checkout_problems_are_refused_before_anything_runs(checkout):
    repo, cache = checkout["repo"], checkout["cache"]
    with pytest.raises(EditError, match="needs --repo"):
        resolve("karpathy")
    with pytest.raises(EditError, match="--repo and --cache are for --task karpathy"):
        resolve("tinygpt", repo=repo)
    empty = checkout["tmp"] / "empty-cache"
    empty.mkdir()
    with pytest.raises(EditError, match=r"missing or empty: run `uv run prepare.py`"):
        karpathy.load_checkout(repo, empty)
    assert not any(empty.iterdir())  # nothing created
    (repo / "prepare.py").unlink()
    with pytest.raises(EditError, match="no prepare.py"):
        karpathy.load_checkout(repo, cache)


def test_the_summary_parser_takes_karpathys_keys_and_stays_strict():
    block = (b"step 00010 | loss 3.2\n---\nval_bpb:          0.997900\ntraining_seconds: 300.1\n"
             b"total_seconds:    325.9\npeak_vram_mb:     45060.2\nmfu_percent:      39.80\n"
             b"total_tokens_M:   499.6\nnum_steps:        953\nnum_params_M:     50.3\ndepth:            8\n")
    p = SummaryParser()
    p.feed(block)
    metrics, problem = p.result()
    assert problem is None and metrics["val_bpb"] == 0.9979 and metrics["peak_vram_mb"] == 45060.2
    for tail, why in ((b"depth: 9\n", "repeated"), (b"---\nval_bpb: 0.1\ntraining_seconds: 1\n", "separators"),
                      (b"flops: 3\n", "unexpected line")):
        p = SummaryParser()
        p.feed(block + tail)
        assert p.result()[0] is None and why in p.result()[1]
    p = SummaryParser()
    p.feed(block.replace(b"0.997900", b"nan"))
    assert p.result()[0] is None


def _no_daemon(tmp: Path) -> dict:
    # Were a container started, this socket would fail it with "no Docker daemon answers".
    return {"DOCKER_HOST": f"unix://{tmp}/no-daemon.sock"}


@pytest.mark.parametrize("case", ["no-repo", "repo-with-tinygpt", "missing-cache", "missing-prepare",
                                  "budget-mismatch", "run-budget-mismatch", "untunable-set"])
def test_cli_errors_exit_2_without_a_container(checkout, case):
    repo, home, tmp = checkout["repo"], checkout["home"], checkout["tmp"]
    args, want = {
        "no-repo": (["trial", "--task", "karpathy"], "needs --repo PATH"),
        "repo-with-tinygpt": (["run", "--repo", str(repo)], "--repo and --cache are for --task karpathy"),
        "missing-cache": (["trial", "--task", "karpathy", "--repo", str(repo), "--cache", str(tmp / "nope")],
                          "run `uv run prepare.py` (or `python prepare.py`)"),
        "missing-prepare": (["trial", "--task", "karpathy", "--repo", str(repo)], "no prepare.py"),
        "budget-mismatch": (["trial", "--task", "karpathy", "--repo", str(repo), "--budget", "30"],
                            "prepare.py's TIME_BUDGET (1 s)"),
        "run-budget-mismatch": (["run", "--task", "karpathy", "--repo", str(repo), "--budget", "5",
                                 "--run-dir", str(tmp / "run")], "prepare.py's TIME_BUDGET (1 s)"),
        "untunable-set": (["trial", "--task", "karpathy", "--repo", str(repo), "--set", "TOTAL_BATCH_SIZE=8"],
                          "TOTAL_BATCH_SIZE: not a tunable constant"),
    }[case]
    if case == "missing-prepare":
        (repo / "prepare.py").unlink()
    r = bilevel(*args, home=home, env=_no_daemon(tmp), timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert want in r.stderr and "Docker" not in r.stderr
    assert not (tmp / "run").exists()


# ---- through the real daemon --------------------------------------------------------------------


@pytest.mark.docker
def test_trial_reads_the_cache_under_the_sandbox_home_and_sees_set_values(checkout, docker_client):
    r = bilevel("trial", "--task", "karpathy", "--repo", str(checkout["repo"]), "--json",
                "--out", str(checkout["tmp"] / "t1"), home=checkout["home"])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["status"] == "ok" and out["val_bpb"] == pytest.approx(VAL + 0.008)
    assert out["peak_mem_mb"] == 12.5                     # karpathy's peak_vram_mb
    assert 1.0 <= out["training_seconds"] < 3            # prepare.py's TIME_BUDGET
    r = bilevel("trial", "--task", "karpathy", "--repo", str(checkout["repo"]), "--json", "--set", "DEPTH=12",
                "--cache", str(checkout["cache"]), "--out", str(checkout["tmp"] / "t2"),
                home=checkout["tmp"] / "elsewhere")        # the cache comes from --cache, not HOME
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["val_bpb"] == pytest.approx(VAL + 0.012) and "depth:            12" in out["log_tail"]
    assert "DEPTH = 12 " in (checkout["tmp"] / "t2" / "train.py").read_text()
    assert "DEPTH = 8 " in (checkout["repo"] / "train.py").read_text()   # the checkout is never edited


@pytest.mark.docker
def test_the_sandbox_cannot_change_the_cache_or_prepare(checkout, docker_client):
    hostile = checkout["tmp"] / "hostile.py"
    hostile.write_text(HOSTILE)
    # World-writable on the host, so only the read-only mounts stand in the way.
    for path, mode in ((checkout["cache"], 0o777), (checkout["cache"] / "val.txt", 0o666),
                       (checkout["repo"], 0o777), (checkout["repo"] / "prepare.py", 0o666)):
        path.chmod(mode)
    before = tree_digest(checkout["cache"], checkout["repo"])
    r = bilevel("trial", "--task", "karpathy", "--repo", str(checkout["repo"]), "--script", str(hostile),
                "--json", "--out", str(checkout["tmp"] / "t"), home=checkout["home"])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    log = json.loads(r.stdout)["log_tail"]
    assert "WROTE" not in log
    for name in ("create_in_cache", "overwrite_cache_file", "delete_cache_file", "chmod_cache", "rename_cache",
                 "overwrite_prepare", "replace_prepare", "pycache_beside_prepare"):
        assert f"denied {name}" in log, log
    assert tree_digest(checkout["cache"], checkout["repo"]) == before
    assert (checkout["cache"] / "val.txt").read_text() == f"{VAL}\n"
    assert (checkout["repo"] / "prepare.py").read_text() == PREPARE


@pytest.mark.docker
def test_run_writes_results_and_resume_refuses_a_changed_checkout(checkout, docker_client):
    work = checkout["tmp"] / "work"
    work.mkdir()
    r = bilevel("run", "--task", "karpathy", "--repo", str(checkout["repo"]), "--iterations", "2",
                "--levels", "1", "--llm", "offline", home=checkout["home"], cwd=work)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    [run] = (work / "runs").glob("karpathy-L1-s0-*")      # the default run folder name
    rows = list(csv.reader((run / "results.tsv").read_text().splitlines(), delimiter="\t"))
    assert len(rows) == 4 and rows[1][1] == f"{VAL + 0.008:.6f}" and all(row[3] != "crash" for row in rows[1:])
    with Journal.open_readonly(run) as j:
        cfg = j.run()["config"]
    assert cfg["repo"] == str(checkout["repo"].resolve()) and cfg["budget"] == 1.0
    assert cfg["task_files"]["prepare.py"] == hashlib.sha256(PREPARE.encode()).hexdigest()
    r = bilevel("replay", str(run), "trial", "0", home=checkout["home"])
    assert r.returncode == 0 and "same outcome" in r.stdout, r.stdout + r.stderr

    with (checkout["repo"] / "train.py").open("a") as f:
        f.write("# an edit after the run started\n")
    r = bilevel("resume", str(run), "--iterations", "3", home=checkout["home"], cwd=work)
    assert r.returncode == 2 and "the task's train.py changed since the run started" in r.stderr, r.stderr
    with Journal.open_readonly(run) as j:
        assert len(j.trials()) == 3                      # nothing ran
