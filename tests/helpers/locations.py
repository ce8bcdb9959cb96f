"""Paths of the checkout that tests read as files (never import): the repository root and the
folders of test data beside the tests that use them."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
# Hostile trial scripts, run in code mode (tests/sandbox/test_trial_hostile.py, tests/scenarios/test_trial.py).
HOSTILE = TESTS / "sandbox" / "hostile"
