"""A checkout's own trial image: its locked Python dependencies, installed offline.

Why: a karpathy/autoresearch checkout imports what its `pyproject.toml` / `uv.lock` name
(requests, pyarrow, rustbpe, tiktoken, ...), which the stock trial image lacks, and a trial has
no network. `bilevel images build --checkout PATH` fetches those wheels at setup time (the one
step that uses the network, `pip download` on the host into bilevel's wheel cache), then builds
an image from them with no network, like every image:

- its name is the checkout's (`bilevel-trial-<folder>-<hash of its path>`), so two checkouts
  never share one and the stock `bilevel-trial` and `bilevel-mechanism` are never rebuilt;
- it is the stock base with a site of torch (the local CPU wheel, or `--torch cuda` from PyPI)
  plus the lock's packages at the lock's versions (torch excepted: the image's torch is
  bilevel's), the trusted launcher and the harnesses;
- its `bilevel.lock` label is the hash of the lock file: a changed lock means a rebuild, and a
  trial refuses the stale image by name (`image_for`).
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement

from bilevel.runtime.sandbox import images
from bilevel.runtime.sandbox.images import LABEL_INPUTS, ImageError

LABEL_LOCK = "bilevel.lock"
LABEL_TORCH = "bilevel.torch"
LABEL_CHECKOUT = "bilevel.checkout"
TORCH_CPU = "torch==2.13.0+cpu"       # the local wheel of sandbox/images/wheels
GLIBC = 36                            # Debian bookworm's glibc 2.36: manylinux_2_17 .. 2_36 wheels fit
STAMP = "complete"


def lock_file(checkout: Path) -> Path | None:
    """What pins the checkout's dependencies: uv.lock, else pyproject.toml, else nothing."""
    return next((checkout / n for n in ("uv.lock", "pyproject.toml") if (checkout / n).is_file()), None)


def lock_digest(checkout: Path) -> str:
    lock = lock_file(checkout)
    if lock is None:
        raise ImageError(f"{checkout}: no uv.lock or pyproject.toml; it needs no image of its own")
    return hashlib.sha256(lock.read_bytes()).hexdigest()


def image_repo(checkout: Path) -> str:
    """`<prefix>-trial-<folder name>-<hash of its path>`: one image name per checkout."""
    checkout = Path(checkout).resolve()
    slug = re.sub(r"[^a-z0-9]+", "-", checkout.name.lower()).strip("-")[:40] or "checkout"
    return f"{images.repo('trial')}-{slug}-{hashlib.sha256(str(checkout).encode()).hexdigest()[:8]}"


def _target_env() -> dict[str, str]:
    """The marker environment of the sandbox's Python (the host's: its wheels are installed there)."""
    v = sys.version_info
    return {"python_version": f"{v.major}.{v.minor}", "python_full_version": f"{v.major}.{v.minor}.{v.micro}",
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
            "platform_machine": platform.machine(), "implementation_name": "cpython",
            "platform_python_implementation": "CPython", "extra": ""}


def _applies(markers: list[str], env: dict[str, str]) -> bool:
    try:
        return not markers or any(Marker(m).evaluate(env) for m in markers)
    except InvalidMarker:
        return True


def _torch_stack(name: str) -> bool:
    """torch and what only its CUDA build pins (nvidia-*, triton): they follow bilevel's torch."""
    n = name.lower()
    return n == "torch" or n.startswith("nvidia-") or n in ("triton", "pytorch-triton")


def requirements(checkout: Path) -> tuple[list[str], list[str]]:
    """(what to install, the lock's pins): pyproject's dependencies, and from uv.lock one
    `name==version` per registry package for the sandbox's platform. torch is bilevel's."""
    project = checkout / "pyproject.toml"
    reqs: list[str] = []
    if project.is_file():
        for line in tomllib.loads(project.read_text()).get("project", {}).get("dependencies", []):
            try:
                if not _torch_stack(Requirement(line).name):
                    reqs.append(line)
            except InvalidRequirement:
                raise ImageError(f"{project}: dependency {line!r} is not a requirement") from None
    pins: list[str] = []
    lock = checkout / "uv.lock"
    if lock.is_file():
        env, seen = _target_env(), set()
        for pkg in tomllib.loads(lock.read_text()).get("package", []):
            name, source = pkg.get("name", ""), pkg.get("source", {})
            if _torch_stack(name) or "registry" not in source or name in seen:
                continue  # torch is bilevel's; the project itself, git and path sources are no wheels
            if _applies(pkg.get("resolution-markers", []), env):
                pins.append(f"{name}=={pkg['version']}")
                seen.add(name)
        if not project.is_file():
            reqs = [p.split("==")[0] for p in pins]
    return reqs, pins


