"""Policies: defaults load; every malformed key is refused by name."""

from __future__ import annotations

import pytest

from bilevel.runtime.policy import PolicyError, load, parse


def test_default_policy_is_valid_and_gpu_off():
    p = load()
    assert p.trial["memory_mb"] > 0 and p.gpu_ids() is None
    assert p.user != "0:0"


@pytest.mark.parametrize("text,key", [
    ('[trial]\nmemory_mb = "lots"', "trial.memory_mb"),
    ("[trial]\npids = -1", "trial.pids"),
    ("[trial]\nmemroy_mb = 1", "trial.memroy_mb"),
    ('[gpu]\ngpus = "some"', "gpu.gpus"),
    ('[gpu]\ngpu_mode = "magic"', "gpu.gpu_mode"),
    ('[isolation]\nuser = "0:0"', "isolation.user"),
    ('[isolation]\nmode = "none"', "isolation.mode"),
    ('[mechanism]\nfacades = ["os"]', "mechanism.facades"),
    ("[nope]\na = 1", "nope"),
])
def test_malformed_policy_names_the_key(text, key):
    with pytest.raises(PolicyError) as err:
        parse(text)
    assert repr(key) in str(err.value)


def test_gpu_selection_forms():
    assert parse('[gpu]\ngpus = "all"').gpu_ids() == []
    assert parse("[gpu]\ngpus = [0, 2]").gpu_ids() == [0, 2]


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(PolicyError, match="does not exist"):
        load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[trial\n")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load(bad)
