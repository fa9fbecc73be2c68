"""Edge cases of the gradient and update rules."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from traindoctor.diagnosis import gradients
from tests.diagnosis.factories import make_run, scalar_rows

LAYER_STEPS = np.arange(5, 501, 5)


def grad_run(global_norm, layers: dict[str, np.ndarray] | None = None, loss=None, name: str = "grad_norm"):
    frames = [scalar_rows("grad_norm", global_norm)] if global_norm is not None else []
    for layer, values in (layers or {}).items():
        frames.append(scalar_rows(name, values, steps=LAYER_STEPS[:len(values)], layer=layer))
    return make_run(loss=loss, frames=frames)


@pytest.mark.parametrize(
    ("factor", "fires"),
    [(50.0, False), (200.0, True)],
    ids=["single-50x-is-not-orders", "single-200x-fires"],
)
def test_exploding_peak_against_the_running_median(factor, fires):
    norm = np.ones(300) * (1 + 0.1 * np.random.default_rng(0).standard_normal(300))
    norm[150] = factor
    found = gradients.exploding_gradients(grad_run(norm))
    assert bool(found) is fires
    if fires:
        assert found[0].evidence["peak_step"] == 151


def test_exploding_sustained_tenfold_for_five_records():
    norm = np.ones(300)
    norm[100:105] = 15.0
    short = norm.copy()
    short[104] = 1.0
    assert gradients.exploding_gradients(grad_run(norm))
    assert gradients.exploding_gradients(grad_run(short)) == []


def test_exploding_growth_by_orders_of_magnitude_over_the_run():
    found = gradients.exploding_gradients(grad_run(np.geomspace(0.1, 100.0, 400)))
    assert found and found[0].evidence["factor"] >= 100


def test_exploding_first_last_layer_ratio():
    layers = {"0.weight": np.full(50, 80.0), "1.weight": np.full(50, 5.0), "2.weight": np.full(50, 1.0),
              "2.bias": np.full(50, 1e-4)}
    found = gradients.exploding_gradients(grad_run(None, layers))
    assert found and found[0].evidence["first_layer"] == "0.weight" and found[0].evidence["last_layer"] == "2.weight"


def test_exploding_uses_model_order_for_numbered_layers():
    # "10.weight" sorts before "2.weight" as text; numerically it is the last layer.
    layers = {"10.weight": np.full(50, 1.0), "2.weight": np.full(50, 100.0)}
    found = gradients.exploding_gradients(grad_run(None, layers))
    assert found and found[0].evidence["first_layer"] == "2.weight"


@pytest.mark.parametrize(
    "norm",
    [np.ones(300), np.array([1.0]), np.array([]), np.array([math.nan] * 10), np.zeros(50)],
    ids=["constant", "single", "empty", "all-nan", "zeros"],
)
def test_exploding_quiet_on_odd_series(norm):
    assert gradients.exploding_gradients(grad_run(norm)) == []


@pytest.mark.parametrize(
    ("first", "loss_end", "fires"),
    [(1e-6, 2.28, True), (1e-6, 0.5, False), (1e-1, 2.28, False)],
    ids=["tiny-first-layer-stalled", "tiny-first-layer-but-learning", "ratio-1e-1"],
)
def test_vanishing_needs_small_first_layer_and_a_stall(first, loss_end, fires):
    layers = {"0.weight": np.full(50, first), "4.weight": np.full(50, 1.0)}
    loss = np.linspace(2.3, loss_end, 250)
    assert bool(gradients.vanishing_gradients(grad_run(None, layers, loss=loss))) is fires


@pytest.mark.parametrize(
    ("layer", "ratio", "side"),
    [("fc.weight", 1e-6, "below"), ("fc.weight", 0.5, "above"), ("fc.weight", 1e-3, None),
     ("fc.bias", 1e-6, None), ("fc.weight", 1e-5, None)],
    ids=["weight-1e-6", "weight-0.5", "weight-1e-3", "bias-ignored", "exactly-1e-5-is-in-band"],
)
def test_update_ratio_band(layer, ratio, side):
    found = gradients.update_ratio_out_of_band(grad_run(None, {layer: np.full(40, ratio)}, name="update_ratio"))
    assert (found[0].evidence["side"] if found else None) == side


def test_update_ratio_needs_a_long_stretch():
    values = np.full(40, 1e-3)
    values[::2] = 1e-7  # half the records out of band, never five in a row
    found = gradients.update_ratio_out_of_band(grad_run(None, {"fc.weight": values}, name="update_ratio"))
    assert found == []


def test_dead_layers_always_zero_and_died_later_and_missing():
    died = np.concatenate([np.full(10, 0.5), np.zeros(40)])
    run = grad_run(None, {"frozen.weight": np.zeros(50), "ok.weight": np.full(50, 0.3), "late.weight": died})
    extra = scalar_rows("weight_norm", np.full(50, 2.0), steps=LAYER_STEPS[:50], layer="unused.weight")
    run.scalars = pd.concat([run.scalars, extra], ignore_index=True)
    found = gradients.dead_layers(run)
    assert found[0].evidence["layers"] == ["frozen.weight", "late.weight", "unused.weight"]
    assert found[0].evidence["died_at"] == {"late.weight": 55}


def test_dead_layers_needs_three_records():
    assert gradients.dead_layers(grad_run(None, {"fc.weight": np.zeros(2)})) == []
    assert gradients.dead_layers(grad_run(None, {"fc.weight": np.full(50, 0.1)})) == []


def test_update_ratio_sides_report_only_their_own_steps():
    """Regression: the below and above findings both spanned the stretches of both sides."""
    low = np.full(40, 1e-7)  # below the band all run
    high = np.full(40, 1e-3)
    high[15:] = 0.5  # above it from the 16th record on
    found = gradients.update_ratio_out_of_band(
        grad_run(None, {"a.weight": low, "b.weight": high}, name="update_ratio"))
    by_side = {f.evidence["side"]: f for f in found}
    steps = list(grad_run(None, {"a.weight": low}, name="update_ratio").layer_frame("update_ratio").index)
    assert (by_side["below"].step_start, by_side["below"].step_end) == (steps[0], steps[-1])
    assert (by_side["above"].step_start, by_side["above"].step_end) == (steps[15], steps[-1])
