"""The host's side of the model container: start it hardened, send token ids, read logits.

Why its own module: this is where the candidate model's bytes become host data. Invariants
(DESIGN 3 and 5, code mode): the container has no network, no data and the hardening every
sandbox gets (`hardening.container_kwargs`, role "evaluation"); what comes back is a frame
(`frames`) whose size is checked against the request before its payload is read, so nothing
from the sandbox is bigger than the batch it answers, and nothing of it is unpickled, imported
or called: logits are read as float32 numbers.
"""

from __future__ import annotations

import select
import time
from dataclasses import dataclass
from pathlib import Path

from docker.errors import APIError, NotFound
from docker.types import Mount

from bilevel.runtime.evaluation import frames
from bilevel.runtime.evaluation.gates import GateFailure
from bilevel.runtime.mechanisms.wire import Demuxer
from bilevel.runtime.policy import Policy
from bilevel.runtime.sandbox import hardening, images, runtimes
from bilevel.runtime.vocabulary import Gate

SERVER_DIR = "/bilevel/eval"
HERE = Path(__file__).resolve().parent
# The trusted files the model container runs besides the candidate's own (mounted read-only).
SERVER_FILES = ("model_server.py", "frames.py", "checkpoint_format.py")


@dataclass(frozen=True)
class ModelFiles:
    """What the model container holds: the model's source, its config and its checkpoint (host
    copies the evaluator made), and the task's training harness the source imports."""

    source: Path
    config: Path
    checkpoint: Path
    harness: Path


class ModelContainer:
    """One candidate model in its own container, answering forward passes until closed."""

    def __init__(self, client, policy: Policy, files: ModelFiles, *, deadline: float, labels: dict[str, str],
                 cpuset: str | None = None, threads: int = 1) -> None:
        self.deadline = deadline
        self.killed = False
        image = images.image_for(client, "trial")   # the trial image: Python and torch, nothing else of ours
        mounts = [Mount(target=f"/model/{name}", source=str(p.resolve()), type="bind", read_only=True)
                  for name, p in (("model.py", files.source), ("model.json", files.config),
                                  ("model.safetensors", files.checkpoint))]
        mounts += [Mount(target=f"{SERVER_DIR}/{name}", source=str(HERE / name), type="bind", read_only=True)
                   for name in SERVER_FILES]
        mounts.append(Mount(target=f"{SERVER_DIR}/harness.py", source=str(files.harness.resolve()), type="bind",
                            read_only=True))
        # Invariant 5 (code mode): no data mount, no network; every other wall from the one module.
        kwargs = hardening.container_kwargs(
            policy, "evaluation", image.id, ["python3", "-I", f"{SERVER_DIR}/model_server.py", str(threads)],
            mounts=mounts, stdin=True, labels=labels, cpuset=cpuset, host_mounts=images.host_mounts(image),
            runtime=runtimes.runtime_for(client, policy, "trial"),
        )
        self.container = client.containers.create(**kwargs)
        try:
            self._raw = client.api.attach_socket(self.container.id, params={"stdin": 1, "stdout": 1, "stream": 1})
            self.sock = getattr(self._raw, "_sock", self._raw)
            self.container.start()
        except Exception:
            self.close()
            raise
        self.demux = Demuxer()
        self.buf = bytearray()

    # ---- bytes ---------------------------------------------------------------------------------

    def _recv_exact(self, n: int) -> bytes:
        """Exactly n bytes of stdout, before the deadline; the buffer never holds much more."""
        while len(self.buf) < n:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout()
            try:
                ready, _, _ = select.select([self.sock], [], [], remaining)
                if not ready:
                    raise self._timeout()
                data = self.sock.recv(1 << 16)
            except OSError:
                raise self._death() from None
            if not data:
                raise self._death()
            self.buf += self.demux.feed(data)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _send(self, data: bytes) -> None:
        self.sock.settimeout(max(self.deadline - time.monotonic(), 0.001))
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise self._timeout() from None
        except OSError:
            raise self._death() from None
        finally:
            self.sock.settimeout(None)

    def _timeout(self) -> GateFailure:
        # The evaluation's own deadline: the container is killed, not waited for.
        self.kill()
        return GateFailure(Gate.DEADLINE, "the model did not answer before the evaluation's deadline (killed)")

    def _death(self) -> GateFailure:
        try:
            self.container.wait(timeout=10)
            self.container.reload()
            state = self.container.attrs.get("State", {})
        except Exception:  # the engine may be slow or the container gone; the channel broke either way
            return GateFailure(Gate.CHANNEL, "the model container went away")
        code = state.get("ExitCode")
        if state.get("OOMKilled") or (code == 137 and not self.killed):
            return GateFailure(Gate.MEMORY, "the model container ran out of memory (its limit)")
        return GateFailure(Gate.CHANNEL, f"the model container exited (code {code}) without answering")

    # ---- frames --------------------------------------------------------------------------------

    def _reply(self) -> tuple[bytes, int, int, int]:
        magic, a, b, c = frames.REPLY_HEAD.unpack(self._recv_exact(frames.REPLY_HEAD.size))
        if magic == frames.ERROR:
            if a > frames.MAX_ERROR:
                raise GateFailure(Gate.CHANNEL, f"an error reply of {a} bytes, over the cap of {frames.MAX_ERROR}")
            text = self._recv_exact(a).decode("utf-8", "replace")
            gate, _, why = text.partition(": ")
            # The server names the gate it failed; only these three can it name, whatever it says.
            named = {g.value: g for g in (Gate.SHAPE, Gate.INTERFACE, Gate.CHANNEL)}
            raise GateFailure(named.get(gate, Gate.INTERFACE), why or text)
        if magic not in (frames.LOGITS, frames.READY):
            raise GateFailure(Gate.CHANNEL, "a reply that is not a frame of the protocol")
        return magic, a, b, c

    def ready(self) -> int:
        """Wait for the model to be built and loaded; its parameter count as the container counts it."""
        magic, low, high, _ = self._reply()
        if magic != frames.READY:
            raise GateFailure(Gate.CHANNEL, "logits before the model said it was ready")
        return low | (high << 32)

    def forward(self, ids: bytes, batch: int, seq_len: int, vocab: int) -> bytes:
        """float32 logits (batch, seq_len, vocab) as little-endian bytes, for int32 token ids."""
        self._send(frames.request(batch, seq_len, ids))
        magic, b, t, v = self._reply()
        if magic != frames.LOGITS:
            raise GateFailure(Gate.CHANNEL, "a second ready frame")
        if (b, t, v) != (batch, seq_len, vocab):
            # Checked before the payload is read: a reply is never bigger than the batch it answers.
            raise GateFailure(Gate.SHAPE, f"logits of shape ({b}, {t}, {v}), expected ({batch}, {seq_len}, {vocab})")
        return self._recv_exact(b * t * v * 4)

    def kill(self) -> None:
        self.killed = True
        try:
            self.container.kill()
        except (APIError, NotFound):
            pass

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

    def __enter__(self) -> ModelContainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
