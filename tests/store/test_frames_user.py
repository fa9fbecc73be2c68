"""store/frames.py as a user who knows pandas uses it: ``run.series(...)`` where a ``pd.Series`` used to be.

tests/store/test_frames.py checks the operations the rules use against pandas; these are the ones a user
reaches for first that gave a silently different answer (``x in curve``, ``astype(int)`` of NaN, a Curve
plus a pandas Series), or broke the rules on input pandas took (``pd.NA`` in a string column), and the way
back to pandas (``to_pandas``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from traindoctor.store.frames import Curve, Table
from traindoctor.store.run_data import RunData

STEPS = np.array([0, 1, 2, 5, 10], dtype="int64")
VALUES = np.array([2.0, np.nan, 1.5, 0.5, 10.0])


def _pair() -> tuple[Curve, pd.Series]:
    return Curve(VALUES, STEPS, "loss"), pd.Series(VALUES, index=STEPS, name="loss")


@pytest.mark.parametrize("key", [0, 5, 10, 3, 0.5, 1.5, 10.0, np.int64(5), -1])
def test_in_looks_up_a_step_as_pandas_does(key):
    curve, series = _pair()
    assert (key in curve) == (key in series)


def test_in_of_an_empty_curve_is_false():
    assert 0 not in Curve(np.empty(0), np.empty(0, dtype="int64"))


@pytest.mark.parametrize("values", [VALUES, np.array([1.0, np.inf, 2.0, 3.0, 4.0])])
@pytest.mark.parametrize("dtype", [int, "int64", "int32", "uint8"])
def test_astype_integer_of_non_finite_raises_as_pandas(values, dtype):
    with pytest.raises(ValueError):
        pd.Series(values, index=STEPS).astype(dtype)
    with pytest.raises(ValueError, match="non-finite"):
        Curve(values, STEPS).astype(dtype)


def test_astype_integer_of_finite_values_still_works():
    curve = Curve(np.array([1.0, 2.9, -3.0]), np.array([1, 2, 3]))
    pd.testing.assert_series_equal(curve.astype(int).to_pandas(),
                                   pd.Series([1.0, 2.9, -3.0], index=[1, 2, 3]).astype(int))


@pytest.mark.parametrize("index", [[0, 1, 2, 5, 10], [100, 101, 102, 103, 104], [10, 5, 2, 1, 0], [5, 10]])
def test_arithmetic_with_a_pandas_series_aligns_by_step(index):
    curve, series = _pair()
    other = pd.Series(np.arange(len(index), dtype="float64") + 1, index=index, name="loss")
    for op in (lambda a, b: a + b, lambda a, b: a * b, lambda a, b: a - b, lambda a, b: b - a):
        expected = op(series, other)
        got = op(curve, other)
        if isinstance(got, Curve):
            got = got.to_pandas()
        pd.testing.assert_series_equal(got, expected, check_index_type=False)


def test_to_pandas_keeps_steps_name_and_values():
    curve, series = _pair()
    pd.testing.assert_series_equal(curve.to_pandas(), series)
    assert curve.to_pandas().rolling(2, min_periods=1).mean().index.tolist() == STEPS.tolist()


def test_to_pandas_is_a_copy():
    curve, _ = _pair()
    converted = curve.to_pandas()
    converted.iloc[0] = 99.0
    assert curve.iloc[0] == 2.0


def test_layer_frame_to_pandas():
    run = RunData("r", "r", scalars={"step": [1, 1, 2], "split": ["train"] * 3, "name": ["update_ratio"] * 3,
                                     "layer": ["b", "a", "a"], "value": [1.0, 2.0, 3.0]})
    frame = run.layer_frame("update_ratio").to_pandas()
    expected = pd.DataFrame({"a": [2.0, 3.0], "b": [1.0, np.nan]}, index=[1, 2])
    pd.testing.assert_frame_equal(frame, expected, check_index_type=False, check_column_type=False)


def _scalars(layer_missing) -> pd.DataFrame:  # noqa: ANN001
    steps = list(range(1, 201))
    return pd.DataFrame({
        "step": steps * 2,
        "split": ["train"] * 400,
        "name": ["loss"] * 200 + ["lr"] * 200,
        "layer": [layer_missing] * 200 + ["group0"] * 200,
        "value": [2.0 / s for s in steps] + [1e-3 * min(1.0, s / 50) for s in steps],
    })


@pytest.mark.parametrize("convert", [
    lambda df: df.astype({"layer": "string"}),
    lambda df: df.astype({"layer": "string", "split": "string", "name": "string"}),
    lambda df: df,  # object column holding pd.NA
])
def test_pd_na_in_a_string_column_reads_as_missing(convert):
    scalars = convert(_scalars(pd.NA))
    run = RunData("r", "r", scalars=scalars)
    reference = RunData("r", "r", scalars=_scalars(None))
    assert run.series("loss").tolist() == reference.series("loss").tolist()
    assert run.series("lr", layer="group0").tolist() == reference.series("lr", layer="group0").tolist()
    assert run.layers("lr") == ["group0"]
    assert run.splits() == ["train"]


def test_pd_na_in_a_dict_of_columns_reads_as_missing():
    table = Table.of({"layer": pd.array(["a", pd.NA], dtype="string"), "name": np.array(["x", pd.NA], dtype=object)})
    assert table["layer"].tolist() == ["a", None]
    assert table["name"].tolist() == ["x", None]


def test_the_rules_run_on_pd_na_layers(caplog):
    from traindoctor.api import diagnose

    scalars = _scalars(pd.NA).astype({"layer": "string"})
    with caplog.at_level("WARNING"):
        findings = diagnose(RunData("r", "r", scalars=scalars), strict=True)
    assert [f.rule for f in findings] == [f.rule for f in diagnose(RunData("r", "r", scalars=_scalars(None)))]


@pytest.mark.parametrize("statistic", ["mean", "max", "min"])
@pytest.mark.parametrize("center", [False, True])
def test_a_long_rolling_window_costs_memory_of_the_curve_not_of_curve_times_window(statistic, center):
    """``rolling(1000).mean()`` of a 20,000-step curve: pandas runs it in O(n) memory; a window view reduced
    with ``np.nanmean`` copied n × window floats (160 MB here; 3 GB for a 200k-step run and a 2,000 window)."""
    import tracemalloc

    rng = np.random.default_rng(7)
    values = np.exp(-np.arange(20_000) / 5_000) + rng.normal(0, 0.05, 20_000)
    values[rng.integers(0, 20_000, 500)] = np.nan
    values[rng.integers(0, 20_000, 50)] = np.inf
    curve = Curve(values, np.arange(20_000))
    tracemalloc.start()
    try:
        ours = getattr(curve.rolling(1000, min_periods=10, center=center), statistic)()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    with pd.option_context("compute.use_bottleneck", False):
        theirs = getattr(pd.Series(values).rolling(1000, min_periods=10, center=center), statistic)()
    np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("statistic", ["median", "mean", "max", "min"])
@pytest.mark.parametrize("min_periods", [1, 40, 3000, None])
def test_a_window_far_longer_than_the_curve(statistic, min_periods):
    """A window of 10**6 over 2,000 steps: the answer of pandas, without 2,000 × 10**6 window cells."""
    rng = np.random.default_rng(3)
    values = rng.normal(size=2_000)
    values[rng.integers(0, 2_000, 100)] = np.nan
    ours = getattr(Curve(values, np.arange(2_000)).rolling(10**6, min_periods=min_periods), statistic)()
    with pd.option_context("compute.use_bottleneck", False):
        theirs = getattr(pd.Series(values).rolling(10**6, min_periods=min_periods), statistic)()
    np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("steps, bad", [([1.0, np.nan, 3.0], "nan"), ([1.0, 2.5, 3.0], "2.5"), ([1.0, np.inf, 3.0], "inf"),
                                        (pd.array([1, None, 3], dtype="Int64"), "missing")])
def test_a_step_that_is_missing_or_not_whole_is_a_clear_error(steps, bad):
    """Not a step of -9223372036854775808 (NaN cast to int64), which sorted first and became the 'initial' loss."""
    scalars = pd.DataFrame({"step": steps, "split": "train", "name": "loss", "value": [3.0, 2.0, 1.0]})
    with pytest.raises(ValueError, match="step") as raised:
        RunData("r", "r", scalars=scalars)
    assert "np." not in str(raised.value) and "\n" not in str(raised.value)


def test_whole_float_steps_are_fine():
    run = RunData("r", "r", scalars={"step": [2.0, 1.0], "split": ["train"] * 2, "name": ["loss"] * 2,
                                     "value": [2.0, 1.0]})
    assert run.series("loss").index.tolist() == [1, 2]


def _other_index_pair() -> tuple[Curve, pd.Series, pd.Series]:
    curve, series = _pair()
    shuffled = pd.Series(VALUES[::-1], index=STEPS[::-1], name="other")  # same steps, other order
    return curve, series, shuffled


@pytest.mark.parametrize("operation", [
    lambda s, o: s[o > 1], lambda s, o: s.loc[o > 1], lambda s, o: s.where(o > 1), lambda s, o: s.where(o > 1, o),
    lambda s, o: s.mask(o > 1), lambda s, o: s.fillna(o), lambda s, o: s[o > 100],
], ids=["getitem", "loc", "where", "where-other", "mask", "fillna", "empty-mask"])
def test_a_pandas_series_as_mask_or_filler_aligns_by_step(operation):
    """``curve[series > 1]`` read the booleans as steps 1 and 0 (a silently wrong curve), and ``where``/``mask``
    and ``fillna`` took a pandas Series by position."""
    curve, series, other = _other_index_pair()
    expected = operation(series, other)
    got = operation(curve, other).to_pandas()
    pd.testing.assert_series_equal(got, expected, check_index_type=False, check_dtype=False)


def test_printing_a_curve_shows_its_steps_and_values():
    """``print(run.series("loss"))`` showed ``Curve('loss', 5 values, steps [0, 1, 2]…)``: no value at all."""
    curve, _ = _pair()
    text = repr(curve)
    for step, value in ((0, "2.0"), (10, "10.0"), (1, "nan")):
        assert any(line.split()[:2] == [str(step), value] for line in text.splitlines()), text
    assert "loss" in text and "5 values" in text
    long = Curve(np.arange(1000.0), np.arange(1000) * 10, "lr")
    lines = repr(long).splitlines()
    assert len(lines) < 20 and lines[1].split() == ["0", "0.0"] and lines[-2].split() == ["9990", "999.0"]
    assert str(Curve(np.empty(0), np.empty(0, dtype="int64"), "x")).startswith("Curve('x', 0 values")


@pytest.mark.parametrize("operation", [lambda s: s.round(2), lambda s: s.round(), lambda s: np.round(s, 1),
                                       lambda s: round(s, 1), lambda s: np.round(s)], ids=["round2", "round", "np.round",
                                                                                           "builtin", "np.round0"])
def test_round_keeps_the_steps(operation):
    """``np.round(curve, 1)`` gave a bare ndarray (steps lost), ``curve.round`` and ``round(curve)`` raised."""
    curve, series = _pair()
    curve, series = curve * 1.23456, series * 1.23456
    pd.testing.assert_series_equal(operation(curve).to_pandas(), operation(series), check_index_type=False)
