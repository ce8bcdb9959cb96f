"""The host side of a sandboxed mechanism: start its container, call its hooks, quarantine it.

Why one long-lived container per mechanism: a container start costs ~0.3 s, a hook call must
cost ~1 ms, and two mechanisms must never share a process (invariant 3). The per-call path
is json.dumps -> socket -> one line back -> strict json.loads -> schema check; no Docker API
call happens on it unless the call fails. Every call becomes a record (the journal's
`mechanism_calls` row and a replay-file line); any failure disables the mechanism for the
rest of the run and the loop goes on without it.
"""

from __future__ import annotations

import json
import select
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from docker.errors import APIError, NotFound

from bilevel.runtime.logs import get_logger
from bilevel.runtime.mechanisms.schema import HOOKS, SchemaError, check_output
from bilevel.runtime.mechanisms.wire import Demuxer, LineBuffer, MessageTooLarge, WireError, decode, encode
from bilevel.runtime.policy import Policy
from bilevel.runtime.sandbox import hardening, images, runtimes

DAEMON = "/bilevel/mechanism/daemon.py"
KIND_TO_OUTCOME = {"exception": "error", "fuel": "fuel", "memory": "memory", "invalid": "invalid",
                   "compile": "error", "load": "error"}
MAX_PRINT = 64 * 1024


class MechanismInputError(ValueError):
    """The host tried to send something that is not capped JSON: the caller's bug, not the
    mechanism's, so it does not quarantine."""


class Transport(Protocol):
    """A started daemon: bytes in, lines out. Swappable so tests can drive the daemon directly."""

    def send(self, data: bytes, deadline: float) -> None: ...
    def recv_line(self, deadline: float) -> bytes: ...
    def death(self) -> tuple[str, str]: ...
    def close(self) -> None: ...


class ContainerTransport:
    """The daemon in its own hardened container, spoken to through the attach socket."""

    def __init__(self, client, policy: Policy, *, labels: dict[str, str] | None = None,
                 image=None, command: list[str] | None = None) -> None:
        image = image if image is not None else images.image_for(client, "mechanism")
        self.cap = int(policy.mechanism["max_message_kb"]) * 1024
        kb = str(policy.mechanism["max_message_kb"])
        command = command or ["python3", "-I", DAEMON, "--max-message-kb", kb]
        # Invariant 3: every container setting (no network, read-only root, non-root, limits,
        # empty environment) comes from the one hardening module.
        kwargs = hardening.container_kwargs(
            policy, "mechanism", image.id, command, stdin=True, labels=labels,
            host_mounts=images.host_mounts(image), runtime=runtimes.runtime_for(client, policy, "mechanism"),
        )
        self.container = client.containers.create(**kwargs)
        self.killed = False
        try:
            # Attach before start, so not one byte of the daemon's output is missed.
            self._raw = client.api.attach_socket(
                self.container.id, params={"stdin": 1, "stdout": 1, "stream": 1}
            )
            self.sock = getattr(self._raw, "_sock", self._raw)
            self.container.start()
        except Exception:
            self.close()
            raise
        self.demux = Demuxer()
        self.lines = LineBuffer(self.cap)

    def send(self, data: bytes, deadline: float) -> None:
        self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            self.sock.sendall(data)
        except (TimeoutError, OSError) as exc:
            raise TimeoutError("sending to the sandbox timed out") from exc
        finally:
            self.sock.settimeout(None)

    def recv_line(self, deadline: float) -> bytes:
        while True:
            line = self.lines.pop_line()
            if line is not None:
                return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no reply before the deadline")
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
                raise TimeoutError("no reply before the deadline")
            data = self.sock.recv(1 << 16)
            if not data:
                raise EOFError("the sandbox closed its output")
            self.lines.feed(self.demux.feed(data))

    def kill(self) -> None:
        self.killed = True
        try:
            self.container.kill()
        except (APIError, NotFound):
            pass

    def death(self) -> tuple[str, str]:
        """Why the daemon went away: ("memory", ...) for the OOM killer, else ("error", ...)."""
        try:
            self.container.wait(timeout=5)
            self.container.reload()
            state = self.container.attrs.get("State", {})
        except Exception:  # the engine may be slow or the container gone; the call failed anyway
            return "error", "the sandbox process died"
        code = state.get("ExitCode")
        if state.get("OOMKilled") or (code == 137 and not self.killed):
            return "memory", "the sandbox ran out of memory (container OOM kill)"
        return "error", f"the sandbox process died (exit code {code})"

    def close(self) -> None:
        for closer in (getattr(self, "sock", None), getattr(self, "_raw", None)):
            try:
                if closer is not None:
                    closer.close()
            except OSError:
                pass
        try:
            self.container.remove(force=True)
        except (APIError, NotFound):
            pass


