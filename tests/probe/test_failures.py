"""A failing statistic is turned off with one warning; bad arguments fail at the call."""

from __future__ import annotations

import enum
import math
import pathlib
import warnings

import numpy as np
import pytest
import torch

import traindoctor.probe.statistics
from traindoctor.probe import Probe, ProbeError
from tests.probe.conftest import make_batches, make_model, read_run, series


def _loop(probe, model, optimizer, batches):
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        probe.step(loss=loss)


def _broken(*args, **kwargs):
    raise RuntimeError("injected failure")


@pytest.mark.parametrize(
    "target, statistic, lost, kept",
    [
        (("traindoctor.probe.statistics", "tensor_norms"), "layer_stats", {"weight_norm", "update_ratio"}, {"loss", "grad_norm", "lr"}),
        (("traindoctor.probe.core.Probe", "_record_grad_norm"), "grad_norm", set(), {"loss", "lr", "weight_norm"}),
        (("traindoctor.probe.core.Probe", "_record_lrs"), "lr", {"lr"}, {"loss", "grad_norm", "update_ratio"}),
    ],
    ids=["update_tracker", "global_grad_norm", "lr"],
)
def test_failing_statistic_is_disabled_with_one_warning(tmp_path, monkeypatch, target, statistic, lost, kept):
    module, attribute = target
    owner = {"traindoctor.probe.statistics": traindoctor.probe.statistics, "traindoctor.probe.core.Probe": Probe}[module]
    monkeypatch.setattr(owner, attribute, _broken)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Probe(run="broken", store=tmp_path, layer_every=1) as run_probe:
            run_probe.watch(model, optimizer)
            _loop(run_probe, model, optimizer, make_batches(5))
            assert statistic in run_probe.disabled
    ours = [w for w in caught if "traindoctor probe" in str(w.message)]
    assert len(ours) == 1 and statistic in str(ours[0].message)
    meta, scalars, _, _ = read_run(tmp_path)
    assert meta["status"] == "finished"
    names = set(scalars["name"])
    assert kept <= names and not (lost & names)
    assert sorted(series(scalars, "loss")) == [1, 2, 3, 4, 5]


def test_strict_mode_raises_the_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(Probe, "_record_lrs", _broken)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="injected"):
        with Probe(run="strict", store=tmp_path, strict=True) as run_probe:
            run_probe.watch(model, optimizer)
            _loop(run_probe, model, optimizer, make_batches(2))


def test_a_failing_gradient_hook_does_not_break_backward(tmp_path, monkeypatch):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    original = torch.linalg.vector_norm
    calls = {"count": 0}

    def flaky(*args, **kwargs):
        if "out" in kwargs:
            calls["count"] += 1
            raise RuntimeError("norm kernel failed")
        return original(*args, **kwargs)

    original_foreach = torch._foreach_norm

    def flaky_foreach(tensors, *args, **kwargs):  # gradient norms are taken together at the end of backward
        if any(tensor is param.grad for tensor in tensors for param in model.parameters()):
            calls["count"] += 1
            raise RuntimeError("norm kernel failed")
        return original_foreach(tensors, *args, **kwargs)  # the per-layer weight norms

    with pytest.warns(RuntimeWarning, match="grad_norm"):
        with Probe(run="hook", store=tmp_path) as run_probe:
            run_probe.watch(model, optimizer)
            monkeypatch.setattr(torch.linalg, "vector_norm", flaky)
            monkeypatch.setattr(torch, "_foreach_norm", flaky_foreach)
            _loop(run_probe, model, optimizer, make_batches(3))
    assert calls["count"] == 1  # turned off after the first failure
    _, scalars, _, _ = read_run(tmp_path)
    assert sorted(series(scalars, "loss")) == [1, 2, 3]
    assert "grad_norm" not in set(scalars["name"])


