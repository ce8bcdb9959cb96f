"""The weights-only checkpoint: round trip, and every rule of the header attacked."""

from __future__ import annotations

import json
import os
import pickle
import struct

import pytest

from bilevel.runtime.evaluation import checkpoint_format as cf


def _write_raw(path, header: dict | bytes, data: bytes = b"") -> str:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return str(path)


def test_round_trip(tmp_path):
    p = str(tmp_path / "m.safetensors")
    tensors = {"a": ("F32", (2, 3), struct.pack("<6f", *range(6))), "b": ("I64", (1,), struct.pack("<q", 7)),
               "empty": ("F32", (0, 4), b"")}
    cf.write(p, tensors, {"note": "x"})
    header, data = cf.read(p, 1 << 20)
    assert header.metadata == {"note": "x"} and header.num_params == 7
    assert header.data_start % 8 == 0
    for name, (dtype, shape, raw) in tensors.items():
        t = header.tensors[name]
        assert (t.dtype, t.shape, data[t.begin : t.end]) == (dtype, shape, raw)


def test_a_pickle_is_refused_unread(tmp_path):
    p = tmp_path / "m.safetensors"
    p.write_bytes(pickle.dumps({"a": [1.0, 2.0]}, protocol=4))
    with pytest.raises(cf.FormatError, match="pickle"):
        cf.read_header(str(p), 1 << 20)


@pytest.mark.parametrize("header, data, needle", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "the tensors hold 8 bytes"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4, "4 bytes for shape"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "gap or overlap"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, "gap or overlap"),
    ({"a": {"dtype": "O", "shape": [1], "data_offsets": [0, 1]}}, b"\0", "dtype"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b"", "shape"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "code": "x"}}, b"\0" * 4, "exactly"),
    ({"__metadata__": {"a": 1}}, b"", "__metadata__"),
    (b'{"a": NaN}', b"", "not JSON"),
    (b"[1, 2]", b"", "not a JSON object"),
])
def test_a_bad_header_is_refused(tmp_path, header, data, needle):
    path = _write_raw(tmp_path / "m.safetensors", header, data)
    with pytest.raises(cf.FormatError, match=needle):
        cf.read_header(path, 1 << 20)


def test_caps_and_links(tmp_path):
    big = tmp_path / "big.safetensors"
    big.write_bytes(struct.pack("<Q", cf.MAX_HEADER + 1) + b"{}")
    with pytest.raises(cf.FormatError, match="over the cap"):
        cf.read_header(str(big), 1 << 30)
    p = str(tmp_path / "m.safetensors")
    cf.write(p, {"a": ("U8", (100,), bytes(100))})
    with pytest.raises(cf.FormatError, match="over the cap of 50"):
        cf.read_header(p, 50)
    link = tmp_path / "link.safetensors"
    os.symlink(p, link)
    with pytest.raises(cf.FormatError, match="cannot be opened"):
        cf.read_header(str(link), 1 << 20)   # a link is never followed
    with pytest.raises(cf.FormatError, match="no checkpoint"):
        cf.read_header(str(tmp_path / "none"), 1 << 20)
