"""Every test has a timeout (pyproject's `timeout`): a broken wall fails CI, it does not hang it.

With the supervisor's deadline kill removed, the deadline test once hung instead of failing. This
runs a hanging test under the suite's own configuration, with the timeout shortened, and checks
it fails, and that the session goes on to the next test.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib

from locations import ROOT

HANGS = """
import time

def test_hangs():
    time.sleep(600)

def test_after():
    assert True
"""


def test_the_suite_sets_a_per_test_timeout():
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert 60 <= ini["timeout"] <= 1800 and ini["timeout_method"] == "signal"


def test_a_hanging_test_fails_and_the_session_goes_on(tmp_path):
    (tmp_path / "test_hang.py").write_text(HANGS)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
                        str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), "-o", "timeout=2",
                        str(tmp_path / "test_hang.py")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout[-2000:]
    assert "Timeout" in r.stdout and "1 failed, 1 passed" in r.stdout, r.stdout[-2000:]
