"""A weights-only checkpoint: the safetensors layout, read and written without a dependency.

Layout: 8 bytes, the header's length N as a little-endian u64; N bytes of JSON, an object
mapping each tensor's name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets into
the data that follows) and an optional "__metadata__" of str -> str; then the raw little-endian
data of every tensor, contiguous, in offset order, nothing after it.

Why written here: it is small, and it is the one format the evaluator accepts, so it must be
readable in a few minutes. Invariant (DESIGN 5, code mode): a checkpoint is data, never code.
Nothing here unpickles or evaluates anything: the header is capped JSON with NaN and Infinity
refused, every offset is checked against the file's size before a byte of data is read.

Standard library only, no `bilevel` import: the host reads headers with it, and the same file
is mounted read-only into the training container (to write) and the model container (to read).
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from dataclasses import dataclass

MAX_HEADER = 1 << 20          # bytes of JSON header accepted; a header past it is refused unread
MAX_TENSORS = 10_000
DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")  # pickle, torch's zip


class FormatError(ValueError):
    """Bytes that are not an acceptable checkpoint; the message says which rule they break."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Header:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int               # file offset of the first data byte

    @property
    def num_params(self) -> int:
        return sum(t.numel for t in self.tensors.values())


def _no_constant(name: str):
    raise FormatError(f"the header holds {name}, which is not JSON")


def parse_header(prefix: bytes, file_size: int) -> Header:
    """The header of a checkpoint of `file_size` bytes whose first bytes are `prefix`
    (at least 8 + the header's length). Every rule is checked; data is not read."""
    if len(prefix) < 8:
        if any(prefix.startswith(m[: len(prefix)]) for m in PICKLE_MAGIC) and prefix:
            raise FormatError("it is a pickle (or a torch zip), which is never loaded")
        raise FormatError(f"{file_size} bytes is too short for a checkpoint")
    if prefix.startswith(PICKLE_MAGIC):
        raise FormatError("it is a pickle (or a torch zip), which is never loaded")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > MAX_HEADER:
        raise FormatError(f"its header claims {n} bytes, over the cap of {MAX_HEADER}")
    if 8 + n > file_size:
        raise FormatError(f"its header claims {n} bytes, but the file has {file_size}")
    if len(prefix) < 8 + n:
        raise FormatError("the header was cut short")
    try:
        raw = json.loads(prefix[8 : 8 + n].decode("utf-8"), parse_constant=_no_constant)
    except FormatError:
        raise
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"the header is not JSON: {str(exc)[:120]}") from None
    if not isinstance(raw, dict):
        raise FormatError("the header is not a JSON object")
    meta = raw.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise FormatError("__metadata__ must map strings to strings")
    if len(raw) > MAX_TENSORS:
        raise FormatError(f"{len(raw)} tensors, over the cap of {MAX_TENSORS}")
    tensors = {name: _tensor(name, spec) for name, spec in raw.items()}
    _check_layout(tensors, file_size - 8 - n)
    return Header(tensors=tensors, metadata=meta, data_start=8 + n)


def _tensor(name: str, spec) -> TensorInfo:
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
        raise FormatError(f"tensor {name[:60]!r}: needs exactly dtype, shape and data_offsets")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if dtype not in DTYPES:
        raise FormatError(f"tensor {name[:60]!r}: dtype {str(dtype)[:20]!r} is not one of {sorted(DTYPES)}")
    ints = (isinstance(shape, list) and len(shape) <= 8
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape))
    if not ints:
        raise FormatError(f"tensor {name[:60]!r}: shape must be a list of at most 8 whole numbers >= 0")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)):
        raise FormatError(f"tensor {name[:60]!r}: data_offsets must be [begin, end]")
    begin, end = offsets
    if end - begin != math.prod(shape) * DTYPES[dtype]:
        raise FormatError(f"tensor {name[:60]!r}: {end - begin} bytes for shape {shape} of {dtype}")
    return TensorInfo(name, dtype, tuple(shape), begin, end)


def _check_layout(tensors: dict[str, TensorInfo], data_size: int) -> None:
    """The tensors' data tile the data section exactly: no gap, no overlap, nothing after."""
    at = 0
    for t in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if t.begin != at:
            raise FormatError(f"tensor {t.name[:60]!r} starts at {t.begin}, expected {at} (gap or overlap)")
        at = t.end
    if at != data_size:
        raise FormatError(f"the tensors hold {at} bytes of data, the file {data_size}")


def read_header(path: str, max_bytes: int) -> Header:
    """The header of the checkpoint at `path`: a regular file (a link is refused, never
    followed) of at most `max_bytes`. Only the header is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise FormatError("no checkpoint was written") from None
    except OSError as exc:
        raise FormatError(f"the checkpoint cannot be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise FormatError("the checkpoint is not a regular file")
        if st.st_size > max_bytes:
            raise FormatError(f"the checkpoint has {st.st_size} bytes, over the cap of {max_bytes}")
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 and not head.startswith(PICKLE_MAGIC) else 0
        return parse_header(head + f.read(min(n, MAX_HEADER)), st.st_size)


def read(path: str, max_bytes: int) -> tuple[Header, bytes]:
    """The header and the data section (raw bytes) of a checkpoint, after every check."""
    header = read_header(path, max_bytes)
    with open(path, "rb") as f:
        f.seek(header.data_start)
        data = f.read()
    return header, data


def write(path: str, tensors: dict[str, tuple[str, tuple[int, ...], bytes]],
          metadata: dict[str, str] | None = None) -> None:
    """Write {name: (dtype, shape, little-endian bytes)} in the layout above."""
    spec: dict = {}
    if metadata:
        spec["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    at = 0
    for name, (dtype, shape, data) in tensors.items():
        if len(data) != math.prod(shape) * DTYPES[dtype]:
            raise FormatError(f"tensor {name!r}: {len(data)} bytes for shape {list(shape)} of {dtype}")
        spec[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [at, at + len(data)]}
        at += len(data)
    header = json.dumps(spec, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)      # the data starts 8-byte aligned, as the format advises
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for _dtype, _shape, data in tensors.values():
            f.write(data)