BAD_CONSTRUCTOR_ARGS = [
    ({"run": ""}, ValueError, "run must be a non-empty string"),
    ({"layer_every": 0}, ValueError, "layer_every"),
    ({"flush_every_steps": 1.5}, ValueError, "flush_every_steps"),
    ({"flush_every_s": -1}, ValueError, "flush_every_s"),
    ({"num_classes": 1}, ValueError, "num_classes"),
    ({"num_classes": 3, "class_names": ["a", "b"]}, ValueError, "class_names"),
    ({"config": [1, 2]}, TypeError, "config"),
    ({"config": {("a", "b"): 1}}, TypeError, r"key \('a', 'b'\) is a tuple"),
    ({"config": {"optimizer": {"betas": {frozenset([1]): 0.9}}}}, TypeError, r"config\['optimizer'\]\['betas'\]"),
    ({"config": {1: "a", "1": "b"}}, ValueError, "both become '1'"),
    ({"run": "r\x00"}, ValueError, "control characters"),
    ({"run": "\ud800"}, ValueError, "lone surrogates"),
    ({"project": "\x1b[2J"}, ValueError, "project"),
    ({"class_names": ["cat", "d\udcffg"]}, ValueError, r"class_names\[1\]"),
]
BAD_CONSTRUCTOR_IDS = ["run", "layer_every", "flush_every_steps", "flush_every_s", "num_classes", "class_names",
                       "config_not_a_mapping", "config_tuple_key", "config_nested_frozenset_key",
                       "config_keys_that_collide", "run_nul", "run_lone_surrogate", "project_escape",
                       "class_name_lone_surrogate"]


@pytest.mark.parametrize("kwargs, error, message", BAD_CONSTRUCTOR_ARGS, ids=BAD_CONSTRUCTOR_IDS)
def test_bad_constructor_arguments_fail_before_any_folder_is_made(tmp_path, kwargs, error, message):
    store = tmp_path / "runs"
    with pytest.raises(error, match=message):
        Probe(store=store, **{"run": "x", **kwargs})
    assert not store.exists()


def test_config_with_an_unserialisable_key_leaves_no_run_folder(tmp_path):
    store = tmp_path / "runs"
    store.mkdir()
    with pytest.raises(TypeError, match="config keys must be strings"):
        Probe(run="x", store=store, config={"model": {object(): 1}})
    assert list(store.iterdir()) == []


def test_config_values_json_cannot_hold_are_converted_by_one_rule(tmp_path):
    cyclic: dict = {}
    cyclic["self"] = cyclic
    config = {"lr": np.float32(0.5), "steps": np.int64(3), "betas": (0.9, 0.99), "tags": {"b", "a"},
              2: "two", None: "none", "weights": np.array([1, 2]), "scale": torch.tensor(2.0),
              "loss": print, "path": "data/\udcff", "nested": {"deep": [{"x": float("nan")}]},
              "model": torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(100)]),
              "huge": 10**5000, "big": -10**20,
              # What the user wrote, not a repr: "PosixPath('/data/x')" and "device(type='cpu')" were stored.
              "root": pathlib.PurePosixPath("/data/x"), "device": torch.device("cpu"), "dtype": torch.bfloat16,
              "mode": enum.Enum("Mode", "FAST SLOW").FAST}
    with Probe(run="config", store=tmp_path, config=config) as run_probe:
        pass
    with pytest.raises(ValueError, match="cycle"):
        Probe(run="cyclic", store=tmp_path / "other", config=cyclic)
    assert not (tmp_path / "other").exists()
    meta, _, _, _ = read_run(tmp_path, run_probe.run_id)
    stored = dict(meta["config"])
    assert math.isnan(stored.pop("nested")["deep"][0]["x"])  # NaN is kept as NaN
    model = stored.pop("model")  # a repr cut short: a module's can run to megabytes
    assert model.startswith("Sequential(") and model.endswith("characters)") and len(model) < 1100
    assert stored == {"lr": 0.5, "steps": 3, "betas": [0.9, 0.99], "tags": ["a", "b"], "2": "two", "null": "none",
                      "weights": [1, 2], "scale": 2.0, "loss": "<built-in function print>", "path": "data/\\udcff",
                      "huge": math.inf, "big": -1e20, "root": "/data/x", "device": "cpu", "dtype": "torch.bfloat16",
                      "mode": "FAST"}