@dataclass
class CallRecord:
    """One hook call as the journal's `mechanism_calls` table and the replay file hold it."""

    mech_id: Any
    seq: int
    hook: str
    input: list
    output: Any
    outcome: str          # a HookOutcome
    error: str | None
    latency_ms: float


@dataclass
class CallResult:
    """What a caller gets back: `value` is schema-checked plain JSON when `ok`."""

    ok: bool
    value: Any = None
    outcome: str = "ok"
    error: str | None = None
    latency_ms: float = 0.0
    printed: str = ""
    fuel: int = 0


@dataclass
class LoadResult:
    ok: bool
    name: str | None = None
    hooks: list[str] = field(default_factory=list)
    stage: str = "load"           # "start" | "compile" | "load" when not ok
    outcome: str = "ok"
    error: str | None = None
    latency_ms: float = 0.0


def container_factory(client=None, labels: dict[str, str] | None = None):
    """The production transport: a fresh hardened container per mechanism."""

    def make(policy: Policy) -> Transport:
        nonlocal client
        if client is None:
            from bilevel.runtime.sandbox.engine import connect

            client = connect()
        return ContainerTransport(client, policy, labels=labels)

    return make


def replay_path(run_dir: str | Path, mech_id: Any) -> Path:
    """Where a run keeps a mechanism's replay file."""
    return Path(run_dir) / "mechanisms" / f"{mech_id}.replay.jsonl"


