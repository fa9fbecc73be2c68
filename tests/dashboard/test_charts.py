"""Figure builders and the pure computations behind them, against oracles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from traindoctor.dashboard.app.charts.classes import (
    class_metrics,
    class_metrics_over_evaluations,
    confusion_matrix,
    majority_baseline,
    worst_classes,
)
from traindoctor.dashboard.app.charts.compare import differing_hyperparameters, flatten_config, parallel_coordinates_figure
from traindoctor.dashboard.app.charts.curves import compare_figure, curve_figure, smoothed_band
from traindoctor.dashboard.app.charts.findings import MIN_BAR_SHARE, finding_lanes
from traindoctor.dashboard.app.charts.classes import class_metrics_figure, confusion_matrix_figure
from traindoctor.dashboard.app.charts.layers import (
    UPDATE_RATIO_TARGET_LOG10,
    grad_norm_heatmap_figure,
    layer_grid,
    update_ratio_heatmap_figure,
)
from traindoctor.diagnosis.finding import Finding


def finding(rule="loss_spike", severity="warning", start=10, end=20):
    return Finding(rule=rule, severity=severity, title="t", message="m", advice="a", step_start=start, step_end=end)


# ---------------------------------------------------------------- smoothing

@pytest.mark.parametrize("window", [3, 5, 8], ids=["w3", "w5", "w8"])
def test_smoothed_band_matches_a_plain_window_loop(window):
    rng = np.random.default_rng(window)
    values = rng.normal(size=40)
    frame = pd.DataFrame({"step": np.arange(40)[::-1], "value": values[::-1]})  # unsorted on purpose
    band = smoothed_band(frame, window=window)
    half_left, half_right = window // 2, (window - 1) // 2  # pandas' centred window for odd/even sizes
    for i in range(40):
        chunk = values[max(0, i - half_left): i + half_right + 1]
        assert band["median"].iloc[i] == pytest.approx(np.median(chunk))
        assert band["low"].iloc[i] == pytest.approx(np.quantile(chunk, 0.1))
        assert band["high"].iloc[i] == pytest.approx(np.quantile(chunk, 0.9))
    assert list(band["step"]) == list(range(40))


def test_smoothed_band_leaves_non_finite_values_out():
    frame = pd.DataFrame({"step": [1, 2, 3, 4, 5], "value": [1.0, np.nan, np.inf, 3.0, 5.0]})
    band = smoothed_band(frame, window=5)
    assert band["median"].iloc[2] == pytest.approx(np.median([1.0, 3.0, 5.0]))
    assert np.isfinite(band[["median", "low", "high"]].to_numpy()).all()


# ---------------------------------------------------------------- curves

def curve_points(n=200, split="train"):
    steps = np.arange(1, n + 1)
    return pd.DataFrame({"step": steps, "value": 1.0 / steps, "split": split, "layer": None})


def test_curve_figure_draws_each_finding_in_a_lane_coloured_by_severity():
    figure = curve_figure(curve_points(), title="loss",
                          findings=[finding(severity="critical", start=10, end=20), finding(start=50, end=50),
                                    finding(start=None, end=None)])
    lanes = [trace for trace in figure.data if trace.yaxis == "y2"]
    assert len(lanes) == 2  # the run-wide finding has no span
    assert (min(lanes[0].x), max(lanes[0].x)) == (10, 20) and lanes[0].fillcolor == "#d62728"
    width = max(lanes[1].x) - min(lanes[1].x)  # one step: a visible bar centred on it, labelled with its step
    assert width == pytest.approx(MIN_BAR_SHARE * 199) and (min(lanes[1].x) + max(lanes[1].x)) / 2 == 50
    assert [a.text for a in figure.layout.annotations] == ["loss_spike · steps 10–20", "loss_spike · step 50"]
    lines = sorted(shape.x0 for shape in figure.layout.shapes if shape.type == "line")
    assert lines == [10, 20, 50]  # outlines at the true first and last steps, no fill over the plot
    assert all(trace.type == "scatter" for trace in figure.data)  # SVG, never WebGL


@pytest.mark.parametrize("log_y", [True, False], ids=["log", "linear"])
def test_finding_lanes_stay_on_their_linear_axis_whatever_the_curve_axis(log_y):
    """Regression: a log loss axis turned the lane axis to log too, and the lanes vanished."""
    figure = curve_figure(curve_points(), title="loss", log_y=log_y, findings=[finding(start=10, end=20)])
    assert figure.layout.yaxis.type == ("log" if log_y else "linear")
    assert figure.layout.yaxis2.type in (None, "linear", "-")
    top, bottom = figure.layout.yaxis2.range[1], figure.layout.yaxis2.range[0]
    lane = next(trace for trace in figure.data if trace.yaxis == "y2")
    assert bottom <= min(lane.y) < max(lane.y) <= top


def test_a_flat_lr_keeps_its_range_and_its_lanes():
    flat = curve_points().assign(value=1e-3)
    figure = curve_figure(flat, title="lr", findings=[finding(start=10, end=20)])
    assert list(figure.layout.yaxis.range) == [5e-4, 1.5e-3] and list(figure.layout.yaxis2.range)[1] == 1.0


@pytest.mark.parametrize(("spans", "lanes"), [
    ([(10, 90), (50, 60)], [0, 1]),               # overlapping: two lanes
    ([(10, 20), (60, 90)], [0, 0]),               # far apart: one lane
    ([(10, 11), (13, 14)], [0, 1]),               # apart, but the first label would overprint the second bar
    ([(0, 100)] * 8, [0, 1, 2, 3, 4, 4, 4, 4]),   # lanes are capped; the rest share the last
], ids=["overlap", "apart", "labels-would-overprint", "capped"])
def test_findings_get_lanes_so_bars_and_labels_never_overlap(spans, lanes):
    found = [finding(start=a, end=b) for a, b in spans]
    assert [span.lane for span in finding_lanes(found, (0, 100))] == lanes


def test_a_finding_bar_is_never_wider_than_its_steps_unless_too_narrow_to_see():
    spans = finding_lanes([finding(start=3, end=96), finding(start=44, end=44)], (0, 100))
    assert (spans[0].x0, spans[0].x1) == (3, 96)
    assert spans[1].x1 - spans[1].x0 == pytest.approx(MIN_BAR_SHARE * 100) and spans[1].label.endswith("step 44")


def test_curve_figure_draws_raw_median_and_band_and_marks_nan():
    points = curve_points()
    points.loc[points["step"] == 150, "value"] = np.nan
    figure = curve_figure(points, title="loss", log_y=True)
    names = [trace.name for trace in figure.data]
    assert names == ["train (raw)", None, "train 10–90 %", "train (median)", "train NaN/Inf"]
    assert list(figure.data[-1].x) == [150]
    assert figure.layout.yaxis.type == "log"


def test_curve_figure_without_smoothing_draws_only_the_points():
    figure = curve_figure(curve_points(), title="loss", smooth=False)
    assert [trace.name for trace in figure.data] == ["train"]


def test_curve_figure_one_trace_group_per_lr_group():
    points = pd.concat([curve_points(20).assign(layer="group0"), curve_points(20).assign(layer="group1")])
    figure = curve_figure(points, title="lr")
    assert [trace.name for trace in figure.data] == ["train group0", "train group1"]


def test_finding_lanes_with_one_open_end():
    [span] = finding_lanes([finding(start=None, end=7)], (0, 100))
    assert (span.start, span.end, span.label) == (7, 7, "loss_spike · step 7")


def test_compare_figure_wall_time_starts_each_run_at_zero_in_label_order():
    points = pd.DataFrame({"run_id": ["a", "a", "b", "b"], "step": [1, 2, 1, 2], "epoch": [0, 0, 0, 0],
                           "wall_time": [100.0, 110.0, 5000.0, 5030.0], "value": [1.0, 0.5, 2.0, 1.0]})
    figure = compare_figure(points, x="wall_time", title="loss", labels={"b": "run b", "a": "run a"})
    assert [trace.name for trace in figure.data] == ["run b", "run a"]
    assert list(figure.data[0].x) == [0.0, 30.0] and list(figure.data[1].x) == [0.0, 10.0]


def test_compare_figure_marks_a_run_with_one_point():
    # A run evaluated once (or with one finite value) was a line of one point: nothing drawn, only its legend.
    points = pd.DataFrame({"run_id": ["a", "a", "b", "c", "c"], "step": [1, 2, 1, 1, 2], "epoch": [0] * 5,
                           "wall_time": [0.0] * 5, "value": [1.0, 0.5, 2.0, 3.0, np.nan]})
    figure = compare_figure(points, x="step", title="val loss", labels={"a": "a", "b": "b", "c": "c"})
    assert [trace.mode for trace in figure.data] == ["lines", "lines+markers", "lines+markers"]


# ---------------------------------------------------------------- layers

def test_layer_grid_is_log10_in_first_seen_layer_order():
    frame = pd.DataFrame({"layer": ["fc", "fc", "conv", "conv"], "step": [1, 2, 1, 2],
                          "value": [1e-3, 1e-2, 0.0, np.nan]})
    grid = layer_grid(frame)
    assert list(grid.index) == ["fc", "conv"]
    assert grid.loc["fc"].tolist() == pytest.approx([-3.0, -2.0])
    assert grid.loc["conv"].isna().all()  # log of 0 and NaN are undefined, not drawn


def test_update_ratio_heatmap_is_centred_on_1e_minus_3():
    frame = pd.DataFrame({"layer": ["fc"] * 3, "step": [1, 2, 3], "value": [1e-4, 1e-3, 1e-2]})
    figure = update_ratio_heatmap_figure(frame, findings=[finding(rule="update_ratio_out_of_band", start=1, end=3)])
    heatmap = figure.data[0]
    assert heatmap.zmid == UPDATE_RATIO_TARGET_LOG10 == -3
    assert "1e-3 target" in heatmap.colorbar.ticktext
    assert [(shape.x0, shape.layer) for shape in figure.layout.shapes] == [(1, "above"), (3, "above")]
    assert [(min(t.x), max(t.x)) for t in figure.data if t.yaxis == "y2"] == [(1, 3)]


# ---------------------------------------------------------------- classes

MATRICES = {
    "balanced": np.array([[5, 1, 0], [2, 6, 1], [0, 3, 7]]),
    "never-predicted": np.array([[4, 0, 2], [3, 0, 1], [0, 0, 9]]),
    "empty-class": np.array([[4, 1, 0], [0, 0, 0], [1, 0, 3]]),
}


@pytest.mark.parametrize("matrix", MATRICES.values(), ids=MATRICES.keys())
def test_class_metrics_match_sklearn(matrix):
    from sklearn.metrics import precision_recall_fscore_support

    y_true = np.repeat(np.repeat(np.arange(3), 3), matrix.ravel())
    y_pred = np.repeat(np.tile(np.arange(3), 3), matrix.ravel())
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=[0, 1, 2], zero_division=0)
    metrics = class_metrics(matrix, ["a", "b", "c"])
    np.testing.assert_allclose(metrics["precision"], precision)
    np.testing.assert_allclose(metrics["recall"], recall)
    np.testing.assert_allclose(metrics["f1"], f1)
    np.testing.assert_array_equal(metrics["support"], support)


def test_confusion_matrix_from_long_rows_sums_repeats_and_pads_to_num_classes():
    rows = pd.DataFrame({"true_class": [0, 0, 1], "pred_class": [1, 1, 0], "count": [2, 3, 4]})
    np.testing.assert_array_equal(confusion_matrix(rows, num_classes=3), [[0, 5, 0], [4, 0, 0], [0, 0, 0]])


@pytest.mark.parametrize(("matrix", "expected"), [
    (np.array([[8, 0], [2, 0]]), (0.8, 0.8)),
    (np.array([[1, 1], [0, 8]]), (0.8, 0.9)),
    (np.zeros((2, 2)), (np.nan, np.nan)),
], ids=["predicts-majority", "beats-baseline", "empty"])
def test_majority_baseline(matrix, expected):
    np.testing.assert_allclose(majority_baseline(matrix), expected)


def test_worst_classes_names_the_main_confusion():
    matrix = MATRICES["never-predicted"]
    worst = worst_classes(class_metrics(matrix, ["a", "b", "c"]), matrix, count=2)
    assert list(worst["class"]) == ["b", "a"]
    assert list(worst["most_confused_with"]) == ["a", "c"] and list(worst["confused_count"]) == [3, 2]


def test_class_metrics_over_evaluations_one_block_per_step():
    rows = pd.DataFrame({"split": "val", "step": [10, 10, 20], "true_class": [0, 1, 1],
                         "pred_class": [0, 0, 1], "count": [3, 1, 4]})
    metrics = class_metrics_over_evaluations(rows, num_classes=2)
    assert sorted(metrics["step"].unique()) == [10, 20]
    at_20 = metrics[metrics["step"] == 20].set_index("class_index")
    assert at_20.loc[1, "recall"] == 1.0 and at_20.loc[0, "support"] == 0


# ---------------------------------------------------------------- compare

def test_differing_hyperparameters_keeps_only_what_differs():
    table = differing_hyperparameters({
        "a": {"lr": 0.1, "batch_size": 32, "optimizer": {"type": "adam", "betas": [0.9, 0.99]}},
        "b": {"lr": 0.01, "batch_size": 32, "optimizer": {"type": "adam", "betas": [0.9, 0.98]}},
        "c": {"lr": 0.1, "batch_size": 32, "optimizer": {"type": "adam", "betas": [0.9, 0.99]}, "seed": 1},
    })
    assert sorted(table.index) == ["lr", "optimizer.betas", "seed"]
    assert table.loc["seed", "a"] == "" and table.loc["seed", "c"] == 1


def test_flatten_config_dots_nested_keys():
    assert flatten_config({"a": {"b": 1, "c": {"d": 2}}, "e": [1, 2]}) == {"a.b": 1, "a.c.d": 2, "e": "[1, 2]"}


def test_parallel_coordinates_log_axis_for_lr_and_categories_for_text():
    table = pd.DataFrame({"lr": [1e-4, 1e-3, 1e-1], "optimizer": ["adam", "sgd", "adam"], "seed": [0, 0, 0],
                          "final_val_accuracy": [0.5, 0.7, 0.6]})
    figure = parallel_coordinates_figure(table, metric="final_val_accuracy")
    dims = figure.data[0].dimensions
    assert [d.label for d in dims] == ["lr (log10)", "optimizer", "final_val_accuracy"]  # seed is constant
    np.testing.assert_allclose(dims[0].values, [-4, -3, -1])
    assert list(dims[1].ticktext) == ["adam", "sgd"] and list(dims[1].values) == [0, 1, 0]


@pytest.mark.parametrize("value, log_y, expected", [
    (1e-3, False, [5e-4, 1.5e-3]),
    (1e-3, True, [-3.5, -2.5]),
    (0.0, False, [-1.0, 1.0]),
], ids=["constant-lr", "constant-lr-log", "zero"])
def test_constant_series_gets_a_range_around_its_value(value, log_y, expected):
    """Regression: plotly pads a flat series by ±1, drawing lr = 1e-3 on the zero line."""
    from traindoctor.dashboard.app.charts.curves import curve_figure

    points = pd.DataFrame({"step": range(1, 51), "value": [value] * 50, "split": "train", "layer": "group0"})
    figure = curve_figure(points, title="lr", log_y=log_y, smooth=False)
    assert list(figure.layout.yaxis.range) == pytest.approx(expected)


def test_varying_series_keeps_plotly_autorange():
    from traindoctor.dashboard.app.charts.curves import curve_figure

    points = pd.DataFrame({"step": range(1, 51), "value": np.linspace(1, 2, 50), "split": "train"})
    assert curve_figure(points, title="loss").layout.yaxis.range is None


# ---------------------------------------------------------------- names from the run

# Plotly renders <a href>, <b>, <br>, <img>-like tags and entities in titles, legends, axis and
# tick labels and hover text; every name below comes from a run.
HOSTILE = "<a href='http://127.0.0.1:9/x'>link</a> <img src=x> &amp;"
ESCAPED = "&lt;a href='http://127.0.0.1:9/x'&gt;link&lt;/a&gt; &lt;img src=x&gt; &amp;amp;"


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, (list, tuple, np.ndarray)):
        return [s for item in value for s in _strings(item)]
    return []


def _hostile_figures():
    steps = np.arange(1, 61)
    layers = pd.DataFrame({"layer": [HOSTILE] * 60, "step": steps, "value": 1e-3})
    shaded = [finding(rule=HOSTILE, start=5, end=9)]
    rows = pd.DataFrame({"split": "val", "step": [10, 10], "true_class": [0, 1], "pred_class": [0, 1], "count": [3, 4]})
    return {
        "curve-split-layer-title": curve_figure(
            pd.DataFrame({"step": steps, "value": 1.0, "split": HOSTILE, "layer": HOSTILE}), title=HOSTILE,
            findings=shaded),
        "compare-labels-title": compare_figure(
            pd.DataFrame({"run_id": "a", "step": steps, "epoch": 0, "wall_time": steps, "value": 1.0}),
            x="step", title=HOSTILE, labels={"a": HOSTILE}),
        "update-ratio-layers": update_ratio_heatmap_figure(layers, findings=[finding(rule=HOSTILE, start=5, end=9)]),
        "grad-norm-layers": grad_norm_heatmap_figure(layers),
        "class-lines": class_metrics_figure(class_metrics_over_evaluations(rows, 2, [HOSTILE, "b"])),
        "confusion-axes": confusion_matrix_figure(np.eye(2), [HOSTILE, "b"]),
        "parallel-keys-values": parallel_coordinates_figure(
            pd.DataFrame({HOSTILE: [HOSTILE, "b", "c"], "final_val_loss": [1.0, 2.0, 3.0]}), metric="final_val_loss"),
    }


@pytest.mark.parametrize("name", list(_hostile_figures()))
def test_names_from_the_run_reach_plotly_escaped(name):
    figure = _hostile_figures()[name]
    strings = _strings(figure.to_plotly_json())
    assert not [s for s in strings if "<a " in s or "<img" in s], name
    assert any(ESCAPED in s for s in strings), name
