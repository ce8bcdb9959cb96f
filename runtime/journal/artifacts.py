"""Content-addressed artifact store beside the journal: `RUN_DIR/artifacts/ab/abcdef...`.

Why: logs, mechanism sources and large hook inputs are too big for journal rows, yet a replay
must find exactly the bytes that were used. Naming a file by the sha256 of its content makes a
write idempotent and a read verifiable; writing through a temp file, fsync and `os.replace`
means a crash leaves either the whole file or none. A ref is only ever 64 lowercase hex
characters, so a ref read back from the journal can never name a path outside the store.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from bilevel.runtime.files import atomic_write

REF_RE = re.compile(r"[0-9a-f]{64}")


class ArtifactError(ValueError):
    """A bad ref, a missing artifact, or one whose content no longer matches its name."""


def ref_of(data: bytes | str) -> str:
    """The ref `put` would give this content."""
    return hashlib.sha256(_bytes(data)).hexdigest()


def check_ref(ref: str) -> str:
    """Return `ref` if it is 64 lowercase hex characters, else refuse it."""
    if not isinstance(ref, str) or not REF_RE.fullmatch(ref):
        raise ArtifactError(f"not an artifact ref (64 lowercase hex characters): {ref!r:.80}")
    return ref


def _bytes(data: bytes | str) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"artifacts hold bytes or str, not {type(data).__name__}")


class ArtifactStore:
    """Put and get immutable blobs by sha256."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, ref: str) -> Path:
        """Where the artifact `ref` lives (it may not exist)."""
        check_ref(ref)
        return self.root / ref[:2] / ref

    def exists(self, ref: str) -> bool:
        return self.path(ref).is_file()

    def put(self, data: bytes | str) -> str:
        """Store `data` (str as UTF-8) and return its ref; storing it again is a no-op."""
        blob = _bytes(data)
        ref = hashlib.sha256(blob).hexdigest()
        final = self.path(ref)
        if final.is_file():
            return ref
        final.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(final, blob, durable=True)
        return ref

    def get(self, ref: str) -> bytes:
        """The content of `ref`, verified against its name."""
        path = self.path(ref)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"no artifact {ref}") from None
        if hashlib.sha256(blob).hexdigest() != ref:
            raise ArtifactError(f"artifact {ref} is corrupt: its content does not match its name")
        return blob

    def get_text(self, ref: str) -> str:
        return self.get(ref).decode("utf-8")

    def verify(self, ref: str) -> str | None:
        """None when `ref` is present and whole; else what is wrong with it, in words."""
        try:
            check_ref(ref)
            size = self.path(ref).stat().st_size
            self.get(ref)
        except FileNotFoundError:
            return "missing"
        except ArtifactError as exc:
            if "not an artifact ref" in str(exc):
                return "not a valid ref"
            if "no artifact" in str(exc):
                return "missing"
            return f"tampered or truncated ({size} bytes; its sha256 no longer matches its name)"
        except OSError as exc:
            return f"unreadable ({exc.strerror or exc})"
        return None
