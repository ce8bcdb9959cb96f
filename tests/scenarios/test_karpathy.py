"""`--task karpathy --repo PATH` through the CLI, on a FAKE checkout (tests/helpers/karpathy_checkout.py):
errors that exit 2 before any container, then trials and a run through the real daemon."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from bilevel.runtime.journal.store import Journal

from bilevel_cli import BILEVEL
from karpathy_checkout import PREPARE, VAL, checkout_fixture  # noqa: F401 - the `checkout` fixture

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


def _no_daemon(tmp: Path) -> dict:
    # Were a container started, this socket would fail it with "no Docker daemon answers".
    return {"DOCKER_HOST": f"unix://{tmp}/no-daemon.sock"}


@pytest.mark.parametrize("case", ["no-repo", "repo-with-tinygpt", "missing-cache", "missing-prepare",
                                  "budget-mismatch", "run-budget-mismatch", "untunable-set"])
def test_cli_errors_exit_2_without_a_container(checkout, case):
    repo, home, tmp = checkout["repo"], checkout["home"], checkout["tmp"]
    args, want = {
        "no-repo": (["trial", "--task", "karpathy"], "needs --repo PATH"),
        "repo-with-tinygpt": (["run", "--repo", str(repo)],
                              "--repo, --cache, --space and --smoke are for --task karpathy"),
        "missing-cache": (["trial", "--task", "karpathy", "--repo", str(repo), "--cache", str(tmp / "nope")],
                          "run `uv run prepare.py` (or `python prepare.py`)"),
        "missing-prepare": (["trial", "--task", "karpathy", "--repo", str(repo)], "no prepare.py"),
        "budget-mismatch": (["trial", "--task", "karpathy", "--repo", str(repo), "--budget", "30"],
                            "prepare.py's TIME_BUDGET (1 s)"),
        "run-budget-mismatch": (["run", "--task", "karpathy", "--repo", str(repo), "--budget", "5",
                                 "--run-dir", str(tmp / "run")], "prepare.py's TIME_BUDGET (1 s)"),
        "untunable-set": (["trial", "--task", "karpathy", "--repo", str(repo), "--set", "PEAK_FLOPS=8"],
                          "PEAK_FLOPS: not a tunable constant"),
    }[case]
    if case == "missing-prepare":
        (repo / "prepare.py").unlink()
    r = bilevel(*args, home=home, env=_no_daemon(tmp), timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert want in r.stderr and "Docker" not in r.stderr
    assert not (tmp / "run").exists()


@pytest.mark.parametrize("args", [["trial", "--task", "karpathy", "--json"],
                                  ["trial", "--json", "--budget", "soon"],
                                  ["status", "--json", "no-such-run"]])
def test_json_errors_are_one_json_object_with_the_exit_code(checkout, args):
    r = bilevel(*args, home=checkout["home"], env=_no_daemon(checkout["tmp"]), timeout=60)
    out = json.loads(r.stdout)                       # the whole of stdout: one object
    assert out["exit_code"] == r.returncode != 0 and out["error"], r.stdout + r.stderr


def test_human_mode_errors_are_a_sentence_not_json(checkout):
    r = bilevel("trial", "--task", "karpathy", home=checkout["home"], env=_no_daemon(checkout["tmp"]), timeout=60)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.startswith("bilevel: ")
    assert not any(line.lstrip().startswith("{") for line in r.stderr.splitlines())


DIVISIBLE = """[[rules]]
expr = "TOTAL_BATCH_SIZE % (DEPTH * MAX_SEQ_LEN) == 0"
why = "train.py asserts it"
[params.DEPTH]
type = "int"
min = 2
max = 12
"""


def test_a_rule_of_the_space_file_refuses_a_value_before_any_container(checkout):
    """The script would assert on DEPTH=6 (2**19 is no multiple of 6 * 64): refused first, exit 2."""
    space = checkout["tmp"] / "space.toml"
    space.write_text(DIVISIBLE)
    r = bilevel("trial", "--task", "karpathy", "--repo", str(checkout["repo"]), "--space", str(space),
                "--set", "DEPTH=6", home=checkout["home"], env=_no_daemon(checkout["tmp"]), timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "breaks the constraint TOTAL_BATCH_SIZE % (DEPTH * MAX_SEQ_LEN) == 0" in r.stderr
    assert "DEPTH=6" in r.stderr and "train.py asserts it" in r.stderr and "Docker" not in r.stderr


# ---- through the real daemon --------------------------------------------------------------------


@pytest.mark.docker
def test_preflight_names_a_missing_import_and_an_unreadable_cache_before_any_trial(checkout, docker_client):
    repo, cache = checkout["repo"], checkout["cache"]
    (repo / "train.py").write_text("import notamodule_xyz\n" + (repo / "train.py").read_text())
    secret = cache / "tokenizer"
    secret.mkdir()
    (secret / "tokenizer.pkl").write_bytes(b"x")
    secret.chmod(0o700)                               # as a karpathy-style prepare.py makes it
    out = checkout["tmp"] / "t"
    r = bilevel("trial", "--task", "karpathy", "--repo", str(repo), "--out", str(out), home=checkout["home"])
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "train.py/prepare.py import notamodule_xyz, which the trial image lacks" in r.stderr
    assert "no pyproject.toml or uv.lock" in r.stderr     # the fix names where packages come from
    assert "not readable by the sandbox user" in r.stderr and str(secret) in r.stderr
    assert f"chmod -R a+rX {cache}" in r.stderr
    assert not out.exists()                           # no trial started
    d = bilevel("doctor", "--task", "karpathy", "--repo", str(repo), home=checkout["home"])
    assert d.returncode == 1 and "notamodule_xyz" in d.stdout and f"chmod -R a+rX {cache}" in d.stdout, d.stdout
    secret.chmod(0o755)
    (repo / "train.py").write_text((repo / "train.py").read_text().replace("import notamodule_xyz\n", ""))
    d = bilevel("doctor", "--task", "karpathy", "--repo", str(repo), home=checkout["home"])
    assert "ok  ] checkout pre-flight" in d.stdout, d.stdout


SLEEPER = """print("step 00001 | loss 9.9")   # no flush: only an unbuffered launcher keeps it
import time
time.sleep(120)
"""


@pytest.mark.docker
def test_a_trial_killed_at_its_deadline_keeps_what_it_printed(checkout, docker_client):
    policy = checkout["tmp"] / "policy.toml"
    policy.write_text("[trial]\ngrace_s = 3\n")
    script = checkout["tmp"] / "sleeper.py"
    script.write_text(SLEEPER)
    r = bilevel("trial", "--task", "karpathy", "--repo", str(checkout["repo"]), "--script", str(script),
                "--policy", str(policy), "--json", "--out", str(checkout["tmp"] / "t"), home=checkout["home"])
    out = json.loads(r.stdout)
    assert out["status"] == "timeout", out
    assert "budget 1 s + grace 3 s, policy trial.grace_s" in out["reason"]
    assert "step 00001 | loss 9.9" in out["log_tail"]
    assert "step 00001" in (checkout["tmp"] / "t" / "log.txt").read_text()


@pytest.mark.docker
def test_trial_reads_the_cache_under_the_sandbox_home_and_sees_set_values(checkout, docker_client):
    r = bilevel("trial", "--task", "karpathy", "--repo", str(checkout["repo"]), "--json",
                "--out", str(checkout["tmp"] / "t1"), home=checkout["home"])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["status"] == "ok" and out["val_bpb"] == pytest.approx(VAL + 0.008)
    assert out["peak_mem_mb"] == 12.5                     # karpathy's peak_vram_mb
    assert 1.0 <= out["training_seconds"] < 3            # prepare.py's TIME_BUDGET
    r = bilevel("trial", "--task", "karpathy", "--repo", str(checkout["repo"]), "--json", "--set", "DEPTH=16",
                "--cache", str(checkout["cache"]), "--out", str(checkout["tmp"] / "t2"),
                home=checkout["tmp"] / "elsewhere")        # the cache comes from --cache, not HOME
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["val_bpb"] == pytest.approx(VAL + 0.016) and "depth:            16" in out["log_tail"]
    assert "DEPTH = 16 " in (checkout["tmp"] / "t2" / "train.py").read_text()
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
    status = json.loads(bilevel("status", str(run), "--json", home=checkout["home"]).stdout)
    grace = status["grace"]
    # The run's grace, measured on the baseline: its time outside the budget x 2 + 30 s, at least the policy's.
    assert grace["trial_id"] == 1 and grace["policy_grace_s"] == 60
    assert grace["grace_s"] == max(60, round(grace["overhead_s"] * 2 + 30)) and grace["overhead_s"] >= 0
    r = bilevel("replay", str(run), "trial", "0", home=checkout["home"])
    assert r.returncode == 0 and "same outcome" in r.stdout, r.stdout + r.stderr

    with (checkout["repo"] / "train.py").open("a") as f:
        f.write("# an edit after the run started\n")
    r = bilevel("resume", str(run), "--iterations", "3", home=checkout["home"], cwd=work)
    assert r.returncode == 2 and "the task's train.py changed since the run started" in r.stderr, r.stderr
    with Journal.open_readonly(run) as j:
        assert len(j.trials()) == 3                      # nothing ran
