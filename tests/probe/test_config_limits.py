"""Probe(config=...) keeps hyperparameters, not data: long sequences become text, huge configs are refused.

Field case ../shared/cases/reliability (follow-up of 10_yaml_alias_bomb): a
config of 3M values made a 59 MB run.json and a 39 s start of a 5-step run,
and every listing of the store read it again. Imported configs were already
limited to 50,000 values (store/importers/common.py); the probe now is too.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from traindoctor.probe import Probe
from traindoctor.probe.guard import MAX_CONFIG_ITEMS, MAX_CONFIG_VALUES, checked_config


def test_a_long_list_or_array_is_kept_as_short_text_naming_its_length(tmp_path):
    config = {"lr": 0.1, "vocab": [f"tok{i}" for i in range(200_000)], "class_weights": np.ones(50_000),
              "betas": (0.9, 0.99), "short": list(range(MAX_CONFIG_ITEMS))}
    with Probe(run="vocab", store=tmp_path, config=config) as probe:
        del probe
    [run_json] = tmp_path.glob("*/run.json")
    stored = json.loads(run_json.read_text())["config"]
    assert stored["lr"] == 0.1 and stored["betas"] == [0.9, 0.99]
    assert stored["short"] == list(range(MAX_CONFIG_ITEMS))  # at the limit: kept as a list
    assert stored["vocab"].startswith("['tok0', 'tok1'") and stored["vocab"].endswith("(200,000 items)")
    assert stored["class_weights"].startswith("array([1., 1., 1., ...") and "(50,000 items)" in stored["class_weights"]
    assert "\n" not in stored["class_weights"]
    assert run_json.stat().st_size < 20_000  # the 1,000-item list and the environment


def test_a_config_of_more_values_than_the_limit_is_refused_before_anything_is_written(tmp_path):
    store = tmp_path / "runs"
    store.mkdir()
    wide = {f"layer{i}": {"lr": 0.1, "wd": 0.0} for i in range(MAX_CONFIG_VALUES // 3 + 1)}
    with pytest.raises(ValueError, match=r"config holds more than 50,000 values \(at config\['layer"):
        Probe(run="wide", store=store, config=wide)
    assert list(store.iterdir()) == []


def test_a_config_at_the_limit_is_kept_whole():
    config = {f"k{i}": i for i in range(MAX_CONFIG_VALUES)}
    assert checked_config(config) == config
