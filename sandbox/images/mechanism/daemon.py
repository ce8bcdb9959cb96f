"""The in-container mechanism server: one mechanism per process, JSON lines on stdio.

Why this shape: the host starts one hardened container per mechanism (invariant 3), so two
mechanisms never share a process, and this daemon refuses a second `load`. Requests and
replies are single JSON lines with a size cap both ways; nothing but replies is ever written
to the protocol stream (the mechanism's `print` is captured, and fd 1 is pointed at stderr).

Messages (one JSON object per line):
  {"op": "load", "source": str, "seed": int, "limits": {...}}
      -> {"ok": true, "name": str|null, "hooks": [...], "fuel": n}
  {"op": "call", "hook": str, "args": [...]}
      -> {"ok": true, "value": ..., "fuel": n, "print": str}
  any failure -> {"ok": false, "error": {"kind": compile|load|exception|fuel|memory|invalid,
                                           "message": str}, ...}
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _reexec_deterministic() -> None:
    """Restart without hash randomisation, so set iteration order replays identically.

    `python3 -I` ignores PYTHONHASHSEED, hence a re-exec with an environment holding only it.
    """
    if not sys.flags.hash_randomization:
        return
    argv = [sys.executable, "-s", "-S", "-B", os.path.abspath(__file__), *sys.argv[1:]]
    os.execve(sys.executable, argv, {"PYTHONHASHSEED": "0"})


if __name__ == "__main__":
    _reexec_deterministic()

import json  # noqa: E402

HOOKS = ("observe", "context", "constraints", "suggest", "review", "accept")
DEFAULT_SITE = "/bilevel/site"
MAX_DEPTH = 32
ERROR_TEXT = 2000


class Invalid(Exception):
    """A value the mechanism returned cannot cross the boundary as JSON."""


def to_json(value, cap: int):
    """Copy `value` into plain JSON data, by exact type only, within `cap` bytes (estimate).

    Invariant 3: exact types only, so no sandbox-made subclass, `__eq__` object or proxy ever
    reaches the encoder or the host; the size estimate stops an output bomb before encoding.
    """
    budget = [cap]

    def spend(n: int) -> None:
        budget[0] -= n
        if budget[0] < 0:
            raise Invalid(f"output larger than {cap} bytes")

    def walk(v, depth: int):
        if depth > MAX_DEPTH:
            raise Invalid(f"output nested deeper than {MAX_DEPTH}")
        t = type(v)
        if v is None or t is bool:
            spend(5)
            return v
        if t is int:
            if v.bit_length() > 64:
                raise Invalid("integer too large for JSON (over 64 bits)")
            spend(20)
            return v
        if t is float:
            if v != v or v in (float("inf"), float("-inf")):
                raise Invalid("NaN and infinities are not JSON")
            spend(24)
            return v
        if t is str:
            spend(len(v) + 2)
            return v
        if t is list or t is tuple:
            spend(2)
            return [walk(x, depth + 1) for x in v]
        if t is dict:
            spend(2)
            out = {}
            for k, x in v.items():
                if type(k) is not str:
                    raise Invalid(f"dict key of type {type(k).__name__} (JSON keys are strings)")
                spend(len(k) + 4)
                out[k] = walk(x, depth + 1)
            return out
        raise Invalid(f"value of type {t.__name__} is not JSON")

    return walk(value, 0)


class Server:
    """Holds at most one loaded mechanism and serves its hooks."""

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self.instance = None
        self.hooks: list[str] = []
        self.fuel = None
        self.print_sink: list = [[], 0]
        self.loaded = False

    def handle(self, msg) -> dict:
        if type(msg) is not dict:
            return _error("invalid", "a request must be a JSON object")
        op = msg.get("op")
        if op == "load":
            return self.load(msg)
        if op == "call":
            return self.call(msg)
        if op == "ping":
            return {"ok": True}
        return _error("invalid", f"unknown op {op!r}")

    def load(self, msg: dict) -> dict:
        limits = msg.get("limits") or {}
        refused = self._admit(msg, limits)
        if refused is not None:
            return refused
        code, failed = _compile(msg["source"])
        if failed is not None:
            return failed
        guards, glb = self._restricted_globals(limits, msg.get("seed", 0))
        return self._instantiate(code, glb, guards)

    def _admit(self, msg: dict, limits) -> dict | None:
        """Checks before compiling: one mechanism per process, a string source, a size cap."""
        # Invariant 3: one mechanism per process; a second load could see the first's state.
        if self.loaded:
            return _error("invalid", "this sandbox already holds a mechanism")
        self.loaded = True
        source = msg.get("source")
        if type(source) is not str:
            return _error("compile", "source must be a string")
        max_source = int(limits.get("max_source_kb", 64)) * 1024
        if len(source.encode("utf-8", "replace")) > max_source:
            # Invariant 3: the compiler itself can be made to recurse; cap what it sees.
            return _error("compile", f"source larger than {max_source // 1024} KiB")
        return None

    def _restricted_globals(self, limits, seed) -> tuple:
        """A fresh fuel budget, the guards and the restricted globals: (guards, globals)."""
        from facades import importer, make_facades
        from restricted_policy import Fuel, Guards, build_builtins, build_globals

        self.fuel = Fuel(int(limits.get("fuel", 2_000_000)))
        guards = Guards(self.fuel)
        facades = make_facades(list(limits.get("facades", [])), int(seed), self.fuel, guards)
        builtins = build_builtins(guards, importer(facades))
        print_cap = int(limits.get("print_kb", 16)) * 1024
        return guards, build_globals(guards, builtins, self.print_sink, print_cap)

    def _instantiate(self, code, glb: dict, guards) -> dict:
        """Run the module, make the one Mechanism and list its hooks: the load reply."""
        from restricted_policy import FuelExhausted

        try:
            exec(code, glb)
            cls = _mechanism_class(glb, guards)
            if cls is None:
                return _error("load", "the source defines no class named Mechanism")
            self.instance = cls()
            name = getattr(cls, "name", None)
            hooks = _hooks_of(cls)
        except FuelExhausted:
            return self._load_fuel_error()
        except MemoryError as exc:
            return _error("memory", f"MemoryError while loading: {exc}")
        except BaseException as exc:  # everything the mechanism raises is its failure
            if self.fuel.exhausted:
                return self._load_fuel_error()
            return _error("load", _describe(exc))
        if self.fuel.exhausted:
            return self._load_fuel_error()
        self.hooks = hooks
        return {
            "ok": True,
            "name": name if type(name) is str else None,
            "hooks": hooks,
            "fuel": self.fuel.used,
        }

    def _load_fuel_error(self) -> dict:
        return _error("fuel", f"fuel exhausted while loading ({self.fuel.limit} steps)")

    def call(self, msg: dict) -> dict:
        from restricted_policy import FuelExhausted

        hook, args = msg.get("hook"), msg.get("args", [])
        if self.instance is None:
            return _error("invalid", "no mechanism is loaded")
        if hook not in self.hooks or type(args) is not list:
            return _error("invalid", f"hook {hook!r} is not defined by this mechanism")
        self.fuel.reset()
        self.print_sink[0].clear()
        self.print_sink[1] = 0
        try:
            value = getattr(self.instance, hook)(*args)
            failed = None
        except FuelExhausted:
            failed = ("fuel", None)
        except MemoryError as exc:
            failed = ("memory", f"MemoryError: {exc}")
        except BaseException as exc:  # the mechanism's own failure, reported, never re-raised
            failed = ("exception", _describe(exc))
        printed = "".join(self.print_sink[0])
        if self.fuel.exhausted:
            # Invariant 3 (fuel): an exhausted budget wins even if the mechanism swallowed it.
            failed = ("fuel", f"fuel exhausted ({self.fuel.limit} steps)")
        if failed:
            kind, message = failed
            return _error(kind, message or f"fuel exhausted ({self.fuel.limit} steps)",
                          fuel=self.fuel.used, print=printed)
        try:
            data = to_json(value, self.max_message - 1024 - len(printed) * 2)
        except Invalid as exc:
            return _error("invalid", str(exc), fuel=self.fuel.used, print=printed)
        except RecursionError:
            return _error("invalid", "output nested too deeply", fuel=self.fuel.used)
        return {"ok": True, "value": data, "fuel": self.fuel.used, "print": printed}


def _compile(source: str) -> tuple:
    """RestrictedPython's compile of the source: (code, None), or (None, the error reply)."""
    from restricted_policy import compile_mechanism

    try:
        code, errors = compile_mechanism(source)
    except (SyntaxError, RecursionError, MemoryError, ValueError) as exc:
        return None, _error("compile", f"{type(exc).__name__}: {exc}")
    if errors or code is None:
        return None, _error("compile", "; ".join(errors)[:ERROR_TEXT])
    return code, None


