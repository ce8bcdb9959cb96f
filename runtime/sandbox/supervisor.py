"""Watch one sandbox container to its end: deadline, output cap, log cap, kill.

Why here and not in Docker: `container.wait(timeout=...)` is only an HTTP read timeout, it
stops nothing. The supervisor owns the clock and kills the container itself (invariant 4).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from docker.errors import APIError, NotFound

from bilevel.runtime.sandbox.outcome import CappedLog, SummaryParser
from bilevel.runtime.sandbox.output_caps import OutputCaps, over_cap


@dataclass
class Watched:
    """What happened to a container, as facts for `outcome.classify`."""

    exit_code: int | None
    oom_killed: bool
    killed_for: str | None
    wall_seconds: float
    first_output_at: float | None   # time.monotonic() of the first byte of output
    log: CappedLog
    summary: SummaryParser


class _OutputWatch:
    """Scans the output folder against its caps, often, but never for most of the poll's time.

    A scan is bounded by the entry cap (see output_caps); still, a folder near its cap costs a
    few milliseconds, so the next scan waits at least four times as long as the last one took.
    """

    def __init__(self, out_dir: Path | None, caps: OutputCaps | None) -> None:
        self.out_dir, self.caps = out_dir, caps
        self.next_at = 0.0

    def check(self, *, force: bool = False) -> str | None:
        if self.out_dir is None or self.caps is None:
            return None
        now = time.monotonic()
        if not force and now < self.next_at:
            return None
        problem = over_cap(self.out_dir, self.caps)
        self.next_at = time.monotonic() + 4 * (time.monotonic() - now)
        return problem


def watch(
    container, *, deadline_s: float, log_cap: int, out_dir: Path | None = None,
    out_caps: OutputCaps | None = None, poll_s: float = 0.1, cancel: threading.Event | None = None,
) -> Watched:
    """Start `container` and supervise it; it is stopped (not removed) when this returns."""
    outputs = _OutputWatch(out_dir, out_caps)
    log, summary = CappedLog(log_cap), SummaryParser()
    first: list[float] = []
    t0 = time.monotonic()
    container.start()
    # logs=True: the engine replays what the script wrote before the attach, however soon it exits.
    stream = container.attach(stdout=True, stderr=True, stream=True, demux=True, logs=True)

    def pump() -> None:
        try:
            for out, err in stream:
                if not first:
                    first.append(time.monotonic())
                if out:
                    summary.feed(out)
                    log.write(out)
                if err:
                    log.write(err)
        except Exception:  # the stream breaks when the container is killed; nothing to keep
            pass

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    killed_for = None
    quiet_check_at = t0 + 1.0
    while reader.is_alive():
        reader.join(poll_s)
        elapsed = time.monotonic() - t0
        if elapsed > deadline_s:
            killed_for = "deadline"
        elif cancel is not None and cancel.is_set():
            killed_for = "cancelled"
        elif reader.is_alive():
            # Invariant 8: bytes, entries, depth, links and special files in /out, while it runs.
            killed_for = outputs.check()
        if killed_for:
            _kill(container)
            reader.join(10)
            break
        if time.monotonic() >= quiet_check_at:
            quiet_check_at = time.monotonic() + 1.0
            if _exited(container):
                # An attach that reached the engine after the end replays the output but may never
                # close: give it a moment to deliver, then stop reading it.
                reader.join(1.0)
                stream.close()
                reader.join(2)
                break
    wall = time.monotonic() - t0
    try:
        state = container.wait(timeout=30)
        container.reload()
        st = container.attrs["State"]
        exit_code, oom = state.get("StatusCode", st.get("ExitCode")), bool(st.get("OOMKilled"))
    except (APIError, NotFound, OSError, requests.RequestException):
        exit_code, oom = None, False  # the engine could not tell: an infrastructure failure
    if not first and killed_for is None:
        _replay_logs(container, log, summary)
    if killed_for is None:
        # And once more after the end: a script may make a link and exit between two polls.
        killed_for = outputs.check(force=True)
    return Watched(exit_code, oom, killed_for, wall, first[0] if first else None, log, summary)


def _exited(container) -> bool:
    try:
        container.reload()
        return container.status in ("exited", "dead")
    except (APIError, NotFound, OSError, requests.RequestException):
        return False


def _replay_logs(container, log: CappedLog, summary: SummaryParser) -> None:
    """A container that ended before the attach reached the engine delivers nothing through it;
    the engine's own copy of its output (capped by the container's log config) stands in."""
    try:
        out = container.logs(stdout=True, stderr=False)
        err = container.logs(stdout=False, stderr=True)
    except (APIError, NotFound, OSError, requests.RequestException):
        return
    if out:
        summary.feed(out)
        log.write(out)
    if err:
        log.write(err)


def _kill(container) -> None:
    try:
        container.kill()
    except (APIError, NotFound):
        pass
