"""store/frames.py against pandas itself: every operation the rules use, on many random curves.

Each operation is one lambda applied to a :class:`Curve` and to the ``pd.Series`` with the same values and
steps; the two answers must be the same (values bit for bit, NaN where NaN, the same steps, the same kind of
result), or both must raise. The reference is pandas without bottleneck (``compute.use_bottleneck`` off):
the pandas that computed the findings before the port (benchmarks/findings_snapshot.py's base) had no
bottleneck installed, and bottleneck's naive sums round differently in the last bit.

RunData.series / layers / layer_frame are checked against the pandas implementation they replace (copied
below from ``main:store/run_data.py``).
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest

from traindoctor.store.frames import Curve, StepIndex, Table, is_missing, to_float
from traindoctor.store.run_data import SCALAR_COLUMNS, RunData


@pytest.fixture(autouse=True)
def _pandas_without_bottleneck():
    with pd.option_context("compute.use_bottleneck", False):
        yield


# ---------------------------------------------------------------------------------------------- random curves
def _floats(rng: np.random.Generator, size: int, special: float = 0.15) -> np.ndarray:
    values = rng.normal(0.0, 10.0, size) * 10.0 ** rng.integers(-3, 4, size)
    if rng.random() < 0.3:  # ties, as logged losses rounded to a few digits have
        values = np.round(values, 0)
    kinds = rng.random(size)
    values[kinds < special] = np.nan
    values[(kinds >= special) & (kinds < special * 1.3)] = np.inf
    values[(kinds >= special * 1.3) & (kinds < special * 1.5)] = -np.inf
    return values


def _steps(rng: np.random.Generator, size: int, order: str) -> np.ndarray:
    steps = np.sort(rng.choice(np.arange(0, 4 * size + 10), size, replace=False)).astype("int64")
    if order == "unsorted":
        rng.shuffle(steps)
    elif order == "repeated" and size > 1:
        steps = np.sort(rng.integers(0, max(2, size // 2), size)).astype("int64")
    return steps


def _cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(20261130)
    cases: list[tuple[str, np.ndarray, np.ndarray]] = [
        ("empty", np.empty(0, dtype="float64"), np.empty(0, dtype="int64")),
        ("one", np.array([2.5]), np.array([7])),
        ("one-nan", np.array([np.nan]), np.array([3])),
        ("all-nan", np.full(5, np.nan), np.arange(5) * 10),
        ("infs", np.array([np.inf, 1.0, -np.inf, np.nan, 3.0, np.inf]), np.arange(6) * 2),
        ("int-one", np.array([4]), np.array([1])),
        ("bool-one", np.array([True]), np.array([1])),
    ]
    for number in range(10):
        size = int(rng.integers(2, 40))
        cases.append((f"float{number}", _floats(rng, size, special=0.3 if number % 3 == 0 else 0.1),
                      _steps(rng, size, "sorted")))
    for number in range(3):
        size = int(rng.integers(2, 30))
        cases.append((f"float-unsorted{number}", _floats(rng, size), _steps(rng, size, "unsorted")))
        cases.append((f"float-repeated{number}", _floats(rng, size), _steps(rng, size, "repeated")))
    for number in range(4):
        size = int(rng.integers(2, 30))
        cases.append((f"int{number}", rng.integers(-50, 50, size), _steps(rng, size, "sorted")))
        cases.append((f"bool{number}", rng.random(size) < 0.5, _steps(rng, size, "sorted")))
    cases.append(("int-unsorted", rng.integers(-5, 5, 12), _steps(rng, 12, "unsorted")))
    cases.append(("bool-all-false", np.zeros(4, dtype=bool), np.arange(4)))
    return cases


CASES = _cases()
CASE_IDS = [name for name, _, _ in CASES]
FLOAT_CASES = [case for case in CASES if case[1].dtype.kind == "f"]
FLOAT_IDS = [name for name, _, _ in FLOAT_CASES]
SORTED_FLOAT_CASES = [case for case in FLOAT_CASES if "unsorted" not in case[0] and "repeated" not in case[0]]
ROLLING_CASES = SORTED_FLOAT_CASES[:12] + [case for case in CASES if case[1].dtype.kind == "i"][:2]


_PAIRS: dict[tuple[int, int, str], tuple] = {}


def _pair(values: np.ndarray, steps: np.ndarray, name: str = "loss") -> tuple[Curve, pd.Series]:
    """The Curve and the Series of ``values`` at ``steps`` (made once per pair of arrays: building Series is
    most of this file's time). Neither is ever changed in place by an operation under test."""
    key = (id(values), id(steps), name)
    if key not in _PAIRS:  # the arrays are kept in the entry, so their ids are not reused
        _PAIRS[key] = (values, steps, Curve(values.copy(), steps.copy(), name),
                       pd.Series(values.copy(), index=steps.copy(), name=name))
    return _PAIRS[key][2:]


# ---------------------------------------------------------------------------------------------- comparing
def _outcome(operation: Callable[[Any], Any], subject: Any) -> tuple[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            return "value", operation(subject)
        except (KeyError, IndexError, ValueError, TypeError, NotImplementedError, pd.errors.IndexingError) as error:
            return "raised", error


def _same_scalar(ours: Any, theirs: Any, what: str) -> None:
    if isinstance(theirs, (bool, np.bool_)):
        assert isinstance(ours, (bool, np.bool_)), f"{what}: {ours!r} is not a bool like pandas' {theirs!r}"
        assert bool(ours) == bool(theirs), f"{what}: {ours!r} != pandas' {theirs!r}"
        return
    assert isinstance(ours, numbers.Number) and not isinstance(ours, (bool, np.bool_)), \
        f"{what}: {ours!r} ({type(ours).__name__}) for pandas' {theirs!r} ({type(theirs).__name__})"
    if isinstance(theirs, (numbers.Integral,)):
        assert isinstance(ours, numbers.Integral), f"{what}: {ours!r} is not an integer like pandas' {theirs!r}"
    if isinstance(theirs, float) and math.isnan(theirs):
        assert isinstance(ours, float) and math.isnan(ours), f"{what}: {ours!r}, pandas NaN"
        return
    assert ours == theirs, f"{what}: {ours!r} != pandas' {theirs!r} (difference {ours - theirs!r})"


def _same_array(ours: np.ndarray, theirs: np.ndarray, what: str, zero_signs: bool = True) -> None:
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != pandas' {theirs.shape}"
    if theirs.dtype.kind in "biuf" and ours.dtype.kind in "biuf":
        assert ours.dtype.kind == theirs.dtype.kind or (ours.dtype.kind in "iu" and theirs.dtype.kind in "iu"), \
            f"{what}: dtype {ours.dtype} != pandas' {theirs.dtype}"
    if theirs.dtype.kind == "O" or ours.dtype.kind == "O":  # NaN among objects: equal only to itself
        mine, pandas_ones = ours.tolist(), theirs.tolist()
        assert [is_missing(v) for v in mine] == [is_missing(v) for v in pandas_ones], f"{what}: missing values"
        assert [v for v in mine if not is_missing(v)] == [v for v in pandas_ones if not is_missing(v)], what
        return
    if not np.array_equal(ours, theirs, equal_nan=theirs.dtype.kind == "f" and ours.dtype.kind == "f"):
        np.testing.assert_array_equal(ours, theirs, err_msg=what, strict=False)
    if zero_signs and theirs.dtype.kind == "f" and ours.dtype.kind in "biuf":  # -0.0 == 0.0, yet 1 / -0.0 < 0
        zeros = theirs == 0
        assert np.array_equal(np.signbit(ours[zeros].astype("float64")), np.signbit(theirs[zeros])), \
            f"{what}: signs of zeros"


def assert_like_pandas(ours: Any, theirs: Any, what: str = "") -> None:
    """``ours`` (from a Curve) is what pandas gave: a Curve for a Series, an array for an array, a scalar."""
    if isinstance(theirs, tuple) and len(theirs) == 2 and theirs[0] in ("value", "raised"):
        kind, theirs = theirs
        ours_kind, ours = ours
        if kind == "raised":
            assert ours_kind == "raised", f"{what}: pandas raised {theirs!r}, the Curve gave {ours!r}"
            return
        assert ours_kind == "value", f"{what}: the Curve raised {ours!r}, pandas gave {theirs!r}"
    if isinstance(theirs, pd.Series):
        assert isinstance(ours, Curve), f"{what}: a {type(ours).__name__}, pandas a Series"
        assert isinstance(ours.index, StepIndex), f"{what}: index {type(ours.index).__name__}"
        _same_array(ours.index.to_numpy(), theirs.index.to_numpy(), f"{what} (steps)")
        _same_array(ours.to_numpy(), theirs.to_numpy(), f"{what} (values)")
        assert ours.name == theirs.name, f"{what}: name {ours.name!r} != {theirs.name!r}"
    elif isinstance(theirs, (np.ndarray, pd.Index)):
        _same_array(ours, np.asarray(theirs), what)
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), f"{what}: {ours!r} != {theirs!r}"
        for position, (mine, pandas_one) in enumerate(zip(ours, theirs)):
            assert_like_pandas(mine, pandas_one, f"{what}[{position}]")
    elif isinstance(theirs, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(theirs), f"{what}: {ours!r} != {theirs!r}"
        for position, (mine, pandas_one) in enumerate(zip(ours, theirs)):
            assert_like_pandas(mine, pandas_one, f"{what}[{position}]")
    elif theirs is None:
        assert ours is None, f"{what}: {ours!r}, pandas None"
    else:
        _same_scalar(ours, theirs, what)


def check(operation: Callable[[Any], Any], values: np.ndarray, steps: np.ndarray, what: str) -> None:
    curve, series = _pair(values, steps)
    assert_like_pandas(_outcome(operation, curve), _outcome(operation, series), what)


# ---------------------------------------------------------------------------------------------- reductions
REDUCTIONS: dict[str, Callable[[Any], Any]] = {
    "median": lambda s: s.median(),
    "mean": lambda s: s.mean(),
    "max": lambda s: s.max(),
    "min": lambda s: s.min(),
    "sum": lambda s: s.sum(),
    "std": lambda s: s.std(),
    "std-ddof0": lambda s: s.std(ddof=0),
    "quantile-0.1": lambda s: s.quantile(0.1),
    "quantile-0.5": lambda s: s.quantile(0.5),
    "quantile-0.95": lambda s: s.quantile(0.95),
    "quantile-default": lambda s: s.quantile(),
    "count": lambda s: s.count(),
    "any": lambda s: s.any(),
    "all": lambda s: s.all(),
    "idxmax": lambda s: s.idxmax(),
    "idxmin": lambda s: s.idxmin(),
    "nunique": lambda s: s.nunique(),
    "len": lambda s: len(s),
    "empty": lambda s: s.empty,
    "np.max": lambda s: np.max(s),
    "np.sum": lambda s: np.sum(s),
    "np.mean": lambda s: np.mean(s),
    "np.median": lambda s: np.median(s),
    "np.nanmax": lambda s: np.nanmax(s) if len(s) else np.nan,
    "var": lambda s: s.var(),
    "argmax": lambda s: s.argmax(),
    "argmin": lambda s: s.argmin(),
    # numpy hands these to the object's own method: pandas' skip NaN, where numpy's would not.
    "np.argmax": lambda s: np.argmax(s),
    "np.argmin": lambda s: np.argmin(s),
    "np.std": lambda s: np.std(s),
    "np.var": lambda s: np.var(s),
    "np.any": lambda s: np.any(s),
    "np.all": lambda s: np.all(s),
    "np.min": lambda s: np.min(s),
}


@pytest.mark.parametrize("reduction", list(REDUCTIONS), ids=list(REDUCTIONS))
def test_reductions_match_pandas(reduction: str) -> None:
    for name, values, steps in CASES:
        if values.dtype.kind == "b" and reduction in ("median", "quantile-0.1", "quantile-0.5", "quantile-0.95",
                                                      "quantile-default", "std", "std-ddof0", "np.median",
                                                      "var", "np.std", "np.var"):
            continue  # pandas refuses or converts bools inconsistently here; no rule asks it
        check(REDUCTIONS[reduction], values, steps, f"{reduction} of {name}")


# ---------------------------------------------------------------------------------------------- element-wise
ELEMENTWISE: dict[str, Callable[[Any], Any]] = {
    **{f"diff({p})": (lambda p: lambda s: s.diff(p))(p) for p in (1, 2, 5, -1, -3, 0)},
    "diff()": lambda s: s.diff(),
    **{f"shift({p})": (lambda p: lambda s: s.shift(p))(p) for p in (1, 3, -1, -2, 0)},
    "cumsum": lambda s: s.cumsum(),
    "cummax": lambda s: s.cummax(),
    "cummin": lambda s: s.cummin(),
    "np.cumsum": lambda s: np.cumsum(s),
    "np.clip": lambda s: np.clip(s, -1, 2),
    "dropna": lambda s: s.dropna(),
    "fillna(0)": lambda s: s.fillna(0.0),
    "fillna(-1.5)": lambda s: s.fillna(-1.5),
    "fillna(curve)": lambda s: s.fillna(s.iloc[::-1].shift(1)) if s.index.is_unique else s,
    "isna": lambda s: s.isna(),
    "notna": lambda s: s.notna(),
    "isnull": lambda s: s.isnull(),
    "notnull": lambda s: s.notnull(),
    "where(>0)": lambda s: s.where(s > 0),
    "where(>0, -1)": lambda s: s.where(s > 0, -1.0),
    "mask(>0)": lambda s: s.mask(s > 0),
    "where(reversed cond)": lambda s: s.where((s > 0).iloc[::-1]) if s.index.is_unique else s,
    "where(partial cond)": lambda s: s.where((s > 0).iloc[1:]) if s.index.is_unique else s,
    "mask(partial cond)": lambda s: s.mask((s > 0).iloc[:-1]) if s.index.is_unique else s,
    "where(other shifted)": lambda s: s.where(s > 0, s.iloc[1:] * 2) if s.index.is_unique else s,
    "clip(-1, 2)": lambda s: s.clip(-1, 2),
    "clip(lower=0)": lambda s: s.clip(lower=0),
    "clip(upper=0)": lambda s: s.clip(upper=0),
    "clip()": lambda s: s.clip(),
    "isin": lambda s: s.isin([0, 1, 2.0, np.inf]),
    "isin(nan)": lambda s: s.isin([np.nan, 3]),
    "isin(set)": lambda s: s.isin({1, -1}),
    "isin(empty)": lambda s: s.isin([]),
    "unique": lambda s: s.unique(),
    "abs": lambda s: s.abs(),
    "abs()": lambda s: abs(s),
    "neg": lambda s: -s,
    "invert": lambda s: ~s if s.dtype.kind == "b" else ~(s > 0),
    "astype(float)": lambda s: s.astype(float),
    "sort_index": lambda s: s.sort_index(),
    "sort_values": lambda s: s.sort_values(),
    "sort_values(desc)": lambda s: s.sort_values(ascending=False),
    "head(3)": lambda s: s.head(3),
    "tail(3)": lambda s: s.tail(3),
    "tail(0)": lambda s: s.tail(0),
    "copy": lambda s: s.copy(),
    "rename": lambda s: s.rename("other"),
    "np.isfinite": lambda s: np.isfinite(s),
    "np.isnan": lambda s: np.isnan(s),
    "np.log": lambda s: np.log(s),
    "np.log10(abs)": lambda s: np.log10(np.abs(s)),
    "np.exp": lambda s: np.exp(s),
    "np.sqrt": lambda s: np.sqrt(s),
    "np.asarray": lambda s: np.asarray(s),
    "to_numpy": lambda s: s.to_numpy(),
    "to_numpy(float)": lambda s: s.to_numpy(dtype=float),
    "values": lambda s: s.values,
    "tolist": lambda s: s.tolist(),
    "list": lambda s: list(s),
    "items": lambda s: list(s.items()),
    "index.tolist": lambda s: s.index.tolist(),
    "list(index)": lambda s: list(s.index),
    "index.to_numpy": lambda s: s.index.to_numpy(),
    "index.is_unique": lambda s: s.index.is_unique,
    "index.is_monotonic_increasing": lambda s: s.index.is_monotonic_increasing,
    "index.is_monotonic_decreasing": lambda s: s.index.is_monotonic_decreasing,
}


@pytest.mark.parametrize("operation", list(ELEMENTWISE), ids=list(ELEMENTWISE))
def test_elementwise_match_pandas(operation: str) -> None:
    for name, values, steps in CASES:
        if values.dtype.kind == "b" and operation.split("(")[0] in (
                "diff", "shift", "where", "mask", "neg", "abs", "np.log", "np.log10", "np.exp", "np.sqrt", "clip"):
            continue  # pandas gives object arrays (diff, shift, where) or refuses (neg); no rule asks it
        if values.dtype.kind == "i" and operation in ("np.sqrt", "np.log", "np.log10(abs)"):
            continue  # negative integers: the same NaN, but numpy warns differently; floats cover it
        check(ELEMENTWISE[operation], values, steps, f"{operation} of {name}")


@pytest.mark.parametrize("operation", ["list", "items", "list(index)", "tolist"])
def test_iteration_gives_python_scalars(operation: str) -> None:
    for name, values, steps in CASES:
        curve, series = _pair(values, steps)
        ours, theirs = ELEMENTWISE[operation](curve), ELEMENTWISE[operation](series)
        flat_ours = [v for item in ours for v in (item if isinstance(item, tuple) else (item,))]
        flat_theirs = [v for item in theirs for v in (item if isinstance(item, tuple) else (item,))]
        assert [type(v) for v in flat_ours] == [type(v) for v in flat_theirs], f"{operation} of {name}"


# ---------------------------------------------------------------------------------------------- selection
def _selections(rng: np.random.Generator, values: np.ndarray, steps: np.ndarray) -> dict[str, Callable]:
    size = len(values)
    present = steps[rng.integers(0, size, 3)] if size else np.empty(0, dtype="int64")
    absent = np.setdiff1d(np.arange(-2, 4 * size + 12), steps)[:2]
    mask = rng.random(size) < 0.5
    positions = rng.integers(-size, size, 4) if size else np.empty(0, dtype="int64")
    low, high = (np.sort(rng.integers(-3, 4 * size + 12, 2)) if size else (0, 5))
    selections: dict[str, Callable] = {
        "iloc[0]": lambda s: s.iloc[0],
        "iloc[-1]": lambda s: s.iloc[-1],
        f"iloc[{size}]": lambda s: s.iloc[size],
        "iloc[1:4]": lambda s: s.iloc[1:4],
        "iloc[::2]": lambda s: s.iloc[::2],
        "iloc[-3:]": lambda s: s.iloc[-3:],
        "iloc[:-1]": lambda s: s.iloc[:-1],
        "iloc[positions]": lambda s: s.iloc[positions],
        "iloc[list]": lambda s: s.iloc[positions.tolist()],
        "iloc[mask]": lambda s: s.iloc[mask],
        "loc[mask]": lambda s: s.loc[mask],
        "[mask]": lambda s: s[mask],
        "[list mask]": lambda s: s[mask.tolist()],
        "[curve mask]": lambda s: s[s > 0] if s.dtype.kind != "b" else s[s],
        "loc[curve mask]": lambda s: s.loc[s > 0] if s.dtype.kind != "b" else s.loc[s],
        "[reversed curve mask]": lambda s: s[(s > 0 if s.dtype.kind != "b" else s).iloc[::-1]],
        "[partial curve mask]": lambda s: s[(s > 0 if s.dtype.kind != "b" else s).iloc[1:]],
        "iloc[curve mask]": lambda s: s.iloc[s > 0] if s.dtype.kind != "b" else s.iloc[s],
        f"loc[{low}:{high}]": lambda s: s.loc[low:high],
        f"loc[{low}:]": lambda s: s.loc[low:],
        f"loc[:{high}]": lambda s: s.loc[:high],
        "loc[:]": lambda s: s.loc[:],
        f"loc[{high}:{low}]": lambda s: s.loc[high:low],
        "[1:3]": lambda s: s[1:3],
        "[-2:]": lambda s: s[-2:],
        "reindex(steps)": lambda s: s.reindex(np.sort(np.concatenate([present, absent]))),
        "reindex(ffill)": lambda s: s.reindex(np.sort(np.concatenate([present, absent])), method="ffill"),
        "reindex(index)": lambda s: s.reindex(s.index),
        "reindex(range)": lambda s: s.reindex(np.arange(-1, 4 * size + 11, 3)),
        "reindex(range, ffill)": lambda s: s.reindex(np.arange(-1, 4 * size + 11, 3), method="ffill"),
        "get(present)": lambda s: s.get(int(present[0])) if size else s.get(0),
        "get(absent)": lambda s: s.get(int(absent[0]), -1.0),
    }
    for number, step in enumerate(present.tolist()):
        selections[f"loc[{step}]"] = (lambda step: lambda s: s.loc[step])(step)
        selections[f"[{step}]"] = (lambda step: lambda s: s[step])(step)
    for number, step in enumerate(absent.tolist()):
        selections[f"loc[{step}] absent"] = (lambda step: lambda s: s.loc[step])(step)
        selections[f"[{step}] absent"] = (lambda step: lambda s: s[step])(step)
    selections["loc[labels]"] = lambda s: s.loc[present]
    selections["[labels]"] = lambda s: s[present.tolist()]
    selections["loc[labels+absent]"] = lambda s: s.loc[np.concatenate([present, absent])]
    selections["loc[float label]"] = lambda s: s.loc[float(present[0])] if size else s.loc[0.0]
    if size:
        first, last = int(np.min(steps)), int(np.max(steps))
        selections["loc[first:last]"] = lambda s: s.loc[first:last]
        selections["loc[present:present]"] = lambda s: s.loc[int(present[0]):int(present[1])]
    return selections


@pytest.mark.parametrize("name, values, steps", CASES, ids=CASE_IDS)
def test_selection_matches_pandas(name: str, values: np.ndarray, steps: np.ndarray) -> None:
    rng = np.random.default_rng(len(name) * 1000 + len(values))
    for what, operation in _selections(rng, values, steps).items():
        check(operation, values, steps, f"{what} of {name}")


# ---------------------------------------------------------------------------------------------- operators
SCALARS = [0, 2, -1.5, np.nan, np.inf, True]
BINARY = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b,
    "//": lambda a, b: a // b, "**": lambda a, b: a ** b, "%": lambda a, b: a % b,
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
    "np.maximum": lambda a, b: np.maximum(a, b), "np.minimum": lambda a, b: np.minimum(a, b),
    "np.fmax": lambda a, b: np.fmax(a, b),
    "np.add": lambda a, b: np.add(a, b), "np.greater": lambda a, b: np.greater(a, b),
    "np.floor_divide": lambda a, b: np.floor_divide(a, b),
}
LOGICAL = {"&": lambda a, b: a & b, "|": lambda a, b: a | b, "^": lambda a, b: a ^ b}


def _skip_integer_corner(operator_name: str, left: np.ndarray, right: Any) -> bool:
    """Booleans in arithmetic: pandas refuses some (True // True) and answers others; no rule asks."""
    return (left.dtype.kind == "b" or np.asarray(right).dtype.kind == "b") and operator_name in (
        "//", "%", "**", "/", "np.floor_divide")


@pytest.mark.parametrize("operator_name", list(BINARY), ids=list(BINARY))
def test_operators_with_scalars_and_arrays(operator_name: str) -> None:
    operation = BINARY[operator_name]
    rng = np.random.default_rng(len(operator_name))
    for name, values, steps in CASES:
        if values.dtype.kind == "b" and operator_name not in ("==", "!=", "np.maximum", "np.minimum"):
            continue
        for scalar in SCALARS:
            if _skip_integer_corner(operator_name, values, scalar):
                continue
            check(lambda s: operation(s, scalar), values, steps, f"{name} {operator_name} {scalar!r}")
            if operator_name in ("+", "-", "*", "/", "<", ">=", "==", "np.greater", "np.floor_divide"):
                check(lambda s: operation(scalar, s), values, steps, f"{scalar!r} {operator_name} {name}")
        other = _floats(rng, len(values))
        check(lambda s: operation(s, other), values, steps, f"{name} {operator_name} array")
        check(lambda s: operation(other, s), values, steps, f"array {operator_name} {name}")
        check(lambda s: operation(s, other[:-1]), values, steps, f"{name} {operator_name} shorter array")


def _other_curves(rng: np.random.Generator, values: np.ndarray, steps: np.ndarray) -> dict[str, tuple]:
    size = len(values)
    shifted = np.sort(np.unique(np.concatenate([steps[: size // 2], steps[: size // 2] + 1,
                                                rng.integers(0, 4 * size + 12, 3)])))
    return {
        "same steps": (_floats(rng, size), steps),
        "same steps int": (rng.integers(-3, 3, size), steps),
        "other steps": (_floats(rng, len(shifted)), shifted),
        "reversed steps": (_floats(rng, size), steps[::-1].copy()),
        "empty": (np.empty(0), np.empty(0, dtype="int64")),
    }


@pytest.mark.parametrize("operator_name", list(BINARY) + list(LOGICAL), ids=list(BINARY) + list(LOGICAL))
def test_operators_between_curves(operator_name: str) -> None:
    """Same steps: element-wise. Other steps: arithmetic and ufuncs align by step (the union, NaN where one
    has none); comparisons raise, as pandas does."""
    operation = {**BINARY, **LOGICAL}[operator_name]
    rng = np.random.default_rng(7 + len(operator_name))
    for name, values, steps in CASES[:7] + CASES[7::2]:  # the corner cases, half the random ones
        if "repeated" in name:
            continue  # pandas aligns repeated steps by a many-to-many join; store curves never repeat a step
        if operator_name in LOGICAL:
            values = values > 0 if values.dtype.kind != "b" else values
        elif values.dtype.kind == "b" and operator_name not in ("==", "!=", "np.maximum", "np.minimum"):
            continue
        for other_name, (other_values, other_steps) in _other_curves(rng, values, steps).items():
            if operator_name in LOGICAL:
                other_values = other_values > 0
            if _skip_integer_corner(operator_name, values, other_values):
                continue
            curve, series = _pair(values, steps)
            other_curve, other_series = _pair(other_values, other_steps, "other")
            ours = _outcome(lambda s: operation(s, other_curve), curve)
            theirs = _outcome(lambda s: operation(s, other_series), series)
            if theirs[0] == "value" and ours[0] == "value" and theirs[1].name is None:
                ours = ("value", ours[1].rename(None))  # pandas drops a name two operands do not share
            assert_like_pandas(ours, theirs, f"{name} {operator_name} {other_name}")


def test_construction_as_pandas() -> None:
    """Values are copied (pandas 3), steps are not (neither are an Index's), a curve given an index is reindexed
    to it, a scalar fills the index."""
    values, steps = np.array([1.0, 2.0, 3.0]), np.array([5, 6, 7])
    curve, series = Curve(values, steps, "loss"), pd.Series(values, index=steps, name="loss")
    values[0], steps[0] = 9.0, 1
    assert_like_pandas(curve, series, "after writing into the arrays")
    assert_like_pandas(Curve(curve, index=[6, 7, 8]), pd.Series(series, index=[6, 7, 8]), "reindexed")
    assert_like_pandas(Curve(curve, index=[7, 6, 5]), pd.Series(series, index=[7, 6, 5]), "reordered")
    assert_like_pandas(Curve(2.5, [1, 2], "x"), pd.Series(2.5, index=[1, 2], name="x"), "scalar")
    assert_like_pandas(Curve([1, 2], [3, 4]).astype(float), pd.Series([1, 2], index=[3, 4]).astype(float), "list")


def test_truth_value_is_ambiguous() -> None:
    curve, series = _pair(np.array([1.0, 2.0]), np.array([1, 2]))
    with pytest.raises(ValueError):
        bool(series)
    with pytest.raises(ValueError):
        bool(curve)


# ---------------------------------------------------------------------------------------------- rolling
@pytest.mark.parametrize("center", [False, True], ids=["trailing", "centred"])
@pytest.mark.parametrize("statistic", ["median", "mean", "max", "min"])
def test_rolling_matches_pandas(center: bool, statistic: str) -> None:
    """The median (what the rules use) over windows 1..12 and one longer than the curve; the mean, max and min
    over a few."""
    for name, values, steps in ROLLING_CASES:
        windows = list(range(1, 13)) if statistic == "median" else [1, 2, 3, 6]
        for window in windows + [len(values) + 3]:
            every = (None, 0, 1, 2, max(1, window // 2), window) if statistic == "median" else (None, 1)
            for min_periods in sorted(set(every), key=lambda m: (m is None, m)):
                what = f"rolling({window}, {min_periods}, center={center}).{statistic} of {name}"
                operation = (lambda w, m: lambda s: getattr(s.rolling(w, min_periods=m, center=center), statistic)())(
                    window, min_periods)
                curve, series = _pair(values, steps)
                ours, theirs = _outcome(operation, curve), _outcome(operation, series)
                if statistic == "mean" and ours[0] == theirs[0] == "value":
                    # pandas keeps a running sum (add the value entering, subtract the one leaving): its last
                    # bits depend on the history; a window's own mean may differ by a few ulps.
                    np.testing.assert_allclose(ours[1].to_numpy(), theirs[1].to_numpy(), rtol=1e-9, atol=1e-12,
                                               err_msg=what)
                    continue
                assert ours[0] == theirs[0], f"{what}: the Curve {ours}, pandas {theirs}"
                if ours[0] == "value":
                    # Among equal values pandas' skip list and deques keep another one than bottleneck's heaps
                    # and numpy do: a window of 0.0 and -0.0 may give either zero (no rule divides by it).
                    _same_array(ours[1].index, theirs[1].index.to_numpy(), what)
                    _same_array(ours[1].to_numpy(), theirs[1].to_numpy(), what, zero_signs=False)


@pytest.mark.parametrize("window, min_periods", [(25, 1), (51, 25), (100, None), (7, 3)])
def test_rolling_median_of_a_long_curve(window: int, min_periods: int | None) -> None:
    """Long noisy losses with NaN/inf runs, as the rules smooth them (bottleneck's heaps against pandas' skip list)."""
    rng = np.random.default_rng(window)
    values = np.exp(-np.arange(2000) / 500) + rng.normal(0, 0.05, 2000)
    values[rng.integers(0, 2000, 80)] = np.nan
    values[300:340] = np.nan
    values[rng.integers(0, 2000, 10)] = np.inf
    curve, series = _pair(values, np.arange(2000) * 10)
    for center in (False, True):
        ours = curve.rolling(window, min_periods=min_periods, center=center).median()
        theirs = series.rolling(window, min_periods=min_periods, center=center).median()
        _same_array(ours.to_numpy(), theirs.to_numpy(), f"window {window}, center={center}", zero_signs=False)


@pytest.mark.parametrize("window, min_periods, center", [
    (3, 4, False), (0, None, False), (0, 0, True), (0, 1, False), (-1, None, False), (2.0, None, False),
    (3, -1, False), (True, None, False)])
def test_rolling_odd_windows_as_pandas(window: Any, min_periods: Any, center: bool) -> None:
    """min_periods above the window, a window of 0 (NaN throughout), negative or float windows (raise)."""
    check(lambda s: s.rolling(window, min_periods=min_periods, center=center).median(), np.arange(6.0),
          np.arange(6), f"rolling({window!r}, {min_periods!r}, center={center})")


# ---------------------------------------------------------------------------------------------- to_float, is_missing
@pytest.mark.parametrize("values", [
    [1, 2, 3], [1.5, None, "2.5", "x", "", " 3 ", "inf", "-inf", "nan", True, False, 1e308],
    np.array(["1", "2e-3", None], dtype=object), np.array([True, False]), [], np.array([np.nan, 1.0]),
    np.array(["7", "8"]),
    ["1_000", "0x10", "1e5", "+5", "\u22125", "Infinity", "NaN", "1,5", "\u0661\u0662", "inF", " 7\n", "1e400", "-0",
     ".5", "5.", "e5", "1d5", b"3", np.int64(4), "  ", "None", "1.0f"],
], ids=["ints", "mixed", "object", "bools", "empty", "floats", "unicode", "odd-strings"])
def test_to_float_is_to_numeric_coerce(values: Any) -> None:
    theirs = pd.to_numeric(pd.Series(values, dtype=object if isinstance(values, list) else None),
                           errors="coerce").to_numpy(dtype="float64")
    _same_array(to_float(values), theirs, repr(values))


@pytest.mark.parametrize("value", [None, np.nan, float("nan"), np.float32("nan"), 0.0, 1, "x", "", pd.NA, pd.NaT,
                                   np.datetime64("NaT"), True])
def test_is_missing_is_pd_isna(value: Any) -> None:
    assert is_missing(value) == bool(pd.isna(value)), repr(value)


def test_table_to_float_and_rows() -> None:
    frame = pd.DataFrame({"step": [1, 2, 3], "value": ["1.5", None, "x"], "split": ["train", "val", "train"]})
    table = Table.of(frame)
    _same_array(to_float(table["value"]), pd.to_numeric(frame["value"], errors="coerce").to_numpy(), "numbers")
    train = table[table["split"] == "train"]
    assert len(train) == 2 and train["step"].tolist() == [1, 3]
    assert table[["step"]].columns == ["step"]
    assert table[[True, False, True]]["step"].tolist() == frame[[True, False, True]]["step"].tolist()
    assert table[table["step"] > 5].empty and len(table[table["step"] > 5].columns) == 3


# ------------------------------------------------------------------------------ RunData against main's pandas
class PandasRunData:
    """``main:store/run_data.py``'s RunData.series / layers / layer_frame, verbatim: the reference."""

    def __init__(self, scalars: pd.DataFrame) -> None:
        self.scalars = scalars

    def series(self, name: str, split: str = "train", layer: str | None = None) -> pd.Series:
        frame = self.scalars
        mask = (frame["name"] == name) & (frame["split"] == split)
        mask &= frame["layer"].isna() if layer is None else (frame["layer"] == layer)
        selected = frame.loc[mask, ["step", "value"]]
        if selected.empty:
            return pd.Series(dtype="float64", name=name)
        selected = selected.drop_duplicates("step", keep="last").sort_values("step")
        return pd.Series(selected["value"].to_numpy(dtype="float64"), index=selected["step"].to_numpy(dtype="int64"),
                         name=name)

    def has(self, name: str, split: str = "train") -> bool:
        frame = self.scalars
        return bool(((frame["name"] == name) & (frame["split"] == split)).any())

    def layers(self, name: str, split: str = "train") -> list[str]:
        frame = self.scalars
        mask = (frame["name"] == name) & (frame["split"] == split) & frame["layer"].notna()
        return list(dict.fromkeys(frame.loc[mask, "layer"]))

    def layer_frame(self, name: str, split: str = "train") -> pd.DataFrame:
        frame = self.scalars
        mask = (frame["name"] == name) & (frame["split"] == split) & frame["layer"].notna()
        selected = frame.loc[mask, ["step", "layer", "value"]]
        if selected.empty:
            return pd.DataFrame()
        return selected.pivot_table(index="step", columns="layer", values="value", aggfunc="last",
                                    dropna=False).sort_index()


def _random_scalars(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    names = np.array(["loss", "grad_norm", "lr", "acc"])
    layers = np.array([None, None, "fc1.weight", "fc2.bias", "conv.weight", "group0"], dtype=object)
    steps = rng.integers(0, max(2, rows // 3), rows)  # repeated steps: the newest attempt is the last row
    return pd.DataFrame({
        "step": steps,
        "epoch": steps // 10,
        "wall_time": rng.random(rows) * 1e9,
        "split": rng.choice(np.array(["train", "val"]), rows, p=[0.8, 0.2]),
        "name": rng.choice(names, rows),
        "layer": rng.choice(layers, rows),
        "value": _floats(rng, rows),
    })[SCALAR_COLUMNS]


def _scalar_frames() -> list[tuple[str, pd.DataFrame, str]]:
    """(name, scalars, what RunData is given): every frame as pandas, a few as pyarrow and numpy columns."""
    rng = np.random.default_rng(13)
    frames = [(f"random{number}", _random_scalars(rng, int(rng.integers(1, 300)))) for number in range(6)]
    frames.append(("empty", pd.DataFrame({c: pd.Series(dtype="object") for c in SCALAR_COLUMNS})))
    frames.append(("nan-layers", _random_scalars(rng, 40).assign(
        layer=lambda f: f["layer"].where(f["layer"].notna(), np.nan))))
    frames.append(("sorted", _random_scalars(rng, 60).sort_values("step", kind="stable")))
    return [(name, frame, "pandas") for name, frame in frames] + [
        (name, frame, source) for name, frame in frames[:2] + frames[-3:] for source in ("pyarrow", "columns")]


@pytest.mark.parametrize("frame_name, scalars, source", _scalar_frames(),
                         ids=[f"{name}-{source}" for name, _, source in _scalar_frames()])
def test_run_data_matches_the_pandas_run_data(frame_name: str, scalars: pd.DataFrame, source: str) -> None:
    """RunData made from a pandas frame, a pyarrow Table (what the store reads) or a dict of numpy columns."""
    import pyarrow as pa

    given = {"pandas": lambda: scalars.copy(), "pyarrow": lambda: pa.Table.from_pandas(scalars, preserve_index=False),
             "columns": lambda: {name: scalars[name].to_numpy() for name in scalars.columns}}[source]()
    ours, theirs = RunData("r", "r", scalars=given), PandasRunData(scalars.copy())
    for name in ("loss", "lr", "absent"):
        for split in ("train", "val"):
            what = f"{name}/{split} of {frame_name}"
            assert ours.has(name, split) == theirs.has(name, split), what
            assert_like_pandas(ours.series(name, split), theirs.series(name, split), f"series {what}")
            assert ours.layers(name, split) == theirs.layers(name, split), f"layers {what}"
            for layer in theirs.layers(name, split)[:2] + ["absent.weight"]:
                assert_like_pandas(ours.series(name, split, layer), theirs.series(name, split, layer),
                                   f"series {what} {layer}")
            grid, reference = ours.layer_frame(name, split), theirs.layer_frame(name, split)
            assert grid.empty == reference.empty, f"layer_frame {what}"
            assert len(grid) == len(reference), f"layer_frame {what}"
            if reference.empty and not len(reference.columns):
                continue
            assert list(grid.columns) == [str(c) for c in reference.columns], f"layer_frame columns {what}"
            assert isinstance(grid.index, StepIndex), what
            _same_array(grid.index.to_numpy(), reference.index.to_numpy(), f"layer_frame steps {what}")
            _same_array(grid.to_numpy(), reference.to_numpy(dtype="float64"), f"layer_frame values {what}")
            for layer in reference.columns:
                assert_like_pandas(grid[layer], reference[layer].rename(layer), f"layer_frame[{layer}] {what}")
