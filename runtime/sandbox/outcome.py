"""Read a trial's output and decide its outcome: ok | crash | timeout | oom | invalid.

Why streaming and strict: the summary block is parsed from stdout as it arrives, so a flood
cannot hide a second block from us, and any ambiguity is `invalid`, never a figure. The
published implementation took the last `val_bpb:` it saw, which an `atexit` hook can forge.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

SUMMARY_KEYS = ("val_bpb", "training_seconds", "peak_mem_mb", "num_steps", "num_params_M",
                # karpathy/autoresearch's train.py prints these too; peak_vram_mb is its memory figure
                "total_seconds", "peak_vram_mb", "mfu_percent", "total_tokens_M", "depth")
REQUIRED = ("val_bpb", "training_seconds")
MAX_LINE = 4096


@dataclass
class SummaryParser:
    """Feed stdout bytes; afterwards `result()` gives the summary or why there is none."""

    separators: int = 0
    values: dict[str, str] = field(default_factory=dict)
    problem: str | None = None
    _partial: bytes = b""

    def feed(self, data: bytes) -> None:
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        if len(self._partial) > MAX_LINE:
            self._partial = self._partial[:MAX_LINE]  # an endless line is cut, never stored whole
        for raw in lines:
            self._line(raw[:MAX_LINE].decode("utf-8", "replace").rstrip("\r"))

    def _line(self, line: str) -> None:
        if line.strip() == "---":
            self.separators += 1
            self.values.clear()
            return
        if self.separators == 0 or not line.strip():
            return
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep or key not in SUMMARY_KEYS:
            self.problem = self.problem or f"unexpected line after the summary separator: {line[:80]!r}"
            return
        if key in self.values:
            self.problem = self.problem or f"summary key {key!r} repeated"
            return
        self.values[key] = value.strip()

    def result(self) -> tuple[dict[str, float] | None, str | None]:
        """(metrics, None) for exactly one well-formed block, else (None, reason)."""
        if self._partial:
            self.feed(b"\n")
        if self.separators == 0:
            return None, "no summary block in the output"
        if self.separators > 1:
            return None, f"{self.separators} summary separators ('---'); exactly one is allowed"
        if self.problem:
            return None, self.problem
        missing = [k for k in REQUIRED if k not in self.values]
        if missing:
            return None, f"summary lacks {', '.join(missing)}"
        metrics = {}
        for k, v in self.values.items():
            try:
                metrics[k] = float(v)
            except ValueError:
                return None, f"summary value of {k} is not a number: {v[:40]!r}"
        if not math.isfinite(metrics["val_bpb"]) or metrics["val_bpb"] <= 0:
            return None, f"val_bpb is not a positive finite number: {metrics['val_bpb']}"
        return metrics, None


class CappedLog:
    """Keeps the head and the tail of a stream, dropping the middle past a byte cap."""

    def __init__(self, cap: int) -> None:
        self.head_cap, self.tail_cap = cap // 4, cap - cap // 4
        self.head = bytearray()
        self.tail: deque[bytes] = deque()
        self.tail_len = 0
        self.dropped = 0

    def write(self, data: bytes) -> None:
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if not data:
            return
        self.tail.append(bytes(data))
        self.tail_len += len(data)
        while self.tail_len > self.tail_cap:
            first = self.tail.popleft()
            excess = self.tail_len - self.tail_cap
            if len(first) > excess:
                self.tail.appendleft(first[excess:])
                self.dropped += excess
                self.tail_len -= excess
            else:
                self.dropped += len(first)
                self.tail_len -= len(first)

    def text(self) -> str:
        mid = f"\n[... {self.dropped} bytes dropped ...]\n".encode() if self.dropped else b""
        return (bytes(self.head) + mid + b"".join(self.tail)).decode("utf-8", "replace")

    def tail_text(self, n: int = 4000) -> str:
        return self.text()[-n:]


def classify(
    *, exit_code: int | None, oom_killed: bool, killed_for: str | None,
    metrics: dict | None, summary_problem: str | None, deadline: str = "",
) -> tuple[str, str]:
    """The trial status and a one-line reason, from facts the supervisor gathered; `deadline`
    says how the deadline was made (budget, grace and the policy key or measurement behind it)."""
    if killed_for == "deadline":
        return "timeout", f"killed at the deadline ({deadline or 'budget + grace'})"
    if killed_for == "cancelled":
        return "interrupted", "cancelled by the run (stop requested)"
    if killed_for:
        return "crash", f"killed: {killed_for}"
    # An OOM needs all three: the engine saw an OOM kill, the exit says SIGKILL, and we did not kill it.
    if oom_killed and exit_code == 137:
        return "oom", "killed by the kernel OOM killer at the memory limit"
    if exit_code != 0:
        extra = " (an OOM event was seen)" if oom_killed else ""
        return "crash", f"exit code {exit_code}{extra}"
    if metrics is None:
        return "invalid", summary_problem or "no metric"
    return "ok", "ok"
