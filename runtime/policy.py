"""Sandbox policies: TOML files that set every limit, the isolation and the GPU selection.

Why a schema by example: `policies/default.toml` is both the documentation and the schema.
A user policy may override any key it holds; an unknown key, a wrong type or a value out of
range is refused with an error that names the key, so a typo never silently weakens a limit.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

CHOICES = {
    "isolation.mode": {"docker"},
    "trial.near_deadline": {"kill", "finish"},
    "gpu.gpu_mode": {"toolkit", "devices"},
    "trial.runtime": {"auto", "runc", "runsc"},
    "mechanism.runtime": {"auto", "runc", "runsc"},
}
FACADES = {"math", "random", "statistics", "itertools", "collections", "heapq", "bisect"}


class PolicyError(ValueError):
    """A policy that cannot be used; the message names the offending key."""


@dataclass(frozen=True)
class Policy:
    """A validated policy: sections of plain values, plus where it came from."""

    data: dict[str, dict[str, Any]]
    source: str

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.data[section]

    @property
    def trial(self) -> dict[str, Any]:
        return self.data["trial"]

    @property
    def mechanism(self) -> dict[str, Any]:
        return self.data["mechanism"]

    @property
    def evaluation(self) -> dict[str, Any]:
        return self.data["evaluation"]

    @property
    def gpu(self) -> dict[str, Any]:
        return self.data["gpu"]

    @property
    def user(self) -> str:
        return self.data["isolation"]["user"]

    def gpu_ids(self) -> list[int] | None:
        """None for no GPU, [] for all GPUs, else the chosen ids."""
        gpus = self.gpu["gpus"]
        return None if gpus == "none" else [] if gpus == "all" else list(gpus)


def _defaults() -> dict[str, dict[str, Any]]:
    text = resources.files("bilevel.policies").joinpath("default.toml").read_text()
    return tomllib.loads(text)


def _check(key: str, value: Any, default: Any) -> Any:
    if key in CHOICES and value not in CHOICES[key]:
        raise PolicyError(f"policy key {key!r}: {value!r} is not one of {sorted(CHOICES[key])}")
    if key == "gpu.gpus":
        ok = value in ("none", "all") or (
            isinstance(value, list)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        )
        if not ok:
            raise PolicyError(f"policy key {key!r}: use \"none\", \"all\" or a list of GPU ids")
        return value
    if key == "isolation.user":
        uid, _, gid = str(value).partition(":")
        if not (uid.isdigit() and gid.isdigit()) or int(uid) == 0 or int(gid) == 0:
            raise PolicyError(f"policy key {key!r}: must be a non-root 'uid:gid', got {value!r}")
        return value
    if key == "trial.parallel":
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PolicyError(f"policy key {key!r}: the number of trials at once, a whole number >= 1")
        return value
    if key == "mechanism.facades":
        if not isinstance(value, list) or not set(value) <= FACADES:
            raise PolicyError(f"policy key {key!r}: facades must be a subset of {sorted(FACADES)}")
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        if type(value) is not type(default):
            raise PolicyError(f"policy key {key!r}: expected {type(default).__name__}")
        return value
    if isinstance(default, int | float):
        if not isinstance(value, int | float):
            raise PolicyError(f"policy key {key!r}: expected a number, got {value!r}")
        if value <= 0:
            raise PolicyError(f"policy key {key!r}: must be positive, got {value!r}")
        return type(default)(value) if isinstance(default, float) else value
    if isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PolicyError(f"policy key {key!r}: expected a list of strings")
        return value
    if not isinstance(value, type(default)):
        raise PolicyError(f"policy key {key!r}: expected {type(default).__name__}, got {value!r}")
    return value


def parse(text: str, source: str = "<string>") -> Policy:
    """Merge a policy text over the defaults, validating every key."""
    try:
        given = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy {source}: not valid TOML: {exc}") from None
    return from_data(given, source)


def from_data(given: dict, source: str) -> Policy:
    """Merge policy data (parsed TOML, or a journaled policy) over the defaults, validating it."""
    merged = _defaults()
    for section, values in given.items():
        if section not in merged:
            raise PolicyError(f"policy key {section!r}: unknown section (known: {sorted(merged)})")
        if not isinstance(values, dict):
            raise PolicyError(f"policy key {section!r}: expected a table")
        for key, value in values.items():
            full = f"{section}.{key}"
            if key not in merged[section]:
                raise PolicyError(f"policy key {full!r}: unknown key")
            merged[section][key] = _check(full, value, merged[section][key])
    return Policy(merged, source)


def load(path: str | Path | None = None) -> Policy:
    """Load a policy file, or the default policy; a name like "default" finds a bundled one."""
    if path is None:
        return parse("", "default")
    p = Path(path)
    if not p.exists() and not p.suffix:
        bundled = resources.files("bilevel.policies").joinpath(f"{p.name}.toml")
        if bundled.is_file():
            return parse(bundled.read_text(), str(p.name))
    if not p.is_file():
        raise PolicyError(f"policy file {str(p)!r} does not exist")
    return parse(p.read_text(), str(p))
