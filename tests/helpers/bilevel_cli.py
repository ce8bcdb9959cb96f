"""The `bilevel` command as tests run it: a subprocess of this interpreter, never an import."""

from __future__ import annotations

import os
import sys
from pathlib import Path

BILEVEL = [sys.executable, "-m", "bilevel.runtime"]


def no_daemon_env(tmp_path: Path) -> dict:
    # A socket path where nothing listens: a local file, no traffic anywhere.
    return {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock"}
