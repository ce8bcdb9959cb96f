"""Build the sandbox images with no container registry, and rebuild only when inputs change.

Three images: `bilevel-base` (Python userland), `bilevel-trial` (torch, launcher, harnesses)
and `bilevel-mechanism` (RestrictedPython, daemon). Each carries a label with the hash of its
inputs; a build whose hash matches an existing image is skipped, so a second
`bilevel images build` with no change takes seconds. Builds run with network_mode="none":
wheels come from `sandbox/images/wheels`, filled once by `scripts/setup.sh`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import docker
from docker.errors import BuildError, ImageNotFound

LABEL_INPUTS = "bilevel.inputs"
LABEL_BASE = "bilevel.base"            # bootstrap | host | image:<name>
LABEL_HOST_MOUNTS = "bilevel.host_mounts"
HOST_MOUNTS = ["/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/opt"]
SUITE = "bookworm"
SITE_LAYOUT = "site-v2: unchecked-hash pyc"   # bump when the way site packages are built changes
MIRROR = "http://deb.debian.org/debian"


def repo(role: str) -> str:
    """The image repository of a role: `bilevel-<role>`, or `<BILEVEL_IMAGE_PREFIX>-<role>`.

    The prefix lets a test (or a second checkout) build its own image set on a shared daemon
    without moving anyone's `bilevel-*:latest`; it names images only, it changes no setting.
    """
    return f"{os.environ.get('BILEVEL_IMAGE_PREFIX') or 'bilevel'}-{role}"


class ImageError(RuntimeError):
    """An image is missing, stale or cannot be built; the message says what to run."""


def images_dir() -> Path:
    return Path(str(resources.files("bilevel.sandbox").joinpath("images")))


def wheels_dir() -> Path:
    return images_dir() / "wheels"


def tasks_dir() -> Path:
    return Path(str(resources.files("bilevel.inner").joinpath("tasks")))


def _hash(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _files_digest(paths: list[Path]) -> str:
    return _hash(*[f"{p.name}\0".encode() + p.read_bytes() for p in sorted(paths)])


def _wheels(names: list[str]) -> list[Path]:
    """The local wheels a site install needs; identified by name and size (names carry versions)."""
    found = sorted(wheels_dir().glob("*.whl"))
    missing = [n for n in names if not any(w.name.lower().startswith(n) for w in found)]
    if missing:
        raise ImageError(f"no local wheels for {missing} in {wheels_dir()}; run `bash scripts/setup.sh`")
    return found


def _get(client: docker.DockerClient, tag: str):
    try:
        return client.images.get(tag)
    except ImageNotFound:
        return None


def harness_files() -> list[Path]:
    return sorted(tasks_dir().glob("*/harness.py"))


def _base_inputs(client: docker.DockerClient, base: str) -> tuple[str, dict[str, str]]:
    if base == "bootstrap":
        script = images_dir() / "base" / "bootstrap.sh"
        return _hash("bootstrap", SUITE, script.read_bytes()), {LABEL_BASE: "bootstrap"}
    if base == "host":
        mounts = json.dumps(HOST_MOUNTS)
        return _hash("host", mounts), {LABEL_BASE: "host", LABEL_HOST_MOUNTS: mounts}
    img = _get(client, base)
    if img is None:
        try:
            img = client.images.pull(base)
        except docker.errors.APIError as exc:
            raise ImageError(f"base image {base!r} is not local and could not be pulled: {exc}") from None
    return _hash("image", img.id), {LABEL_BASE: f"image:{base}"}


def build_base(client: docker.DockerClient, base: str, log: Callable[[str], None]) -> str:
    """Make `bilevel-base:latest` for the chosen mode; returns the image id."""
    inputs, labels = _base_inputs(client, base)
    tag = f"{repo('base')}:{inputs}"
    if (img := _get(client, tag)) is None:
        changes = [f"LABEL {k}={json.dumps(v)}" for k, v in {**labels, LABEL_INPUTS: inputs}.items()]
        with tempfile.TemporaryDirectory() as tmp:
            tar = Path(tmp) / "rootfs.tar"
            if base == "bootstrap":
                if shutil.which("debootstrap") is None:
                    raise ImageError("debootstrap is missing; run `bash scripts/engine.sh`")
                log(f"base: debootstrap {SUITE} (about a minute)")
                script = images_dir() / "base" / "bootstrap.sh"
                subprocess.run(["bash", str(script), SUITE, MIRROR, str(tar)], check=True)
            elif base == "host":
                log("base: empty image; the host's userland is mounted read-only at run time")
                with tarfile.open(tar, "w"):
                    pass
            if base in ("bootstrap", "host"):
                client.api.import_image_from_file(
                    str(tar), repository=repo("base"), tag=inputs, changes=changes
                )
            else:
                log(f"base: {base}")
                _docker_build(client, Path(tmp), f"FROM {base}\n", tag, {**labels, LABEL_INPUTS: inputs})
        img = client.images.get(tag)
    else:
        log(f"base: up to date ({tag})")
    img.tag(repo("base"), "latest")
    _prune(client, repo("base"), keep=tag)
    return img.id


def _docker_build(client, ctx: Path, dockerfile: str, tag: str, labels: dict[str, str], buildargs=None):
    (ctx / "Dockerfile").write_text(dockerfile)
    try:
        client.images.build(
            path=str(ctx), tag=tag, labels=labels, buildargs=buildargs or {},
            network_mode="none", rm=True, forcerm=True,
        )
    except BuildError as exc:
        tail = "".join(str(x.get("stream", x.get("error", ""))) for x in exc.build_log)[-2000:]
        raise ImageError(f"building {tag} failed: {exc.msg}\n{tail}") from None


def _site_install(target: Path, *requirements: str) -> None:
    """Install requirements from the local wheels into `target`, with no index (no network).

    The bytecode is compiled here, as unchecked-hash .pyc files: the sandbox's root is
    read-only, so without them every trial would compile torch's sources again at import
    (seconds per trial), and unchecked-hash files stay valid whatever mtimes the copy gives.
    """
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index",
         "--no-compile", "--find-links", str(wheels_dir()), "--target", str(target), *requirements],
        check=True,
    )
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
         str(target)],
        check=False,  # a few test files in wheels do not compile; what compiles is what matters
        stdout=subprocess.DEVNULL,
    )


def _role_inputs(role: str, base_id: str, base_mode: str) -> str:
    here = images_dir()
    files = [here / role / "Dockerfile"]
    if role == "trial":
        files += [here / "trial" / "launch.py", *harness_files()]
        wheels = _wheels(["torch", "numpy"]) if base_mode == "bootstrap" else []
    else:
        files += sorted((here / "mechanism").glob("*.py"))
        wheels = _wheels(["restrictedpython"])
    return _hash(role, base_id, SITE_LAYOUT, _files_digest(files),
                 *[f"{w.name}:{w.stat().st_size}" for w in wheels])


def build_role(client, role: str, log: Callable[[str], None]) -> str:
    """Build `bilevel-<role>:latest` on top of `bilevel-base:latest` when its inputs changed."""
    base = client.images.get(f"{repo('base')}:latest")
    base_mode = base.labels.get(LABEL_BASE, "bootstrap")
    inputs = _role_inputs(role, base.id, base_mode)
    tag = f"{repo(role)}:{inputs}"
    if (img := _get(client, tag)) is None:
        log(f"{role}: building {tag}")
        here = images_dir()
        with tempfile.TemporaryDirectory() as tmp:
            ctx = Path(tmp)
            site = ctx / "site"
            site.mkdir()
            if role == "trial":
                if base_mode == "bootstrap":
                    log("trial: installing torch from local wheels")
                    _site_install(site, "torch==2.13.0", "numpy")
                shutil.copy(here / "trial" / "launch.py", ctx / "launch.py")
                (ctx / "tasks").mkdir()
                for h in harness_files():
                    (ctx / "tasks" / h.parent.name).mkdir()
                    shutil.copy(h, ctx / "tasks" / h.parent.name / "harness.py")
            else:
                _site_install(site, "RestrictedPython")
                (ctx / "mechanism").mkdir()
                for f in sorted((here / "mechanism").glob("*.py")):
                    shutil.copy(f, ctx / "mechanism" / f.name)
            _docker_build(
                client, ctx, (here / role / "Dockerfile").read_text(), tag,
                {LABEL_INPUTS: inputs}, buildargs={"BASE": base.id},
            )
        img = client.images.get(tag)
    else:
        log(f"{role}: up to date ({tag})")
    img.tag(repo(role), "latest")
    _prune(client, repo(role), keep=tag)
    return img.id


def _prune(client, repo: str, keep: str) -> None:
    """Drop older builds of an image, so rebuilds do not pile up on the disk."""
    for img in client.images.list(name=repo):
        for t in img.tags:
            if t not in (keep, f"{repo}:latest"):
                try:
                    client.images.remove(t)
                except docker.errors.APIError:
                    pass  # still used by a container; a later build retries


def build(client, base: str = "bootstrap", log: Callable[[str], None] = print) -> None:
    build_base(client, base, log)
    for role in ("trial", "mechanism"):
        build_role(client, role, log)


def check(client, role: str) -> str | None:
    """None when `bilevel-<role>:latest` exists and is current, else what is wrong."""
    img = _get(client, f"{repo(role)}:latest")
    if img is None:
        return f"image {repo(role)} is missing"
    if role == "base":
        return None
    base = _get(client, f"{repo('base')}:latest")
    if base is None:
        return f"image {repo('base')} is missing"
    try:
        want = _role_inputs(role, base.id, base.labels.get(LABEL_BASE, "bootstrap"))
    except ImageError as exc:
        return str(exc)
    if img.labels.get(LABEL_INPUTS) != want:
        return f"image {repo(role)} is stale (its inputs changed)"
    return None


def image_for(client, role: str):
    """The current image for a role, or ImageError saying how to build it."""
    problem = check(client, role)
    if problem:
        raise ImageError(f"{problem}; run `bilevel images build`")
    return client.images.get(f"{repo(role)}:latest")


def host_mounts(image) -> list[str]:
    """Folders of the host userland an image built on the `host` base needs at run time."""
    return [p for p in json.loads(image.labels.get(LABEL_HOST_MOUNTS, "[]")) if Path(p).exists()]
