"""Structured logging: JSON lines, every event bound to a run id and a trial id.

Why: an unattended run is read the next morning from its log, so each event must say
which run, iteration, trial and mechanism it belongs to.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, TextIO

import structlog

_configured = False


def configure(stream: TextIO | None = None, path: Path | None = None, level: int = logging.INFO) -> None:
    """Send JSON-line events to `path` (appended) or to `stream` (stderr by default)."""
    global _configured
    out: TextIO = open(path, "a", buffering=1) if path is not None else (stream or sys.stderr)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(run_id: str | None = None, trial_id: str | None = None, **ids: Any):
    """A logger whose every event carries `run_id` and `trial_id` (null when not in one)."""
    if not _configured:
        configure(level=logging.WARNING)
    return structlog.get_logger().bind(run_id=run_id, trial_id=trial_id, **ids)