def wheel_cache(digest: str, torch: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    return root / "bilevel" / "wheels" / f"{digest[:16]}-{torch}"


def _torch_requirement(torch: str) -> str:
    return TORCH_CPU if torch == "cpu" else "torch==2.13.0"


def fetch_wheels(checkout: Path, torch: str, log: Callable[[str], None]) -> Path:
    """Setup time, with network: `pip download` the lock's wheels for the sandbox's platform.
    Skipped when a complete download for this lock is cached (so rebuilds need no network)."""
    dest = wheel_cache(lock_digest(checkout), torch)
    if (dest / STAMP).is_file():
        log(f"checkout wheels: cached in {dest}")
        return dest
    reqs, pins = requirements(checkout)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "requirements.txt").write_text("\n".join([_torch_requirement(torch), *reqs]) + "\n")
    (dest / "constraints.txt").write_text("\n".join(pins) + "\n")
    v = sys.version_info
    plats = [f"manylinux_2_{n}_{platform.machine()}" for n in range(17, GLIBC + 1)]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--dest", str(dest),
           "--only-binary=:all:", "--python-version", f"{v.major}{v.minor}", "--implementation", "cp",
           *[a for p in [*plats, f"manylinux2014_{platform.machine()}"] for a in ("--platform", p)],
           "--find-links", str(images.wheels_dir()),
           "-r", str(dest / "requirements.txt"), "-c", str(dest / "constraints.txt")]
    log(f"checkout wheels: downloading {len(reqs)} requirement(s) and their locked dependencies into {dest}")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise ImageError(f"pip download for {checkout} failed (it needs the network, at setup time only):\n"
                         f"{done.stderr[-1500:]}")
    (dest / STAMP).write_text("\n".join(sorted(p.name for p in dest.glob("*.whl"))) + "\n")
    return dest


def _inputs(base_id: str, digest: str, torch: str) -> str:
    here = images.images_dir()
    files = [here / "trial" / "Dockerfile", here / "trial" / "launch.py", *images.harness_files()]
    return images._hash("checkout-trial", base_id, images.SITE_LAYOUT, images._files_digest(files), digest, torch)


def build(client, checkout: Path, torch: str = "cpu", log: Callable[[str], None] = print) -> str:
    """Build (or find current) the checkout's trial image; returns its name."""
    checkout = Path(checkout).expanduser().resolve()
    if torch not in ("cpu", "cuda"):
        raise ImageError(f"--torch {torch}: expected cpu or cuda")
    digest = lock_digest(checkout)
    wheels = fetch_wheels(checkout, torch, log)
    base = client.images.get(f"{images.repo('base')}:latest")
    inputs, name = _inputs(base.id, digest, torch), image_repo(checkout)
    tag = f"{name}:{inputs}"
    if (img := images._get(client, tag)) is None:
        log(f"checkout image: building {tag} (no network)")
        with tempfile.TemporaryDirectory() as tmp:
            ctx = Path(tmp)
            site = ctx / "site"
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index",
                 "--no-compile", "--find-links", str(wheels), "--find-links", str(images.wheels_dir()),
                 "--target", str(site), "-r", str(wheels / "requirements.txt"),
                 "-c", str(wheels / "constraints.txt")], check=True)
            subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode",
                            "unchecked-hash", str(site)], check=False, stdout=subprocess.DEVNULL)
            here = images.images_dir()
            shutil.copy(here / "trial" / "launch.py", ctx / "launch.py")
            (ctx / "tasks").mkdir()
            for h in images.harness_files():
                (ctx / "tasks" / h.parent.name).mkdir()
                shutil.copy(h, ctx / "tasks" / h.parent.name / "harness.py")
            labels = {LABEL_INPUTS: inputs, LABEL_LOCK: digest, LABEL_TORCH: torch, LABEL_CHECKOUT: str(checkout)}
            images._docker_build(client, ctx, (here / "trial" / "Dockerfile").read_text(), tag, labels,
                                 buildargs={"BASE": base.id})
        img = client.images.get(tag)
    else:
        log(f"checkout image: up to date ({tag})")
    img.tag(name, "latest")
    images._prune(client, name, keep=tag)
    return name


def check(client, checkout: Path) -> str | None:
    """None when the checkout's image exists and matches its lock file, else what is wrong."""
    checkout = Path(checkout).resolve()
    name = image_repo(checkout)
    img = images._get(client, f"{name}:latest")
    fix = f"run `bilevel images build --checkout {checkout}`"
    if img is None:
        return f"the checkout's trial image {name} is missing; {fix}"
    digest = lock_digest(checkout)
    if img.labels.get(LABEL_LOCK) != digest:
        return (f"the checkout's trial image {name} is stale: {lock_file(checkout).name} changed since it was "
                f"built (built from {str(img.labels.get(LABEL_LOCK))[:12]}, now {digest[:12]}); {fix}")
    base = images._get(client, f"{images.repo('base')}:latest")
    if base is None or img.labels.get(LABEL_INPUTS) != _inputs(base.id, digest, img.labels.get(LABEL_TORCH, "cpu")):
        return f"the checkout's trial image {name} is stale: bilevel's base image or launcher changed; {fix}"
    return None


def image_for(client, checkout: Path):
    """The checkout's current trial image, or ImageError naming it and the command that builds it."""
    problem = check(client, checkout)
    if problem:
        raise ImageError(problem)
    return client.images.get(f"{image_repo(checkout)}:latest")
