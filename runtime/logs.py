"""Structured logging: JSON lines, every event bound to a run id and a trial id.

Why: an unattended run is read the next morning from its log, so each event must say
which run, iteration, trial and mechanism it belongs to. A run configures its log file; a
command that logs without one (`bilevel mechanism check`, `replay ... mechanism`, `trial`) shows
its warnings on the terminal as sentences, never as JSON lines among its human output (and
never on stdout, where `--json` output goes).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, TextIO

import structlog

from bilevel.runtime.outputs.safe_text import for_terminal

_configured = False


def sentence(_logger: Any, _method: str, event: dict[str, Any]) -> str:
    """An event as one terminal line: `bilevel: warning: mechanism quarantined (id=3, reason=...)`.
    Its values may quote sandbox or LLM text: control characters are escaped (safe_text's rule)."""
    level, name = event.pop("level", "info"), str(event.pop("event", "")).replace("_", " ")
    event.pop("timestamp", None)
    fields = ", ".join(f"{k}={v}" for k, v in sorted(event.items()) if v is not None)
    return for_terminal(f"bilevel: {level}: {name}" + (f" ({fields})" if fields else ""))


def configure(stream: TextIO | None = None, path: Path | None = None, level: int = logging.INFO,
              human: bool = False) -> None:
    """Send JSON-line events to `path` (appended) or to `stream` (stderr by default); `human`:
    sentences in place of JSON lines, for a terminal."""
    global _configured
    out: TextIO = open(path, "a", buffering=1) if path is not None else (stream or sys.stderr)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            sentence if human else structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(run_id: str | None = None, trial_id: str | None = None, **ids: Any):
    """A logger whose every event carries `run_id` and `trial_id` (null when not in one)."""
    if not _configured:
        configure(level=logging.WARNING, human=True)
    return structlog.get_logger().bind(run_id=run_id, trial_id=trial_id, **ids)
