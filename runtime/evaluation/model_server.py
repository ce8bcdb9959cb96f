"""The model container's one process: build the candidate's model, answer forward passes.

Runs inside the model container (`python3 -I model_server.py`), never on the host and never
imported by it. The container holds the checkpoint, the config and the model's source, and no
data at all: no validation split, no mount of it, no network (DESIGN invariant 5, code mode).
Whatever the model's code does here, at import or in its forward pass, it can only shape the
logits it returns; the host computes the metric from them against targets it never sends.

Protocol: `frames` (binary, sizes in a fixed head), over a Unix socket the host listens on
(its path is the second argument; the host accepts one connection only) or, without that
argument, over stdio. Either way descriptor 1 points at stderr and stdin at /dev/null before the
model's code is imported, so a `print` in the model's code cannot corrupt the channel by accident.

The container may start while the candidate still trains (its files are not there yet): it
connects and imports torch, then waits for the host's start frame before it reads /model.
"""

import importlib.util
import json
import os
import socket
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SITE = "/bilevel/site"
MODEL = "/model"


def _channel(path: str | None):
    """(input, send) of the channel: the host's socket at `path`, else the real stdio. `send`
    writes a frame whole (it loops over short writes) and at once."""
    if path:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        inp, send = sock.makefile("rb", buffering=0), sock.sendall
    else:
        raw = os.fdopen(os.dup(1), "wb")
        inp, send = os.fdopen(os.dup(0), "rb", buffering=0), lambda data: (raw.write(data), raw.flush())
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    return inp, send


def _read(inp, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = inp.read(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _build(torch, checkpoint_format, threads: int):
    """The model, its weights loaded strictly: every failure is the interface's, said in words."""
    torch.set_num_threads(threads)
    with open(os.path.join(MODEL, "model.json")) as f:
        config = json.load(f)
    spec = importlib.util.spec_from_file_location("model", os.path.join(MODEL, "model.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["model"] = module
    spec.loader.exec_module(module)
    build = getattr(module, "build_model", None)
    if not callable(build):
        raise LookupError("the model's source defines no build_model(config)")
    model = build(config)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"build_model(config) returned a {type(model).__name__}, not a torch.nn.Module")
    header, data = checkpoint_format.read(os.path.join(MODEL, "model.safetensors"), 1 << 40)
    dtypes = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
              "U8": torch.uint8, "BOOL": torch.bool}
    buf = bytearray(data)
    state = {}
    for t in header.tensors.values():
        raw = buf[t.begin : t.end]
        tensor = torch.frombuffer(raw, dtype=dtypes[t.dtype]) if raw else torch.empty(0, dtype=dtypes[t.dtype])
        state[t.name] = tensor.reshape(t.shape).clone()
    want = set(model.state_dict())
    missing, extra = sorted(want - set(state)), sorted(set(state) - want)
    if missing or extra:
        raise KeyError(f"the checkpoint does not fit build_model(config): missing {missing[:5]}, "
                       f"unexpected {extra[:5]}")
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def _prepare():
    """torch and the checkpoint reader, imported while the host may still be training the model;
    (torch, checkpoint_format, None) or (None, None, the failure)."""
    try:
        import checkpoint_format
        import torch

        torch.set_grad_enabled(False)
        return torch, checkpoint_format, None
    except BaseException as exc:  # noqa: BLE001 - said to the host once it starts the evaluation
        return None, None, exc


def main(argv: list[str]) -> None:
    threads = int(argv[0]) if argv else 1
    inp, send = _channel(argv[1] if len(argv) > 1 else None)
    sys.path[:0] = [p for p in (HERE, SITE) if os.path.isdir(p)]
    import frames

    torch, checkpoint_format, failure = _prepare()
    try:
        magic, _, _ = frames.REQUEST_HEAD.unpack(_read(inp, frames.REQUEST_HEAD.size))
    except EOFError:
        return
    if magic != frames.START:
        send(frames.error("channel: a request before the start frame"))
        return
    try:
        if failure is not None:
            raise failure
        model = _build(torch, checkpoint_format, threads)
        n = sum(p.numel() for p in model.parameters())
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the host as words
        send(frames.error(f"interface: {type(exc).__name__}: {exc}"))
        return
    send(frames.ready(n))
    _serve(torch, model, inp, send, frames)


def _serve(torch, model, inp, send, frames) -> None:
    """Answer forward passes until the host closes the channel."""
    while True:
        try:
            magic, b, t = frames.REQUEST_HEAD.unpack(_read(inp, frames.REQUEST_HEAD.size))
            ids = _read(inp, b * t * 4)
        except EOFError:
            return
        if magic != frames.REQUEST:
            send(frames.error("channel: unknown request"))
            return
        x = torch.frombuffer(bytearray(ids), dtype=torch.int32).reshape(b, t).long()
        try:
            logits = model(x)
            if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                send(frames.error(f"shape: the forward pass returned {shape}, expected (B, T, V)"))
                continue
            arr = logits.detach().to("cpu", torch.float32).contiguous()
            send(frames.logits_head(*arr.shape) + arr.numpy().tobytes())
        except BaseException as exc:  # noqa: BLE001
            send(frames.error(f"interface: the forward pass raised {type(exc).__name__}: {exc}"))


if __name__ == "__main__":
    main(sys.argv[1:])