class SandboxedMechanism:
    """One untrusted mechanism in its own sandbox, with call counts and a quarantine."""

    def __init__(
        self,
        mech_id: Any,
        source: str,
        *,
        policy: Policy,
        seed: int = 0,
        name: str | None = None,
        transport_factory: Callable[[Policy], Transport] | None = None,
        on_call: Callable[[CallRecord], None] | None = None,
        on_quarantine: Callable[[dict], None] | None = None,
        replay_file: str | Path | None = None,
        run_id: str | None = None,
    ) -> None:
        self.mech_id = mech_id
        self.source = source
        self.policy = policy
        self.limits = dict(policy.mechanism)
        self.seed = int(seed)
        self.name = name or str(mech_id)
        self.factory = transport_factory or container_factory()
        self.on_call = on_call
        self.on_quarantine = on_quarantine
        self.replay_file = Path(replay_file) if replay_file else None
        self.cap = int(self.limits["max_message_kb"]) * 1024
        self.transport: Transport | None = None
        self.hooks: list[str] = []
        self.calls: Counter[str] = Counter()
        self.records: list[CallRecord] = []
        self.quarantine_info: dict | None = None
        self.log = get_logger(run_id=run_id, mech_id=mech_id)
        self._seq = 0

    # -- state ------------------------------------------------------------------------------

    @property
    def quarantined(self) -> bool:
        return self.quarantine_info is not None

    @property
    def active(self) -> bool:
        return self.transport is not None and not self.quarantined

    def header(self) -> dict:
        """The replay file's first line: everything a fresh sandbox needs besides the calls."""
        return {"mech_id": self.mech_id, "name": self.name, "source": self.source,
                "seed": self.seed, "limits": self.limits}

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> LoadResult:
        """Start the sandbox and load the source into it (compile + exec + instantiate)."""
        try:
            return self._start()
        finally:
            if self.replay_file is not None:
                # The replay file's header, written once the name is known (even on failure).
                self.replay_file.parent.mkdir(parents=True, exist_ok=True)
                self.replay_file.write_text(json.dumps(self.header()) + "\n")

    def _start(self) -> LoadResult:
        t0 = time.monotonic()
        try:
            self.transport = self.factory(self.policy)
        except Exception as exc:  # no engine, no image: the mechanism cannot run at all
            self._quarantine("error", f"sandbox did not start: {exc}", hook="load")
            return LoadResult(False, stage="start", outcome="error", error=str(exc))
        limits = {k: self.limits[k] for k in ("fuel", "print_kb", "max_source_kb", "facades")}
        msg = {"op": "load", "source": self.source, "seed": self.seed, "limits": limits}
        try:
            data = encode(msg, self.cap)
        except ValueError as exc:
            self._quarantine("invalid", f"source does not fit a message: {exc}", hook="load")
            return LoadResult(False, stage="compile", outcome="invalid", error=str(exc))
        timeout = float(self.limits["load_timeout_s"])
        outcome, reply, error = self._roundtrip(data, t0 + timeout, timeout)
        ms = (time.monotonic() - t0) * 1000
        if outcome != "ok":
            stage = reply.get("stage", "load") if isinstance(reply, dict) else "load"
            self._quarantine(outcome, error or "load failed", hook="load")
            return LoadResult(False, stage=stage, outcome=outcome, error=error, latency_ms=ms)
        hooks = reply.get("hooks")
        if not isinstance(hooks, list) or not set(hooks) <= set(HOOKS):
            self._quarantine("invalid", "load reply lists unknown hooks", hook="load")
            return LoadResult(False, outcome="invalid", error="bad hook list", latency_ms=ms)
        self.hooks = list(hooks)
        got = reply.get("name")
        if isinstance(got, str) and got and len(got) <= 64:
            self.name = got
        self.log.info("mechanism_loaded", name=self.name, hooks=self.hooks, ms=round(ms, 1))
        return LoadResult(True, name=self.name, hooks=self.hooks, latency_ms=ms)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def __enter__(self) -> SandboxedMechanism:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- calls ------------------------------------------------------------------------------

    def call(self, hook: str, *args: Any) -> CallResult:
        """Call one hook with plain-JSON arguments; never raises for the mechanism's failures."""
        if self.quarantined or self.transport is None:
            return CallResult(False, outcome="quarantined",
                              error=(self.quarantine_info or {}).get("error", "not started"))
        if hook not in self.hooks:
            return CallResult(False, outcome="absent", error=f"{hook} is not defined")
        inp = list(args)
        try:
            data = encode({"op": "call", "hook": hook, "args": inp}, self.cap)
        except (ValueError, TypeError) as exc:
            raise MechanismInputError(f"hook {hook} input is not capped JSON: {exc}") from None
        timeout = float(self.limits["call_timeout_s"])
        t0 = time.perf_counter()
        outcome, reply, error = self._roundtrip(data, time.monotonic() + timeout, timeout)
        value, printed, fuel = None, "", 0
        if isinstance(reply, dict):
            printed = reply.get("print") if isinstance(reply.get("print"), str) else ""
            fuel = reply.get("fuel") if isinstance(reply.get("fuel"), int) else 0
        if outcome == "ok":
            try:
                value = check_output(hook, reply.get("value"))
            except SchemaError as exc:
                outcome, error, value = "invalid", f"invalid output: {exc}", reply.get("value")
        ms = (time.perf_counter() - t0) * 1000
        self.calls[hook] += 1
        record = CallRecord(self.mech_id, self._seq, hook, inp, value, outcome, error, round(ms, 3))
        self._seq += 1
        self._record(record)
        if outcome != "ok":
            self._quarantine(outcome, error or outcome, hook=hook, input=inp, seq=record.seq)
            return CallResult(False, None, outcome, error, ms, printed[:MAX_PRINT], fuel)
        return CallResult(True, value, "ok", None, ms, printed[:MAX_PRINT], fuel)

    def _roundtrip(
        self, data: bytes, deadline: float, timeout: float
    ) -> tuple[str, Any, str | None]:
        """(outcome, reply, error). Any protocol breach is the sandbox's failure."""
        assert self.transport is not None
        try:
            self.transport.send(data, deadline)
            line = self.transport.recv_line(deadline)
        except TimeoutError:
            # Invariant 3: the per-call deadline; the sandbox is killed, not waited for.
            self._kill()
            return "timeout", None, f"no reply within {timeout:g} s (sandbox killed)"
        except MessageTooLarge as exc:
            self._kill()
            return "invalid", None, f"reply over the size cap: {exc}"
        except (EOFError, OSError):
            outcome, why = self.transport.death()
            return outcome, None, why
        try:
            reply = decode(line, self.cap)
        except WireError as exc:
            return "invalid", None, f"reply is not acceptable JSON: {exc}"
        if not isinstance(reply, dict):
            return "invalid", None, "reply is not a JSON object"
        if reply.get("ok") is True:
            return "ok", reply, None
        err = reply.get("error") if isinstance(reply.get("error"), dict) else {}
        kind = err.get("kind") if isinstance(err.get("kind"), str) else "error"
        message = err.get("message") if isinstance(err.get("message"), str) else "failed"
        if kind in ("compile", "load"):
            reply = {"stage": kind}
        return KIND_TO_OUTCOME.get(kind, "error"), reply, f"{kind}: {message[:2000]}"

    def _kill(self) -> None:
        kill = getattr(self.transport, "kill", None)
        if kill is not None:
            kill()

    def _record(self, record: CallRecord) -> None:
        self.records.append(record)
        if self.replay_file is not None:
            with self.replay_file.open("a") as f:
                f.write(json.dumps(asdict(record)) + "\n")
        if self.on_call is not None:
            self.on_call(record)

    # -- quarantine -------------------------------------------------------------------------

    def quarantine(self, reason: str, *, hook: str | None = None, outcome: str = "error") -> None:
        """Disable this mechanism from outside (e.g. the loop found its output leaves nothing to
        run); `hook` and its last call's seq go with the reason, so a replay shows that call."""
        seq = next((r.seq for r in reversed(self.records) if r.hook == hook), None) if hook else None
        self._quarantine(outcome, reason, hook=hook, seq=seq)

    def _quarantine(self, outcome: str, error: str, *, hook: str | None, input: Any = None,
                    seq: int | None = None) -> None:
        if self.quarantined:
            return
        self.quarantine_info = {"mech_id": self.mech_id, "name": self.name, "outcome": outcome,
                                "error": error, "hook": hook, "seq": seq, "input": input,
                                "source": self.source}
        self.log.warning("mechanism_quarantined", name=self.name, outcome=outcome, hook=hook,
                         seq=seq, error=error[:500])
        self.close()
        if self.on_quarantine is not None:
            self.on_quarantine(self.quarantine_info)