def _mechanism_class(glb: dict, guards):
    """The class the module bound to `Mechanism`, if the sandbox made it; else None."""
    cls = glb.get("Mechanism")
    if cls is None or cls not in guards.sandbox_classes:
        return None
    return cls


def _hooks_of(cls) -> list[str]:
    return [h for h in HOOKS if callable(getattr(cls, h, None))]


def _describe(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}"
    except BaseException:  # a message that cannot even be turned into text
        text = type(exc).__name__
    return text[:ERROR_TEXT]


def _error(kind: str, message: str, **extra) -> dict:
    return {"ok": False, "error": {"kind": kind, "message": str(message)[:ERROR_TEXT]}, **extra}


def _parse_args(argv: list[str]) -> tuple[int, str]:
    max_kb, site = 256, DEFAULT_SITE
    i = 0
    while i < len(argv):
        if argv[i] == "--max-message-kb":
            max_kb = int(argv[i + 1])
        elif argv[i] == "--site":
            site = argv[i + 1]
        i += 2
    return max_kb * 1024, site


def main() -> int:
    max_message, site = _parse_args(sys.argv[1:])
    sys.path[:0] = [HERE, site]
    # Invariant 3: only replies reach the protocol stream. Keep a private handle on the real
    # stdout, then point fd 1 (and sys.stdout) at stderr for anything else that writes.
    proto = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    stdin = os.fdopen(os.dup(0), "rb")
    server = Server(max_message)

    def reply(obj: dict) -> None:
        data = json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()
        if len(data) >= max_message:
            data = json.dumps(_error("invalid", f"reply larger than {max_message} bytes")).encode()
        proto.write(data + b"\n")
        proto.flush()

    while True:
        line = stdin.readline(max_message + 1)
        if not line:
            return 0
        if len(line) > max_message:
            # Invariant 3: size cap on what comes in; skip the rest of the oversized line.
            while line and not line.endswith(b"\n"):
                line = stdin.readline(max_message + 1)
            reply(_error("invalid", f"request larger than {max_message} bytes"))
            continue
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError):
            reply(_error("invalid", "request is not JSON"))
            continue
        reply(server.handle(msg))


if __name__ == "__main__":
    sys.exit(main())
