"""The mechanism wire format: strict JSON lines, size caps, and the engine's stream demuxing."""

from __future__ import annotations

import struct

import pytest

from bilevel.runtime.mechanisms.wire import Demuxer, LineBuffer, MessageTooLarge, WireError, decode


@pytest.mark.parametrize("line", [b'{"a": NaN}', b'{"a": Infinity}', b"[-Infinity]", b"1e999",
                                  b"[" * 100 + b"]" * 100, b'"\\ud800', b"{", b"9" * 5000])
def test_decode_refuses_non_json_values(line):
    with pytest.raises(WireError):
        decode(line, 1 << 16)


def test_decode_caps_size():
    with pytest.raises(MessageTooLarge):
        decode(b'"' + b"x" * 100 + b'"', 50)


def test_demuxer_keeps_stdout_across_split_frames():
    def frame(stream, payload):
        return struct.pack(">BxxxL", stream, len(payload)) + payload

    data = frame(1, b'{"ok":') + frame(2, b"noise on stderr") + frame(1, b"true}\n")
    d, got = Demuxer(), b""
    for i in range(0, len(data), 3):          # worst case: 3-byte chunks
        got += d.feed(data[i:i + 3])
    assert got == b'{"ok":true}\n'


def test_line_buffer_refuses_endless_line():
    buf = LineBuffer(10)
    buf.feed(b"x" * 11)
    with pytest.raises(MessageTooLarge):
        buf.pop_line()
