"""The host's side of the model container: start it hardened, send token ids, read logits.

Why its own module: this is where the candidate model's bytes become host data. Invariants
(DESIGN 3 and 5, code mode): the container has no network, no data and the hardening every
sandbox gets (`hardening.container_kwargs`, role "evaluation"); what comes back is a frame
(`frames`) whose size is checked against the request before its payload is read, so nothing
from the sandbox is bigger than the batch it answers, and nothing of it is unpickled, imported
or called: logits are read as float32 numbers.

The bytes travel over a Unix socket the host listens on, in a folder of its own mounted
read-only into the container (a socket in a read-only mount can still be connected to, and the
kernel carries the bytes directly: about ten times the engine's attach stream, which also logs
every byte). Under runsc (gVisor), which does not connect to host sockets, the frames travel
over the attached stdio instead. The container may be created before the model's files exist
(`code_trial` starts it while the candidate trains); `ready()` starts the evaluation.
"""

from __future__ import annotations

import math
import os
import select
import shutil
import socket
import tempfile
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
CHANNEL_DIR = "/bilevel/channel"
SOCKET = "model.sock"
HERE = Path(__file__).resolve().parent
# The trusted files the model container runs besides the candidate's own (mounted read-only).
SERVER_FILES = ("model_server.py", "frames.py", "checkpoint_format.py")


@dataclass(frozen=True)
class ModelFiles:
    """What the model container holds: a host folder with the model's source, its config and its
    checkpoint (model.py, model.json, model.safetensors: host copies the evaluator made), and the
    task's training harness the source imports."""

    folder: Path
    harness: Path


class _SocketStream:
    """The accepted Unix-socket connection."""

    def __init__(self, conn: socket.socket) -> None:
        self.sock = conn

    def recv(self) -> bytes | None:
        """What arrived (None at the end of the stream)."""
        return self.sock.recv(1 << 20) or None


class _AttachedStream:
    """The container's attached stdio through the engine (runsc): stdout frames demultiplexed."""

    def __init__(self, raw) -> None:
        self.raw, self.sock, self.demux = raw, getattr(raw, "_sock", raw), Demuxer()

    def recv(self) -> bytes | None:
        """Stdout's bytes in what arrived (None at the end of the stream)."""
        data = self.sock.recv(1 << 16)
        return self.demux.feed(data) if data else None


class ModelContainer:
    """One candidate model in its own container, answering forward passes until closed."""

    def __init__(self, client, policy: Policy, files: ModelFiles, *, labels: dict[str, str],
                 cpuset: str | None = None, threads: int = 1) -> None:
        self.deadline = math.inf        # until `arm`: the evaluation's own clock starts there
        self.killed = False
        self.stream: _SocketStream | _AttachedStream | None = None
        self.container = None
        self.buf = bytearray()
        image = images.image_for(client, "trial")   # the trial image: Python and torch, nothing else of ours
        runtime = runtimes.runtime_for(client, policy, "trial")
        mounts = [Mount(target="/model", source=str(files.folder.resolve()), type="bind", read_only=True)]
        mounts += [Mount(target=f"{SERVER_DIR}/{name}", source=str(HERE / name), type="bind", read_only=True)
                   for name in SERVER_FILES]
        mounts.append(Mount(target=f"{SERVER_DIR}/harness.py", source=str(files.harness.resolve()), type="bind",
                            read_only=True))
        command = ["python3", "-I", f"{SERVER_DIR}/model_server.py", str(threads)]
        self._listener = self._folder = None
        if runtime == runtimes.RUNC:
            self._folder, self._listener = _listen()
            mounts.append(Mount(target=CHANNEL_DIR, source=self._folder, type="bind", read_only=True))
            command.append(f"{CHANNEL_DIR}/{SOCKET}")
        try:
            # Invariant 5 (code mode): no data mount, no network; every other wall from the one module.
            kwargs = hardening.container_kwargs(
                policy, "evaluation", image.id, command, mounts=mounts, stdin=self._listener is None,
                labels=labels, cpuset=cpuset, host_mounts=images.host_mounts(image), runtime=runtime,
            )
            self.container = client.containers.create(**kwargs)
            if self._listener is None:
                self.stream = _AttachedStream(client.api.attach_socket(
                    self.container.id, params={"stdin": 1, "stdout": 1, "stream": 1}))
            self.container.start()
        except Exception:
            self.close()
            raise

    def arm(self, deadline: float) -> None:
        """The evaluation starts: every reply from here on must come before `deadline`."""
        self.deadline = deadline

    # ---- bytes ---------------------------------------------------------------------------------

    def _connected(self) -> _SocketStream | _AttachedStream:
        """The stream; on the socket, the model server's one connection, accepted before the deadline."""
        while self.stream is None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout()
            if select.select([self._listener], [], [], min(remaining, 0.25))[0]:
                conn, _ = self._listener.accept()
                # One connection, ever: the listener and its folder go as soon as the server is in,
                # so nothing else (the model's own code included) can open a second channel.
                self._stop_listening()
                self.stream = _SocketStream(conn)
            else:
                self.container.reload()
                if self.container.status in ("exited", "dead"):
                    raise self._death()
        return self.stream

    def _recv_exact(self, n: int) -> bytes:
        """Exactly n bytes of the reply stream, before the deadline; the buffer never holds much more."""
        stream = self._connected()
        while len(self.buf) < n:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout()
            try:
                if not select.select([stream.sock], [], [], remaining)[0]:
                    raise self._timeout()
                data = stream.recv()
            except OSError:
                raise self._death() from None
            if data is None:
                raise self._death()
            self.buf += data
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _send(self, data: bytes) -> None:
        sock = self._connected().sock
        sock.settimeout(max(self.deadline - time.monotonic(), 0.001))
        try:
            sock.sendall(data)
        except TimeoutError:
            raise self._timeout() from None
        except OSError:
            raise self._death() from None
        finally:
            sock.settimeout(None)

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
        """Start the evaluation (the model's files are in place) and wait for the model to be built
        and loaded; its parameter count as the container counts it."""
        self._send(frames.start())
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

    def _stop_listening(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def close(self) -> None:
        self._stop_listening()
        for closer in (getattr(self.stream, "sock", None), getattr(self.stream, "raw", None)):
            try:
                if closer is not None:
                    closer.close()
            except OSError:
                pass
        try:
            if self.container is not None:
                self.container.remove(force=True)
        except (APIError, NotFound):
            pass

    def __enter__(self) -> ModelContainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _listen() -> tuple[str, socket.socket]:
    """A listening Unix socket in a fresh folder of the host's: (folder, listener). The folder is
    the container's only view of it (mounted read-only); the socket is open to the container's
    user, which is not the host's, and the folder's name is random and not listable."""
    folder = tempfile.mkdtemp(prefix="bilevel-channel-")
    os.chmod(folder, 0o711)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(os.path.join(folder, SOCKET))
        os.chmod(os.path.join(folder, SOCKET), 0o666)
        listener.listen(1)
    except OSError:
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder, listener
