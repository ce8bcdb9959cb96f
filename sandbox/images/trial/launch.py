"""Trusted launcher for a trial: `python3 -I launch.py [--lib DIR] [--data DIR] SCRIPT`.

Why it exists: the container starts with an empty environment and `python3 -I`, so nothing
from outside decides the import path. The launcher puts the bundled site packages and the
task's trusted harness on sys.path, points the harness at the read-only data, and runs the
script as __main__. `--check` reports what the sandbox sees (Python, torch, CUDA) and exits.
"""

import json
import os
import runpy
import sys

SITE = "/bilevel/site"


def main(argv: list[str]) -> None:
    lib = data = None
    while argv and argv[0].startswith("--"):
        flag = argv.pop(0)
        if flag == "--check":
            sys.path.insert(0, SITE)
            import torch

            cuda = torch.cuda.is_available()
            print(json.dumps({
                "python": sys.version.split()[0],
                "torch": torch.__version__,
                "cuda": cuda,
                "gpu": torch.cuda.get_device_name(0) if cuda else None,
            }))
            return
        if flag == "--lib":
            lib = argv.pop(0)
        elif flag == "--data":
            data = argv.pop(0)
        else:
            sys.exit(f"launch.py: unknown flag {flag}")
    if len(argv) != 1:
        sys.exit("usage: launch.py [--lib DIR] [--data DIR] SCRIPT")
    script = argv[0]
    sys.path[:0] = [p for p in (lib, SITE) if p and os.path.isdir(p)]
    if data is not None and lib is not None:
        import harness

        harness.DATA_DIR = data
    sys.argv = [script]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
