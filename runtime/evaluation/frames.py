"""The model channel's frames: what crosses between the model container and the host, both ways.

Why binary and not JSON lines: a batch's logits are 32 x 128 x 256 floats (4 MiB); as raw
float32 they cross as they are, with a fixed header that says how many bytes follow. The reader
checks the header against what it asked for *before* it reads the payload, so a reply can never
be bigger than the batch it answers. Never pickle: the payload is numbers, read as numbers.

Standard library only: mounted into the model container beside `model_server`, and imported by
the host's `channel`.

    start    "BLS1" u32 0, u32 0: build the model now (its files are in place)
    request  "BLQ1" u32 B, u32 T, then B*T little-endian int32 token ids
    logits   "BLL1" u32 B, u32 T, u32 V, then B*T*V little-endian float32
    ready    "BLR1" u32 parameters (low word), u32 parameters (high word), u32 0
    error    "BLE1" u32 length (<= MAX_ERROR), u32 0, u32 0, then UTF-8 text
"""

from __future__ import annotations

import struct

START, REQUEST, LOGITS, READY, ERROR = b"BLS1", b"BLQ1", b"BLL1", b"BLR1", b"BLE1"
REQUEST_HEAD = struct.Struct("<4sII")         # every request has this 12-byte head
REPLY_HEAD = struct.Struct("<4sIII")          # every reply has this 16-byte head
MAX_ERROR = 4096


def start() -> bytes:
    return REQUEST_HEAD.pack(START, 0, 0)


def request(batch_size: int, seq_len: int, ids: bytes) -> bytes:
    if len(ids) != batch_size * seq_len * 4:
        raise ValueError(f"{len(ids)} bytes of ids for a batch of {batch_size} x {seq_len}")
    return REQUEST_HEAD.pack(REQUEST, batch_size, seq_len) + ids


def logits_head(b: int, t: int, v: int) -> bytes:
    return REPLY_HEAD.pack(LOGITS, b, t, v)


def ready(num_params: int) -> bytes:
    return REPLY_HEAD.pack(READY, num_params & 0xFFFFFFFF, num_params >> 32, 0)


def error(text: str) -> bytes:
    data = text.encode("utf-8", "replace")[:MAX_ERROR]
    return REPLY_HEAD.pack(ERROR, len(data), 0, 0) + data
