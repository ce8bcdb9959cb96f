"""A checkout's own trial image: what its lock pins, its name, and a stale image refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from bilevel.runtime.sandbox import checkout_image, executor, images
from bilevel.runtime.sandbox.images import ImageError

PYPROJECT = """[project]
name = "fake-autoresearch"
version = "0.1.0"
dependencies = ["numpy>=2", "torch>=2.6", "tiny-pkg; sys_platform == 'darwin'"]
"""

LOCK = """version = 1
[[package]]
name = "fake-autoresearch"
version = "0.1.0"
source = { virtual = "." }

[[package]]
name = "numpy"
version = "2.2.6"
source = { registry = "https://pypi.org/simple" }
resolution-markers = ["python_full_version < '3.11'"]

[[package]]
name = "numpy"
version = "2.4.3"
source = { registry = "https://pypi.org/simple" }
resolution-markers = ["python_full_version >= '3.11'"]

[[package]]
name = "torch"
version = "2.10.0+cpu"
source = { registry = "https://download.pytorch.org/whl/cpu" }

[[package]]
name = "from-git"
version = "1.0"
source = { git = "https://example.invalid/x.git" }
"""


def fake_checkout(root: Path, lock: str = LOCK) -> Path:
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "uv.lock").write_text(lock)
    return root


def test_requirements_are_the_projects_and_pins_the_locks_for_the_sandbox(tmp_path):
    reqs, pins = checkout_image.requirements(fake_checkout(tmp_path / "c"))
    assert reqs == ["numpy>=2", "tiny-pkg; sys_platform == 'darwin'"]      # torch is bilevel's
    assert pins == ["numpy==2.4.3"]      # the sandbox's Python is 3.11+; no torch, project or git source


def test_every_checkout_has_its_own_image_name(tmp_path, monkeypatch):
    monkeypatch.setenv("BILEVEL_IMAGE_PREFIX", "t13")
    a = checkout_image.image_repo(fake_checkout(tmp_path / "a" / "autoresearch"))
    b = checkout_image.image_repo(fake_checkout(tmp_path / "b" / "autoresearch"))
    assert a != b and a.startswith("t13-trial-autoresearch-") and b.startswith("t13-trial-autoresearch-")
    assert a not in (images.repo("trial"), images.repo("mechanism"))


@pytest.mark.docker
def test_a_built_image_is_current_and_a_changed_lock_makes_it_refused_by_name(tmp_path, monkeypatch, docker_client,
                                                                              test_policy):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    repo = fake_checkout(tmp_path / "autoresearch", lock="version = 1\n")
    # The wheels as `fetch_wheels` leaves them: here only the local torch, so the test needs no network.
    wheels = checkout_image.wheel_cache(checkout_image.lock_digest(repo), "cpu")
    wheels.mkdir(parents=True)
    (wheels / "requirements.txt").write_text(checkout_image.TORCH_CPU + "\n")
    (wheels / "constraints.txt").write_text("")
    (wheels / checkout_image.STAMP).write_text("")
    stock = {r: docker_client.images.get(f"{images.repo(r)}:latest").id for r in ("trial", "mechanism")}
    name = checkout_image.build(docker_client, repo, log=lambda m: None)
    try:
        assert checkout_image.check(docker_client, repo) is None
        img = docker_client.images.get(f"{name}:latest")
        assert img.labels[checkout_image.LABEL_LOCK] == checkout_image.lock_digest(repo)
        assert {r: docker_client.images.get(f"{images.repo(r)}:latest").id for r in stock} == stock  # untouched
        r = executor.run_trial(docker_client, test_policy, script="import torch\nprint('torch', torch.__version__)\n",
                               budget_s=5, work_dir=tmp_path / "t", checkout=repo)
        assert "torch 2.13.0" in r.log_tail, r.log_tail
        (repo / "uv.lock").write_text("version = 1\n# changed\n")
        problem = checkout_image.check(docker_client, repo)
        assert problem and name in problem and "stale" in problem and "uv.lock changed" in problem
        with pytest.raises(ImageError, match=f"{name} is stale.*bilevel images build --checkout {repo}"):
            executor.run_trial(docker_client, test_policy, script="print(1)\n", budget_s=5,
                               work_dir=tmp_path / "t2", checkout=repo)
    finally:
        for tag in docker_client.images.get(f"{name}:latest").tags:
            docker_client.images.remove(tag, force=True)
