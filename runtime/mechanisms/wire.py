"""The bytes between the host and a mechanism sandbox: strict JSON lines and Docker framing.

Why its own module: this is where untrusted bytes become host data, so it is kept small
enough to read in one sitting. Invariant 3: only JSON is parsed (never pickle), every line
is size-capped before it is decoded, NaN/Infinity and over-long numbers are refused, and
nesting is bounded.
"""

from __future__ import annotations

import json
import struct
from typing import Any

MAX_DEPTH = 32
HEADER = struct.Struct(">BxxxL")   # Docker attach framing: stream type, 3 pad bytes, size
STDOUT = 1


class WireError(ValueError):
    """Bytes that are not an acceptable message."""


class MessageTooLarge(WireError):
    """A line went past the size cap before its newline."""


def _no_constant(name: str) -> Any:
    raise WireError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise WireError(f"number {text[:20]} overflows a float")
    return value


def _depth(value: Any) -> int:
    """Nesting depth, iteratively (a deep value must not recurse the host)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_DEPTH:
            return d
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def decode(line: bytes, cap: int) -> Any:
    """One JSON line from the sandbox, or WireError. Invariant 3: JSON only, capped."""
    if len(line) > cap:
        raise MessageTooLarge(f"message of {len(line)} bytes is over the cap of {cap}")
    try:
        value = json.loads(line, parse_constant=_no_constant, parse_float=_finite_float)
    except WireError:
        raise
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise WireError(f"not valid JSON: {str(exc)[:200]}") from None
    if _depth(value) > MAX_DEPTH:
        raise WireError(f"JSON nested deeper than {MAX_DEPTH}")
    return value


def encode(value: Any, cap: int) -> bytes:
    """One JSON line for the sandbox; ValueError when it is not JSON or over the cap."""
    data = json.dumps(value, allow_nan=False, separators=(",", ":")).encode() + b"\n"
    if len(data) > cap:
        raise ValueError(f"message of {len(data)} bytes is over the cap of {cap}")
    return data


class LineBuffer:
    """Collects bytes into lines; refuses to hold more than `cap` bytes without a newline."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.buf = bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data

    def pop_line(self) -> bytes | None:
        i = self.buf.find(b"\n")
        if i < 0:
            if len(self.buf) > self.cap:
                raise MessageTooLarge(f"no newline within {self.cap} bytes")
            return None
        if i > self.cap:
            raise MessageTooLarge(f"line of {i} bytes is over the cap of {self.cap}")
        line = bytes(self.buf[:i])
        del self.buf[: i + 1]
        return line


class Demuxer:
    """Docker's non-tty attach stream: 8-byte headers, then payload; keeps stdout only."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.want: int | None = None
        self.stream = 0

    def feed(self, data: bytes) -> bytes:
        """Returns the stdout payload bytes contained in `data` (frames may span calls)."""
        self.buf += data
        out = bytearray()
        while True:
            if self.want is None:
                if len(self.buf) < HEADER.size:
                    break
                self.stream, self.want = HEADER.unpack_from(self.buf)
                del self.buf[: HEADER.size]
            take = min(self.want, len(self.buf))
            if take == 0 and self.want > 0:
                break
            if self.stream == STDOUT:
                out += self.buf[:take]
            del self.buf[:take]
            self.want -= take
            if self.want == 0:
                self.want = None
        return bytes(out)