class MechanismSet:
    """The active mechanisms of a run, as the inner loop calls them (quarantined ones skipped)."""

    def __init__(self, mechs: list[SandboxedMechanism] | None = None) -> None:
        self.mechs: list[SandboxedMechanism] = list(mechs or [])

    def add(self, mech: SandboxedMechanism) -> None:
        self.mechs.append(mech)

    def call_all(self, hook: str, *args: Any) -> list[tuple[str, Any]]:
        """[(name, output)] of every active mechanism defining `hook` whose call succeeded."""
        out = []
        for m in self.mechs:
            if m.active and hook in m.hooks:
                r = m.call(hook, *args)
                if r.ok:
                    out.append((m.name, r.value))
        return out

    def review_chain(self, candidates: list[dict], view: dict):
        """Each active reviewer in turn gets the previous one's output: yields (name, list)."""
        for m in self.mechs:
            if m.active and "review" in m.hooks:
                r = m.call("review", candidates, view)
                if r.ok:
                    yield m.name, r.value
                    if m.active:  # a reviewer the caller quarantined for its output is not followed
                        candidates = r.value

    def quarantine(self, name: str, hook: str, reason: str, outcome: str = "error") -> bool:
        """Quarantine the active mechanism called `name` from outside; False if none is."""
        for m in self.mechs:
            if m.active and m.name == name:
                m.quarantine(reason, hook=hook, outcome=outcome)
                return True
        return False

    def status(self) -> list[dict]:
        return [{"mech_id": m.mech_id, "name": m.name, "active": m.active,
                 "quarantined": m.quarantined, "calls": dict(m.calls)} for m in self.mechs]

    def close(self) -> None:
        for m in self.mechs:
            m.close()
