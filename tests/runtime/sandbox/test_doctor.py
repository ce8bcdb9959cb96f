"""`bilevel doctor` without a daemon: it names what is missing and how to fix it."""

from __future__ import annotations

import subprocess

from bilevel_cli import BILEVEL, no_daemon_env


def test_doctor_names_what_is_missing(tmp_path):
    r = subprocess.run([*BILEVEL, "doctor"], env=no_daemon_env(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "[MISSING] docker daemon" in r.stdout and "fix: bash scripts/engine.sh" in r.stdout
