"""The artifact store: content-addressed, atomic and idempotent writes; refs that are not 64 hex refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bilevel.runtime.journal.artifacts import ArtifactError, ArtifactStore, ref_of


def test_artifacts_content_addressed_atomic_and_idempotent(tmp_path: Path, monkeypatch):
    store = ArtifactStore(tmp_path / "artifacts")
    ref = store.put("hello")
    assert ref == ref_of(b"hello") and len(ref) == 64
    path = store.path(ref)
    assert path == tmp_path / "artifacts" / ref[:2] / ref and store.get(ref) == b"hello"
    mtime = path.stat().st_mtime_ns
    assert store.put(b"hello") == ref and path.stat().st_mtime_ns == mtime
    assert [p.name for p in path.parent.iterdir()] == [ref]  # no temp files left

    def failing_fsync(fd):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk on fire"):
        store.put(b"other content")
    monkeypatch.undo()
    other = store.path(ref_of(b"other content"))
    assert not other.exists() and not any(other.parent.glob(".tmp-*"))

    path.chmod(0o600)
    path.write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="corrupt"):
        store.get(ref)


@pytest.mark.parametrize("ref", [
    "../../etc/passwd",
    "/etc/passwd",
    "ab/../../" + "0" * 55,
    "0" * 63,
    "0" * 65,
    "A" * 64,
    "../" + "0" * 61,
    "0" * 63 + "\n",
])
def test_artifact_refs_that_are_not_64_hex_are_refused(tmp_path: Path, ref: str):
    outside = tmp_path / "secret"
    outside.write_text("s")
    store = ArtifactStore(tmp_path / "run" / "artifacts")
    for call in (store.get, store.path, store.exists):
        with pytest.raises(ArtifactError, match="not an artifact ref"):
            call(ref)


def test_verify_names_missing_tampered_and_truncated_artifacts(tmp_path: Path):
    store = ArtifactStore(tmp_path / "artifacts")
    whole, cut, changed = store.put("whole"), store.put("truncate me"), store.put("tamper with me")
    store.path(cut).write_bytes(b"trunc")
    store.path(changed).write_bytes(b"tamper with ME")
    assert store.verify(whole) is None
    assert store.verify(cut).startswith("tampered or truncated (5 bytes")
    assert store.verify(changed).startswith("tampered or truncated")
    assert store.verify(ref_of(b"never stored")) == "missing"
    assert store.verify("../../etc/passwd") == "not a valid ref"