BAD_CALLS = [
    ("non_scalar_loss", lambda p: p.step(loss=torch.ones(3)), ValueError, "scalar"),
    ("string_loss", lambda p: p.step(loss="0.5"), TypeError, "scalar tensor or a number"),
    ("list_loss", lambda p: p.step(loss=[0.5]), TypeError, "scalar tensor or a number"),
    ("string_epoch", lambda p: p.step(loss=0.5, epoch="1"), TypeError, "epoch"),
    ("empty_split_log", lambda p: p.log({"a": 1.0}, split=""), ValueError, "split"),
    ("non_string_split", lambda p: p.evaluate(split=3), ValueError, "split"),
    ("log_string_value", lambda p: p.log({"a": "high"}), TypeError, "number"),
    ("log_vector", lambda p: p.log({"a": torch.ones(2)}), ValueError, "scalar"),
    ("log_not_a_dict", lambda p: p.log(1.0), TypeError, "dict"),
    ("log_empty_name", lambda p: p.log({"": 1.0}), ValueError, "non-empty"),
    ("log_lone_surrogate_name", lambda p: p.log({"ok": 1.0, "acc_\ud800": 0.5}), ValueError, "lone surrogates"),
    ("log_nul_name", lambda p: p.log({"a\x00b": 0.5}), ValueError, "control characters"),
    ("log_terminal_escape_name", lambda p: p.log({"\x1b[2Jacc": 0.5}), ValueError, "control characters"),
    ("log_split_with_surrogate", lambda p: p.log({"a": 1.0}, split="val\udcff"), ValueError, "split"),
    ("watch_twice", lambda p: p.watch(torch.nn.Linear(2, 2), torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1)),
     ProbeError, "already"),
]


@pytest.mark.parametrize("name, call, error, message", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_call_arguments_fail_at_the_call_and_leave_the_run_intact(tmp_path, name, call, error, message):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with Probe(run="calls", store=tmp_path) as run_probe:
        run_probe.watch(model, optimizer)
        _loop(run_probe, model, optimizer, make_batches(2))
        with pytest.raises(error, match=message):
            call(run_probe)
        _loop(run_probe, model, optimizer, make_batches(1))
    meta, scalars, _, _ = read_run(tmp_path)
    assert meta["status"] == "finished"
    assert sorted(series(scalars, "loss")) == [1, 2, 3]
    assert set(scalars["name"]) <= {"loss", "lr", "grad_norm", "weight_norm", "update_ratio"}  # nothing half-logged


def test_step_before_watch_is_a_clear_error(tmp_path):
    with Probe(run="early", store=tmp_path) as run_probe:
        with pytest.raises(ProbeError, match="watch"):
            run_probe.step(loss=1.0)


def test_evaluation_rejects_mismatched_targets(tmp_path):
    with Probe(run="eval", store=tmp_path) as run_probe:
        with run_probe.evaluate("val") as ev:
            with pytest.raises(ValueError, match="targets"):
                ev.update(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))
            with pytest.raises(TypeError, match="logits"):
                ev.update([[0.0, 1.0]], torch.zeros(1, dtype=torch.long))


def test_step_per_micro_batch_warns_once(tmp_path):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with Probe(run="micro", store=tmp_path) as run_probe:
        run_probe.watch(model, optimizer)
        with pytest.warns(RuntimeWarning, match="once per optimizer step") as caught:
            for index, (x, y) in enumerate(make_batches(4)):
                torch.nn.functional.cross_entropy(model(x), y).backward()
                if index % 2:
                    optimizer.step()
                    optimizer.zero_grad()
                run_probe.step(loss=1.0)
    assert len([w for w in caught if "once per optimizer step" in str(w.message)]) == 1


def test_module_names_the_store_cannot_hold_are_recorded_escaped_not_lost(tmp_path):
    model = torch.nn.Sequential()
    model.add_module("enc\udcff\x1b", torch.nn.Linear(6, 3))  # torch accepts any name without a dot
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with Probe(run="names", store=tmp_path, layer_every=1, strict=True) as run_probe:
        run_probe.watch(model, optimizer)
        _loop(run_probe, model, optimizer, make_batches(3))
    meta, scalars, _, _ = read_run(tmp_path)
    assert meta["status"] == "finished"
    assert sorted(series(scalars, "loss")) == [1, 2, 3]
    assert sorted(series(scalars, "grad_norm", layer="enc\\udcff\\x1b.weight")) == [1, 2, 3]
