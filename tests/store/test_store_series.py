"""Downsampled series keep spikes and NaN; heatmaps aggregate per layer and bucket."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from traindoctor.store.reader import Store
from traindoctor.store.segments import RunWriter


def _bucket_oracle(steps: np.ndarray, values: np.ndarray, max_points: int) -> set[int]:
    """Steps a min/max/last downsampling must keep: per bucket, the step of
    its minimum, of its maximum (NaN counting as largest), and its last step."""
    buckets = max(1, max_points // 3)
    lo, hi = steps.min(), steps.max()
    index = (steps - lo) * buckets // (hi - lo + 1)
    ranked = np.where(np.isnan(values), np.inf, values)
    keep = set()
    for bucket in np.unique(index):
        members = np.flatnonzero(index == bucket)
        # Ties (NaN against +Inf) may go either way; the extremes' values decide.
        keep.add(int(steps[members[np.argmin(ranked[members])]]))
        keep.add(int(steps[members[np.argmax(ranked[members])]]))
        keep.add(int(steps[members[-1]]))
    return keep


@pytest.mark.slow
def test_a_one_step_spike_in_a_million_steps_survives(store_root):
    steps = np.arange(1, 1_000_001, dtype=np.int64)
    values = 2.0 + np.sin(steps / 5000.0)
    values[654_321] = 1e6      # one-step spike up
    values[111_111] = -50.0    # and down
    values[888_888] = np.nan   # and a NaN
    with RunWriter(store_root, run_id="long", background=False) as writer:
        writer.add_scalars(step=steps, name="loss", value=values, wall_time=0.0)
    points = Store(store_root).series(["long"], names=["loss"], max_points=2000)
    assert len(points) <= 2000
    by_step = dict(zip(points["step"], points["value"]))
    assert by_step[654_322] == 1e6 and by_step[111_112] == -50.0 and np.isnan(by_step[888_889])
    assert points["step"].is_monotonic_increasing
    assert set(points["step"]) == _bucket_oracle(steps, values, 2000)
    assert points["step"].iloc[-1] == 1_000_000  # the last point is always there


def test_runs_with_different_steps_each_get_at_most_max_points(store_root):
    rng = np.random.default_rng(3)
    layouts = {"dense": np.arange(1, 5001), "sparse": np.arange(7, 70_000, 7), "short": np.arange(1, 40)}
    for run_id, steps in layouts.items():
        with RunWriter(store_root, run_id=run_id, background=False) as writer:
            writer.add_scalars(step=steps, name="loss", value=rng.standard_normal(len(steps)))
            writer.add_scalars(step=steps, name="loss", split="val", value=rng.standard_normal(len(steps)))
            writer.add_scalars(step=steps, name="grad_norm", layer="fc.weight", value=rng.random(len(steps)))
    store = Store(store_root)
    points = store.series(list(layouts), names=["loss", "grad_norm"], max_points=300)
    raw = store.scalars(list(layouts))
    for (run_id, split, name, layer), frame in points.groupby(["run_id", "split", "name", "layer"], dropna=False):
        source = raw[(raw["run_id"] == run_id) & (raw["split"] == split) & (raw["name"] == name)]
        assert len(frame) <= 300
        if len(source) <= 300:
            assert frame["step"].tolist() == source["step"].tolist()  # short series come back whole
        else:
            expected = _bucket_oracle(source["step"].to_numpy(), source["value"].to_numpy(), 300)
            assert set(frame["step"]) == expected, (run_id, split, name)
        merged = frame.merge(source, on="step", suffixes=("", "_raw"))
        assert (merged["value"] == merged["value_raw"]).all()  # real points, not averages
    assert len(points.groupby(["run_id", "split", "name", "layer"], dropna=False)) == 9


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        pytest.param({"global_only": True}, {("train", "loss", None), ("val", "loss", None)}, id="global-only"),
        pytest.param({"layers": ["b"]}, {("train", "grad_norm", "b")}, id="one-layer"),
        pytest.param({"splits": ["val"]}, {("val", "loss", None)}, id="one-split"),
        pytest.param({}, {("train", "loss", None), ("val", "loss", None), ("train", "grad_norm", "a"),
                          ("train", "grad_norm", "b")}, id="everything"),
    ],
)
def test_series_selection(store_root, selection, expected):
    with RunWriter(store_root, run_id="r", background=False) as writer:
        writer.add_scalars(step=[1, 2], name="loss", value=[1.0, 2.0])
        writer.add_scalars(step=[1, 2], name="loss", split="val", value=[1.0, 2.0])
        writer.add_scalars(step=[1, 1], name="grad_norm", layer=("a", "b"), value=[1.0, 2.0])
    points = Store(store_root).series(["r"], names=["loss", "grad_norm"], **selection)
    got = {(s, n, None if pd.isna(l) else l) for s, n, l in points[["split", "name", "layer"]].itertuples(index=False)}
    assert got == expected


def test_heatmap_is_the_median_of_finite_values_per_layer_and_bucket(store_root):
    layers = tuple(f"layer{i}" for i in range(5))
    steps = np.arange(10, 1010, 10)
    rng = np.random.default_rng(0)
    values = rng.random((len(steps), len(layers)))
    values[3, 2] = np.inf
    values[50, :] = np.nan
    with RunWriter(store_root, run_id="r", background=False) as writer:
        for step, row in zip(steps, values):
            writer.add_scalars(step=int(step), name="grad_norm", layer=layers, value=row)
        writer.add_scalars(step=steps, name="grad_norm", value=values.sum(axis=1))  # global: not in the map
    grid = Store(store_root).heatmap("r", name="grad_norm", max_steps=20)
    assert sorted(grid["layer"].unique()) == list(layers)
    bucket = (steps - steps.min()) * 20 // (steps.max() - steps.min() + 1)
    for column, layer in enumerate(layers):
        frame = grid[grid["layer"] == layer]
        assert len(frame) == 20
        for b, (step, value) in enumerate(zip(frame["step"], frame["value"])):
            members = values[bucket == b, column]
            finite = members[np.isfinite(members)]
            assert step == steps[bucket == b].max()
            assert (np.isnan(value) and len(finite) == 0) or value == pytest.approx(np.median(finite))


def test_heatmap_with_few_steps_keeps_every_step(store_root):
    with RunWriter(store_root, run_id="r", background=False) as writer:
        for step in (5, 10, 15):
            writer.add_scalars(step=step, name="update_ratio", layer=("a", "b"), value=[step * 1.0, step * 2.0])
    grid = Store(store_root).heatmap("r", name="update_ratio")
    assert grid.values.tolist() == [["a", 5, 5.0], ["a", 10, 10.0], ["a", 15, 15.0],
                                    ["b", 5, 10.0], ["b", 10, 20.0], ["b", 15, 30.0]]
