"""Edge cases of the gradient and update rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from traindoctor.diagnosis import gradients
from tests.diagnosis.factories import confusion_frame, make_run, scalar_rows, with_rows

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


@pytest.mark.parametrize(
    ("tail", "fires"),
    [([12.0, 1.5, 22.0, math.nan, math.nan, math.nan], True),
     ([12.0, 1.5, 22.0, math.inf, math.inf], True),
     ([12.0, 1.5, 22.0, math.nan, 1.0, 1.0], False),
     ([1.2, 1.5, 1.1, math.nan, math.nan, math.nan], False),
     ([12.0, 1.0, 1.0, 1.0, 1.0, math.nan, math.nan], False)],
    ids=["grew-then-nan-for-good", "grew-then-inf", "one-nan-then-finite-again", "nan-without-growth",
         "growth-long-before-the-nan"])
def test_exploding_a_tenfold_growth_that_overflows(tail, fires):
    """Heldout12's N-BEATS at 10x its SGD lr: the norm rose 12x and 22x its median, then was NaN to the end, and
    so was the loss. The overflow cut the growth short of 100x; it is the explosion, not a separate event."""
    norm = np.concatenate([1 + 0.1 * np.random.default_rng(1).standard_normal(100), tail])
    loss = np.where(np.isfinite(norm), 1.0, np.nan)
    found = gradients.exploding_gradients(grad_run(norm, loss=loss))
    assert bool(found) is fires
    if fires:
        assert found[0].evidence["overflow_step"] == 104 and found[0].evidence["factor"] >= 20
        assert "overflowed" in found[0].message


def test_an_inf_grad_norm_at_the_end_of_a_run_whose_loss_goes_on_is_no_overflow():
    """An fp16 run's last logged steps were skipped by its GradScaler (unscaled norm Inf) after a 12x batch, while
    its loss stayed finite and falling (a new user's break test, an HF fp16 log): the run did not die."""
    norm = np.concatenate([1 + 0.1 * np.random.default_rng(1).standard_normal(100), [12.0, 1.0, math.inf, math.inf]])
    loss = np.linspace(2.0, 1.0, len(norm))
    assert gradients.exploding_gradients(grad_run(norm, loss=loss)) == []


@pytest.mark.parametrize(("loss_shape", "severity"), [("falling", "info"), ("rising", "warning"), ("flat", "warning")])
def test_a_tenfold_rise_while_the_loss_keeps_falling_is_no_explosion(loss_shape, severity):
    """Regression: a healthy mixture-density network (heldout11) got 'Gradient norm exploded' for a norm that rose
    to 22x its lagging running median over ~20 records while its NLL fell from -0.36 to -0.67: the gradients
    grow as the predicted sigma shrink. Below 100x, with the loss falling through the episode and lower after
    it, the finding is info; the same rise with the loss going up (or not falling) still warns."""
    rng = np.random.default_rng(2)
    norm = np.concatenate([1 + 0.1 * rng.standard_normal(100), np.full(8, 20.0), 1 + 0.1 * rng.standard_normal(40)])
    steps = np.arange(len(norm))
    loss = {"falling": 2.0 - 0.01 * steps,
            "rising": np.where((steps >= 100) & (steps < 108), 3.0, 2.0 - 0.001 * steps),
            "flat": np.full(len(norm), 1.0)}[loss_shape]
    found = gradients.exploding_gradients(grad_run(norm, loss=loss))
    assert [f.severity for f in found] == [severity]
    assert found[0].evidence["factor"] < 100
    peak = norm.copy()
    peak[104] = 500.0  # two orders of magnitude: an explosion whatever the loss does
    assert [f.severity for f in gradients.exploding_gradients(grad_run(peak, loss=loss))] == ["warning"]


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


def _layout_run(layers: dict[str, np.ndarray], shapes: dict[str, list[int]] | None, tied: list[str] = ()):
    run = grad_run(None, layers)
    if shapes is not None:
        run.env = {"model": {"shapes": [[name, shape] for name, shape in shapes.items()], "tied": list(tied)}}
    return run


def test_exploding_ratio_follows_the_recorded_model_order_not_names():
    # An encoder-decoder: by name "decoder" comes first; the probe's registration order says encoder first.
    layers = {"encoder.weight": np.full(50, 80.0), "decoder.weight": np.full(50, 1.0)}
    shapes = {"encoder.weight": [64, 32], "decoder.weight": [32, 64]}
    assert gradients.exploding_gradients(_layout_run(layers, None)) == []  # by name: 1 / 80, no explosion
    found = gradients.exploding_gradients(_layout_run(layers, shapes))
    assert found and (found[0].evidence["first_layer"], found[0].evidence["last_layer"]) == (
        "encoder.weight", "decoder.weight")


def test_a_pooling_query_vector_and_a_tied_embedding_are_not_the_first_or_last_layer():
    # heldout3's false alarms: a Set Transformer's pooling query "seed" (1, 1, d) sorted before the blocks,
    # and a word LM's embedding tied to its output layer (its gradient holds the output's).
    layers = {"seed": np.full(50, 0.5), "emb.weight": np.full(50, 60.0), "layer.weight": np.full(50, 1.0),
              "out.weight": np.full(50, 1.2)}
    shapes = {"seed": [1, 1, 16], "emb.weight": [400, 16], "layer.weight": [16, 16], "out.weight": [10, 16]}
    by_name = gradients.exploding_gradients(_layout_run(layers, None))  # emb.weight / seed = 120
    assert by_name and (by_name[0].evidence["first_layer"], by_name[0].evidence["last_layer"]) == ("emb.weight", "seed")
    assert gradients.exploding_gradients(_layout_run(layers, shapes, tied=["emb.weight"])) == []
    assert gradients.weight_matrices(_layout_run(layers, shapes, tied=["emb.weight"]), list(layers)) == [
        "layer.weight", "out.weight"]


def test_a_layout_that_misses_a_layer_is_not_used():
    # A run whose recorded layout does not name every layer (a model changed after watch()) falls back to names.
    layers = {"10.weight": np.full(50, 1.0), "2.weight": np.full(50, 100.0)}
    found = gradients.exploding_gradients(_layout_run(layers, {"10.weight": [4, 4]}))
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
    with_rows(run, extra)
    found = gradients.dead_layers(run)
    assert found[0].evidence["layers"] == ["frozen.weight", "late.weight", "unused.weight"]
    assert found[0].evidence["died_at"] == {"late.weight": 55}


def test_dead_layers_names_parameters_frozen_at_watch_as_info_and_warns_of_the_rest():
    """Regression: a backbone frozen with requires_grad_(False) and handed to the optimizer with the rest
    got a dead_layers warning; the probe records it (env.model.frozen) and it is a hint."""
    run = grad_run(None, {"backbone.weight": np.zeros(50), "head.weight": np.full(50, 0.3),
                          "unused.weight": np.zeros(50)})
    extra = scalar_rows("weight_norm", np.full(50, 2.0), steps=LAYER_STEPS[:50], layer="backbone.bias")
    with_rows(run, extra)
    run.env = {"model": {"frozen": ["backbone.weight", "backbone.bias"]}}
    found = gradients.dead_layers(run)
    assert [(f.severity, f.evidence["layers"]) for f in found] == [
        ("warning", ["unused.weight"]), ("info", ["backbone.bias", "backbone.weight"])]
    run.env = {}
    assert [(f.severity, f.evidence["layers"]) for f in gradients.dead_layers(run)] == [
        ("warning", ["backbone.weight", "unused.weight", "backbone.bias"])]


def test_dead_layers_names_a_small_discarded_output_as_info():
    """Regression: N-BEATS's last block computes a backcast nothing uses; its two parameters never get a gradient
    and five healthy runs got a dead_layers warning. Parameters the probe saw as discarded outputs
    (env.model.discarded_outputs) are named at info while they hold at most 10 % of the model's elements;
    a larger share (a trunk cut off by .detach()) and parameters the probe did not name still warn."""
    run = grad_run(None, {"back.weight": np.zeros(50), "head.weight": np.full(50, 0.3),
                          "unused.weight": np.zeros(50)})
    shapes = [["body.weight", [128, 64]], ["back.weight", [8, 64]], ["head.weight", [3, 64]], ["unused.weight", [3, 64]]]
    run.env = {"model": {"discarded_outputs": ["back.weight"], "shapes": shapes}}
    assert [(f.severity, f.evidence["layers"]) for f in gradients.dead_layers(run)] == [
        ("warning", ["unused.weight"]), ("info", ["back.weight"])]
    run.env = {"model": {"discarded_outputs": ["back.weight"], "shapes": [["back.weight", [8, 64]], *shapes[2:]]}}
    assert [(f.severity, f.evidence["layers"]) for f in gradients.dead_layers(run)] == [
        ("warning", ["back.weight", "unused.weight"])]
    # A LoRA-style optimizer holds only a few of the model's elements: the share is of what it trains.
    run.env = {"model": {"discarded_outputs": ["back.weight"], "shapes": shapes},
               "optimizer": {"param_groups": [{"num_params": 512 + 192 + 192}]}}
    assert [f.severity for f in gradients.dead_layers(run)] == ["warning"]
    run.env = {"model": {"discarded_outputs": ["back.weight"]}}  # no layout: the share is unknown
    assert [f.severity for f in gradients.dead_layers(run)] == ["warning"]


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


# Weights that never move while their gradients are non-zero (optimizer.zero_grad() between backward and step).
STILL_STEPS = [1, 50, 100, 150]
WEIGHTS = {"0.weight": 3.2, "0.bias": 0.38, "2.weight": 1.8, "2.bias": 0.29}
GRADS = {"0.weight": 0.29, "0.bias": 0.06, "2.weight": 0.18, "2.bias": 0.12}


def still_run(ratios: dict[str, list[float]] | None = None, lr: float | list[float] | None = 3e-3,
              grads: dict[str, float] | None = GRADS, steps=STILL_STEPS):
    """The user's run: a 64-32-10 MLP, 4 per-layer records, every update/weight ratio 0 unless given."""
    frames = []
    for layer, weight in WEIGHTS.items():
        frames.append(scalar_rows("weight_norm", np.full(len(steps), weight), steps=steps, layer=layer))
        frames.append(scalar_rows("update_ratio", (ratios or {}).get(layer, np.zeros(len(steps))), steps=steps,
                                  layer=layer))
        if grads is not None:
            frames.append(scalar_rows("grad_norm", np.full(len(steps), grads[layer]), steps=steps, layer=layer))
    if lr is not None:
        frames.append(scalar_rows("lr", np.broadcast_to(np.asarray(lr, float), (len(steps),)), steps=steps,
                                  layer="group0"))
    return make_run(loss=np.full(150, 2.3), frames=frames)


def test_weights_that_never_move_with_non_zero_gradients_are_critical():
    found = gradients.dead_layers(still_run())
    assert [(f.rule, f.severity, f.title) for f in found] == [("dead_layers", "critical", "The weights never moved")]
    assert found[0].evidence["layers"] == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert found[0].evidence["records"] == 4 and found[0].evidence["lr"] == pytest.approx(3e-3)
    assert "zero_grad()" in found[0].advice and "non-zero" in found[0].message
    assert (found[0].step_start, found[0].step_end) == (1, 150)


@pytest.mark.parametrize("case", ["lr-zero", "lr-too-small-to-show", "one-record", "gradients-zero",
                                  "each-layer-moved-once", "warmup-from-zero-then-moves"])
def test_weights_never_moved_stays_quiet(case):
    """lr 0 is an lr choice, an lr whose update rounds away in float32 is lr_too_low's, zero gradients are
    the older dead-layer finding's, one record is no history, and a layer that moved once is not still."""
    run = {"lr-zero": lambda: still_run(lr=0.0),
           "lr-too-small-to-show": lambda: still_run(lr=1e-8),
           "one-record": lambda: still_run(steps=[1]),
           "gradients-zero": lambda: still_run(grads=dict.fromkeys(GRADS, 0.0)),
           "each-layer-moved-once": lambda: still_run(
               ratios={layer: np.roll([1e-4, 0.0, 0.0, 0.0], i) for i, layer in enumerate(WEIGHTS)}),
           "warmup-from-zero-then-moves": lambda: still_run(
               ratios={layer: [0.0, 1e-3, 1e-3, 1e-3] for layer in WEIGHTS}, lr=[0.0, 1e-3, 2e-3, 3e-3])}[case]()
    found = gradients.dead_layers(run)
    assert [f for f in found if f.evidence.get("still")] == []
    if case != "gradients-zero":
        assert found == []


def test_some_layers_never_updated_while_others_move_is_a_warning_naming_them():
    moving = {layer: [1e-3] * 4 for layer in ("2.weight", "2.bias")}
    found = gradients.dead_layers(still_run(ratios=moving))
    assert [(f.severity, f.evidence["layers"]) for f in found] == [("warning", ["0.bias", "0.weight"])]
    assert "param groups" in found[0].advice
    # Three records at least when the rest move: two could be a late-added group's first steps.
    assert gradients.dead_layers(still_run(ratios={k: v[:2] for k, v in moving.items()}, steps=[1, 50])) == []


def test_an_optimizer_over_parameters_that_never_get_a_gradient_is_critical():
    """An optimizer over a copy's parameters: the probe tracks those (named group0.paramN), which never get a
    gradient, so no gradient norm is recorded at all and every update is 0."""
    found = gradients.dead_layers(still_run(grads=None))
    assert [(f.severity, f.evidence["gradient_recorded"]) for f in found] == [("critical", False)]
    assert "copy" in found[0].advice


def test_the_verdict_names_still_weights_before_the_baseline_symptom():
    from traindoctor.diagnosis import diagnose
    from traindoctor.diagnosis.verdict import verdict

    accuracy = scalar_rows("accuracy", [0.10, 0.10, 0.10], steps=[50, 100, 150], split="val")
    run = still_run()
    with_rows(run, accuracy)
    matrix = np.zeros((10, 10), dtype=int)
    matrix[:, 0] = 40  # every sample predicted as class 0: accuracy 0.1, the majority share
    run.confusion = confusion_frame(matrix, step=150)
    run.task = {"kind": "classification", "num_classes": 10}
    findings = diagnose(run, strict=True)
    found = verdict(findings)
    assert (found.rule, found.severity) == ("dead_layers", "critical")
    baseline = [f for f in findings if f.rule == "no_better_than_baseline"]
    assert baseline and all(f.explained_by == "dead_layers" for f in baseline)
