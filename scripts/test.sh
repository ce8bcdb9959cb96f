#!/usr/bin/env bash
# Set everything up and run the whole test suite, the Docker-backed tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/bilevel images build
.venv/bin/ruff check .
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
code=$?
set -e
# pytest exits 5 when it collected no test: that is a failure, never a pass.
if [ "$code" -eq 5 ]; then
    echo "test.sh: no test was collected" >&2
    exit 1
fi
exit "$code"
