"""The two containers the rules read, on numpy alone: a step-indexed :class:`Curve` and a column :class:`Table`.

The diagnosis once read pandas objects; importing pandas alone cost a
command-line diagnosis 0.3 s of CPU, more than all the rules together. These
classes keep the small part of the pandas ``Series`` and ``DataFrame``
interface the rules use, with pandas' meaning (reductions skip NaN; ``loc``
slices by step, both ends included; ``rolling(...).median()`` ignores NaN and
±inf alike and counts only finite values towards ``min_periods``; ``unique`` keeps the order of
first appearance), so a rule reads the same on either. Anything outside that
part raises ``AttributeError``, never a silently different answer. For the rest of pandas,
``curve.to_pandas()`` is the same Series (``pd.Series(curve)`` reads a Curve as a plain array: its steps
become 0, 1, 2…); a pandas Series given to a Curve's operators, masks, ``where`` or ``fillna`` aligns by
step, as it would with another Series.
``tests/store/test_frames.py`` checks each operation against pandas itself
(pandas 3 without bottleneck, the pandas the findings were computed with):
values bit for bit, dtypes, NaN, steps, and what raises.

Rolling medians use bottleneck's ``move_median`` (O(n log w), NaN-aware; pandas
has its own skip list, with the same medians). Sums and means add NaN as 0 with
numpy's pairwise sum, as pandas does, so they agree to the last bit.

Where pandas is ambiguous, deprecated or not worth copying, the choice made:

- Reductions of integer or boolean curves return Python ``int``/``bool``
  (pandas: ``np.int64``/``np.bool_``): equal values that ``json`` can write.
- ``diff``, ``shift`` and ``reindex``-with-gaps of a boolean curve: pandas gives
  object arrays (``diff`` of booleans is deprecated); here ``diff``/``shift``
  give float64 (1.0/0.0/NaN), ``reindex`` object as pandas. No rule asks.
- Arithmetic between curves that repeat a step raises ``ValueError`` (pandas
  does a many-to-many join); a store's curves never repeat a step.
- Rolling windows: among equal values pandas' skip list and bottleneck's heaps
  may return a different zero (0.0 or -0.0); rolling means may differ by a few
  ulps (pandas keeps a running sum).
- ``skipna=False`` raises ``NotImplementedError``; numpy's ``out=``/``dtype=``
  arguments (``np.sum(curve, out=...)``) raise ``TypeError``.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np


class StepIndex(np.ndarray):
    """A Curve's steps (int64, ascending in every curve a store returns): an ndarray with pandas ``Index``'s
    ``to_numpy`` and ``get_loc``."""

    def __new__(cls, values: Any) -> "StepIndex":
        return np.asarray(values).view(cls)

    def to_numpy(self, dtype: Any = None, copy: bool = False) -> np.ndarray:
        values = self.view(np.ndarray)
        if dtype is not None:
            values = values.astype(dtype, copy=copy)
        return values.copy() if copy and dtype is None else values

    def tolist(self) -> list:  # type: ignore[override]
        return self.view(np.ndarray).tolist()

    @property
    def is_unique(self) -> bool:
        return len(np.unique(self.view(np.ndarray))) == len(self)

    @property
    def is_monotonic_increasing(self) -> bool:
        return _increasing(self.view(np.ndarray))

    @property
    def is_monotonic_decreasing(self) -> bool:
        return _increasing(self.view(np.ndarray)[::-1])

    def get_loc(self, key: Any) -> int:
        found = np.flatnonzero(self.view(np.ndarray) == key)
        if found.size != 1:
            raise KeyError(key)
        return int(found[0])

    def __iter__(self) -> Iterator:
        return iter(self.view(np.ndarray).tolist())

    def __array_wrap__(self, array, context=None, return_scalar=False):  # noqa: ANN001
        # Arithmetic on steps gives plain arrays (and scalars stay scalars).
        result = np.asarray(array).view(np.ndarray)
        return result[()] if return_scalar else result


def _float(values: np.ndarray) -> np.ndarray:
    return values.astype("float64") if values.dtype.kind in "biu" else values


def _skipna(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return values[~np.isnan(values)]
    if values.dtype.kind == "O":
        return np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))])
    return values


class Curve:
    """Values by step, in step order: what ``RunData.series`` returns.

    Attributes:
        index: the steps, a :class:`StepIndex` (optimizer steps, int64).
        name: the series name (``loss``, ``lr``…), or None.
    """

    __slots__ = ("_values", "index", "name")
    __array_priority__ = 1000
    # Above pandas' Series (3000) and DataFrame (4000): `series - curve` defers to the Curve, which aligns the
    # Series by step, rather than pandas reading the Curve as a plain array by position.
    __pandas_priority__ = 5000

    def __init__(self, values: Any = (), index: Any = None, name: str | None = None, dtype: Any = None) -> None:
        """A Curve of ``values`` at ``index`` (default 0, 1, …). The values are copied, as pandas 3 copies
        them, so writing into that array later does not change the curve (the steps are not, nor are an Index's). A Curve given with an ``index`` is reindexed to it
        (NaN at steps it lacks), as ``pd.Series(series, index=...)``.

        Raises:
            ValueError: ``values`` and ``index`` differ in length.
        """
        if isinstance(values, Curve):
            if index is not None and not (len(index) == len(values) and np.array_equal(index, values.index)):
                values = values.reindex(index)
            index = values.index if index is None else index
            name = values.name if name is None else name
            values = values._values
        array = np.array(values, dtype=dtype) if dtype is not None or not isinstance(values, (list, tuple)) or values \
            else np.asarray(values, dtype="float64")
        if array.ndim == 0:
            count = len(index) if index is not None else 1
            array = np.full(count, array[()], dtype=array.dtype)
        self._values = array
        self.index = StepIndex(np.arange(len(array), dtype="int64") if index is None else np.asarray(index))
        if len(self.index) != len(array):
            raise ValueError(f"a Curve needs one step per value: {len(array)} values, {len(self.index)} steps")
        self.name = name

    # ---------------------------------------------------------------- basics
    def _new(self, values: np.ndarray, index: np.ndarray | None = None) -> "Curve":
        return Curve(values, self.index if index is None else index, self.name)

    @property
    def values(self) -> np.ndarray:
        return self._values

    @property
    def dtype(self) -> np.dtype:
        return self._values.dtype

    @property
    def empty(self) -> bool:
        return self._values.size == 0

    @property
    def size(self) -> int:
        return int(self._values.size)

    @property
    def shape(self) -> tuple[int]:
        return self._values.shape

    def __len__(self) -> int:
        return int(self._values.size)

    def __iter__(self) -> Iterator:
        return iter(self._values.tolist())

    def __contains__(self, step: Any) -> bool:
        """Whether ``step`` is one of the curve's steps, as ``key in series`` looks up the index (not the
        values, which ``__iter__`` gives)."""
        if np.ndim(step) != 0:
            raise TypeError(f"unhashable type: '{type(step).__name__}'")
        return bool(np.any(self.index.view(np.ndarray) == step))

    def __bool__(self) -> bool:
        raise ValueError("The truth value of a Curve is ambiguous: use .empty, .any() or .all()")

    def __repr__(self) -> str:
        """The name and size, then step and value a line (the first and last five of a long curve), as pandas
        prints a Series."""
        count = len(self)
        title = f"Curve({self.name!r}, {count} values, dtype {self.dtype})"
        if not count:
            return title
        shown = list(range(count)) if count <= 10 else [*range(5), None, *range(count - 5, count)]
        steps, values = self.index.view(np.ndarray), self._values
        rows = [("…", "…") if at is None else (str(steps[at].item()), str(values[at].item() if hasattr(values[at], "item")
                                                                         else values[at])) for at in shown]
        width = max(len(step) for step, _ in rows)
        lines = [f"{step:>{width}}  {value}" for step, value in rows]
        return "\n".join([title, *lines, f"steps {steps[0].item()}…{steps[-1].item()}"])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self._values if dtype is None else self._values.astype(dtype)

    def to_numpy(self, dtype: Any = None, copy: bool = False, na_value: Any = None) -> np.ndarray:
        values = self._values if dtype is None else self._values.astype(dtype, copy=False)
        if na_value is not None:
            values = np.where(np.isnan(values), na_value, values)
        return values.copy() if copy else values

    def tolist(self) -> list:
        return self._values.tolist()

    def get(self, step: Any, default: Any = None) -> Any:
        """The value at ``step`` (a label, as ``pd.Series.get``), else ``default``."""
        try:
            return self[step]
        except (KeyError, IndexError):
            return default

    def items(self) -> Iterator[tuple[Any, Any]]:
        return zip(self.index.tolist(), self._values.tolist())

    def copy(self) -> "Curve":
        return Curve(self._values.copy(), self.index.to_numpy().copy(), self.name)

    def astype(self, dtype: Any) -> "Curve":
        """The values as ``dtype``.

        Raises:
            ValueError: NaN or ±inf cast to an integer dtype (pandas' ``IntCastingNaNError``; numpy would
                write an arbitrary integer in their place).
        """
        if (np.dtype(dtype).kind in "iu" and self._values.dtype.kind in "fc"
                and not np.all(np.isfinite(self._values))):
            raise ValueError("Cannot convert non-finite values (NA or inf) to integer: dropna() or fillna() first")
        return self._new(self._values.astype(dtype))

    def to_pandas(self) -> Any:
        """A ``pandas.Series`` of the same values indexed by step, named as the curve (a copy).

        ``pd.Series(curve)`` reads a Curve as a plain array and numbers it 0, 1, 2…: the steps are lost.
        """
        import pandas as pd

        return pd.Series(self._values.copy(), index=self.index.to_numpy().copy(), name=self.name)

    def rename(self, name: str | None) -> "Curve":
        return Curve(self._values, self.index, name)

    # ---------------------------------------------------------------- selection
    def _mask(self, key: Any) -> np.ndarray | None:
        key = _as_curve(key)
        if isinstance(key, Curve):
            if key.dtype.kind != "b":
                return None
            if len(key) == len(self) and np.array_equal(key.index, self.index):
                return key._values
            aligned = key.reindex(self.index)._values  # pandas aligns a boolean Series by label
            if aligned.dtype.kind != "b":
                raise IndexError("Unalignable boolean Curve as a mask: it lacks some of the curve's steps")
            return aligned
        if isinstance(key, np.ndarray) and key.dtype.kind == "b":
            if key.shape != self._values.shape:
                raise IndexError(f"boolean mask of {key.shape[0]} values for a Curve of {len(self)}")
            return key
        if isinstance(key, list) and key and all(isinstance(v, (bool, np.bool_)) for v in key):
            return self._mask(np.asarray(key, dtype=bool))
        return None

    def _positions(self, key: Any) -> Any:
        mask = self._mask(key)
        if mask is not None:
            return mask
        if isinstance(key, Curve):
            key = key._values
        return key

    def _take(self, positions: Any) -> Any:
        if isinstance(positions, (int, np.integer)):
            return self._values[positions][()]
        return Curve(self._values[positions], self.index.to_numpy()[positions], self.name)

    def _label_positions(self, key: Any) -> Any:
        steps = self.index.to_numpy()
        if np.ndim(key) == 0:
            found = np.flatnonzero(steps == key)
            if found.size == 0:
                raise KeyError(key)
            return int(found[0]) if found.size == 1 else found
        keys = np.asarray(key._values if isinstance(key, Curve) else key)
        if keys.size == 0:
            return np.empty(0, dtype="int64")
        if len(np.unique(steps)) != len(steps):  # repeated steps: every match of each key, in key order (pandas)
            found = [np.flatnonzero(steps == one) for one in keys.tolist()]
            missing = [one for one, where in zip(keys.tolist(), found) if not where.size]
            if missing:
                raise KeyError(f"steps not in the curve: {missing[:5]}")
            return np.concatenate(found)
        where = _find(steps, keys)
        if np.any(where < 0):
            raise KeyError(f"steps not in the curve: {keys[where < 0][:5].tolist()}")
        return where

    def __getitem__(self, key: Any) -> Any:
        mask = self._mask(key)
        if mask is not None:
            return self._take(mask)
        if isinstance(key, slice):
            return self._take(key)
        return self._take(self._label_positions(key))

    @property
    def iloc(self) -> "_ILoc":
        return _ILoc(self)

    @property
    def loc(self) -> "_Loc":
        return _Loc(self)

    def head(self, n: int = 5) -> "Curve":
        return self._take(slice(None, n))

    def tail(self, n: int = 5) -> "Curve":
        return self._take(slice(-n, None) if n else slice(0, 0))

    def sort_index(self) -> "Curve":
        """The curve in ascending step order (pandas' unstable quicksort order among repeated steps)."""
        steps = self.index.to_numpy()
        if _increasing(steps):
            return self.copy()
        return self._take(_nargsort(steps, ascending=True))

    def sort_values(self, ascending: bool = True) -> "Curve":
        """The curve ordered by value, NaN last in both directions; ties in pandas' (unstable quicksort) order."""
        return self._take(_nargsort(self._values, ascending))

    def reindex(self, steps: Any, method: str | None = None) -> "Curve":
        """Values at ``steps``: NaN where the curve has none (``method="ffill"``: the value of the last step at
        or before; ``pandas.Series.reindex``).

        Integers become float64 and booleans object where a step is missing, as in pandas.

        Raises:
            ValueError: the curve repeats a step (and ``steps`` is not its own index), its steps are not
                monotonic with ``ffill``, or ``method`` is neither None nor ``"ffill"``.
        """
        if method not in (None, "ffill", "pad"):
            raise ValueError(f"reindex method {method!r} is not supported (None or 'ffill')")
        steps = np.asarray(steps.to_numpy() if hasattr(steps, "to_numpy") else steps)
        own = self.index.to_numpy()
        if len(own) == len(steps) and np.array_equal(own, steps):
            return Curve(self._values.copy(), steps.copy(), self.name)
        if len(np.unique(own)) != len(own):
            raise ValueError("cannot reindex on an axis with duplicate labels")
        where = _find(own, steps)
        if method is not None:
            increasing, decreasing = _increasing(own), _increasing(own[::-1])
            if not (increasing or decreasing):
                raise ValueError("index must be monotonic increasing or decreasing")
            inexact = where < 0
            if increasing:
                where[inexact] = np.searchsorted(own, steps[inexact], side="left") - 1
            else:
                where[inexact] = len(own) - np.searchsorted(own[::-1], steps[inexact], side="right") - 1
        found = where >= 0
        values = self._values
        if found.all():
            return Curve(values[where], steps, self.name)
        kind = values.dtype.kind
        result = np.full(len(steps), np.nan, dtype=values.dtype if kind == "f" else object if kind in "bO"
                         else "float64")
        result[found] = values[where[found]]
        return Curve(result, steps, self.name)

    # ---------------------------------------------------------------- missing values
    def isna(self) -> "Curve":
        return self._new(_missing(self._values))

    isnull = isna

    def notna(self) -> "Curve":
        return self._new(~_missing(self._values))

    notnull = notna

    def dropna(self) -> "Curve":
        return self._take(~_missing(self._values))

    def fillna(self, value: Any) -> "Curve":
        """NaN replaced by ``value`` (a curve's value at the same step: pandas aligns it)."""
        value = _as_curve(value)
        if isinstance(value, Curve):
            value = self._by_step(value, missing=np.nan)
        missing = _missing(self._values)
        return self._new(np.where(missing, value, self._values)) if missing.any() else self.copy()

    def where(self, cond: Any, other: Any = np.nan) -> "Curve":
        """Own values where ``cond``, ``other`` elsewhere (``pandas.Series.where``): integers stay integers
        when ``other`` is never used or is a whole number, else become float64. A ``cond`` or ``other`` curve
        with other steps is matched by step (a step ``cond`` lacks is False, one ``other`` lacks NaN)."""
        cond, other = _as_curve(cond), _as_curve(other)
        cond = self._by_step(cond, missing=False) if isinstance(cond, Curve) else np.asarray(cond, dtype=bool)
        other = self._by_step(other, missing=np.nan) if isinstance(other, Curve) else other
        values = self._values
        if np.all(cond):
            return self.copy()
        if values.dtype.kind in "iu" and _whole_numbers(other):
            return self._new(np.where(cond, values, np.asarray(other).astype(values.dtype)))
        return self._new(np.where(cond, values, other))

    def mask(self, cond: Any, other: Any = np.nan) -> "Curve":
        """``other`` where ``cond``, own values elsewhere: ``where(~cond)``, so a step a ``cond`` curve lacks
        takes ``other`` too (pandas)."""
        cond = _as_curve(cond)
        return self.where(~cond if isinstance(cond, Curve) else ~np.asarray(cond, dtype=bool), other)

    def _by_step(self, other: "Curve", missing: Any) -> np.ndarray:
        """``other``'s values at this curve's steps, ``missing`` where it has none (pandas' alignment)."""
        if len(other) == len(self) and np.array_equal(other.index, self.index):
            return other._values
        aligned = other.reindex(self.index)._values
        if missing is False:
            return np.where(_missing(aligned), False, aligned).astype(bool)
        return aligned

    def clip(self, lower: Any = None, upper: Any = None, **numpy: Any) -> "Curve":
        """Values bounded by ``lower`` and ``upper`` (None or NaN: no bound); NaN stays NaN (``pandas.Series.clip``:
        a value equal to a bound, -0.0 against 0 included, is kept as it is). ``np.clip(curve, ...)`` comes here."""
        _numpy_reduction(numpy, True)
        result, missing = self, _missing(self._values)
        if lower is not None and not is_missing(lower):
            result = result.where(missing | (result._values >= lower), lower)
        if upper is not None and not is_missing(upper):
            result = result.where(missing | (result._values <= upper), upper)
        return result.copy() if result is self else result

    def isin(self, values: Iterable) -> "Curve":
        """Whether each value is one of ``values`` (NaN matches NaN, as in pandas)."""
        wanted = list(values)
        found = np.isin(self._values, np.asarray(wanted)) if wanted else np.zeros(len(self), dtype=bool)
        if any(is_missing(v) for v in wanted):
            found |= _missing(self._values)
        return self._new(found)

    # ---------------------------------------------------------------- reductions (NaN skipped, as pandas does)
    def _reduce(self, function: Callable[[np.ndarray], Any], empty: Any = np.nan) -> Any:
        values = _skipna(self._values)
        if values.size == 0:
            return empty
        result = function(values)
        return result.item() if isinstance(result, np.generic) and values.dtype.kind != "f" else result

    def median(self, axis: Any = None, skipna: bool = True, **numpy: Any) -> float:
        _numpy_reduction(numpy, skipna)
        return self._reduce(lambda v: np.float64(np.median(v)))

    def mean(self, axis: Any = None, skipna: bool = True, **numpy: Any) -> float:
        """The mean of the non-NaN values, NaN if none; summed as pandas does (NaN as 0, numpy's pairwise sum)."""
        _numpy_reduction(numpy, skipna)
        missing = _missing(self._values)
        count = np.float64(len(self) - missing.sum())
        if count == 0:
            return np.nan
        return np.where(missing, 0, self._values).sum(dtype="float64") / count

    def max(self, axis: Any = None, skipna: bool = True, **numpy: Any) -> Any:
        _numpy_reduction(numpy, skipna)
        return self._reduce(np.max)

    def min(self, axis: Any = None, skipna: bool = True, **numpy: Any) -> Any:
        _numpy_reduction(numpy, skipna)
        return self._reduce(np.min)

    def sum(self, axis: Any = None, skipna: bool = True, **numpy: Any) -> Any:
        """The sum of the non-NaN values (0 if none); NaN as 0 in numpy's pairwise sum, as pandas does."""
        _numpy_reduction(numpy, skipna)
        if self._values.dtype.kind == "f":
            return np.where(np.isnan(self._values), 0.0, self._values).sum()
        return self._reduce(np.sum, empty=0)

    def std(self, axis: Any = None, skipna: bool = True, ddof: int = 1, **numpy: Any) -> float:
        """The sample standard deviation of the non-NaN values (NaN below ``ddof + 1`` values), by pandas'
        two-pass sum without bottleneck (the pandas the diagnosis was written against). ``np.std(curve)``
        comes here with ddof=0, as it does to pandas."""
        return np.sqrt(self.var(axis, skipna, ddof, **numpy))

    def var(self, axis: Any = None, skipna: bool = True, ddof: int = 1, **numpy: Any) -> float:
        """The variance of the non-NaN values, as :meth:`std`."""
        _numpy_reduction(numpy, skipna)
        values = _float(self._values)
        missing = np.isnan(values)
        count = np.float64(len(values) - missing.sum())
        if count <= ddof:
            return np.nan
        filled = np.where(missing, 0.0, values)
        with np.errstate(invalid="ignore"):
            squares = (filled.sum(dtype="float64") / count - filled) ** 2
        squares[missing] = 0.0
        return squares.sum(dtype="float64") / (count - ddof)

    def quantile(self, q: float = 0.5) -> float:
        return self._reduce(lambda v: np.float64(np.quantile(v, q)))

    def count(self) -> int:
        return int(_skipna(self._values).size)

    def any(self, axis: Any = None, skipna: bool = True, **numpy: Any) -> bool:
        _numpy_reduction(numpy, skipna)
        return bool(np.any(_skipna(self._values)))

    def all(self, axis: Any = None, skipna: bool = True, **numpy: Any) -> bool:
        _numpy_reduction(numpy, skipna)
        return bool(np.all(_skipna(self._values)))

    def idxmax(self) -> Any:
        """The step of the largest non-NaN value (the first if tied).

        Raises:
            ValueError: the curve is empty or all NaN.
        """
        return self.index.to_numpy()[self._arg(np.argmax)].item()

    def idxmin(self) -> Any:
        """The step of the smallest non-NaN value (the first if tied). Raises ValueError as :meth:`idxmax`."""
        return self.index.to_numpy()[self._arg(np.argmin)].item()

    def argmax(self, axis: Any = None, skipna: bool = True, **numpy: Any) -> int:
        """The position of the largest non-NaN value, as ``pandas.Series.argmax`` (so ``np.argmax(curve)``
        skips NaN, where ``np.argmax(array)`` stops at the first NaN). Raises ValueError as :meth:`idxmax`."""
        _numpy_reduction(numpy, skipna)
        return self._arg(np.argmax)

    def argmin(self, axis: Any = None, skipna: bool = True, **numpy: Any) -> int:
        """The position of the smallest non-NaN value (``np.argmin(curve)`` too).

        Raises:
            ValueError: the curve is empty or all NaN.
        """
        _numpy_reduction(numpy, skipna)
        return self._arg(np.argmin)

    def _arg(self, function: Callable[[np.ndarray], Any]) -> int:
        keep = ~_missing(self._values)
        if not keep.any():
            raise ValueError("attempt to get the extreme of an empty or all-NaN Curve")
        return int(np.flatnonzero(keep)[function(self._values[keep])])

    def unique(self) -> np.ndarray:
        """The distinct values in order of first appearance."""
        _, first = np.unique(self._values, return_index=True)
        return self._values[np.sort(first)]

    def nunique(self) -> int:
        return int(_skipna(self.unique()).size)

    # ---------------------------------------------------------------- element-wise
    def abs(self) -> "Curve":
        return self._new(np.abs(self._values))

    def round(self, decimals: int = 0, **numpy: Any) -> "Curve":
        """Values rounded to ``decimals`` (numpy's half-to-even, as pandas); ``np.round(curve, 1)`` and
        ``round(curve, 1)`` come here."""
        _numpy_reduction(numpy, True)
        return self._new(np.round(self._values, decimals))

    def __round__(self, ndigits: int | None = None) -> "Curve":
        return self.round(0 if ndigits is None else ndigits)

    def __abs__(self) -> "Curve":
        return self.abs()

    def __neg__(self) -> "Curve":
        return self._new(-self._values)

    def __invert__(self) -> "Curve":
        return self._new(~self._values)

    def diff(self, periods: int = 1) -> "Curve":
        values = _float(self._values)
        result = np.full(len(values), np.nan)
        if periods >= 0 and len(values) > periods:
            result[periods:] = values[periods:] - values[:len(values) - periods]
        elif periods < 0 and len(values) > -periods:
            result[:periods] = values[:periods] - values[-periods:]
        return self._new(result)

    def shift(self, periods: int = 1) -> "Curve":
        if periods == 0:
            return self.copy()
        values = _float(self._values)
        result = np.full(len(values), np.nan)
        if periods >= 0:
            if len(values) > periods:
                result[periods:] = values[:len(values) - periods]
        elif len(values) > -periods:
            result[:periods] = values[-periods:]
        return self._new(result)

    def _accumulate(self, function: Callable[[np.ndarray], np.ndarray], fill: float) -> "Curve":
        if self._values.dtype.kind != "f":  # nothing missing: numpy's dtype, as pandas' (int stays int)
            return self._new(function(self._values))
        values = self._values
        missing = np.isnan(values)
        result = function(np.where(missing, fill, values))
        result[missing] = np.nan
        return self._new(result)

    def cumsum(self, axis: Any = None, skipna: bool = True, **numpy: Any) -> "Curve":
        """Running sum skipping NaN (NaN stays NaN at its step), as pandas; ``np.cumsum(curve)`` comes here."""
        _numpy_reduction(numpy, skipna)
        return self._accumulate(np.cumsum, 0.0)

    def cummax(self, axis: Any = None, skipna: bool = True) -> "Curve":
        _numpy_reduction({}, skipna)
        return self._accumulate(np.maximum.accumulate, -np.inf)

    def cummin(self, axis: Any = None, skipna: bool = True) -> "Curve":
        _numpy_reduction({}, skipna)
        return self._accumulate(np.minimum.accumulate, np.inf)

    def rolling(self, window: int, min_periods: int | None = None, center: bool = False) -> "Rolling":
        return Rolling(self, window, window if min_periods is None else min_periods, center)

    # ---------------------------------------------------------------- operators
    def _aligned(self, other: Any, how: str) -> tuple[np.ndarray, Any, np.ndarray]:
        """(own values, other's values, steps): two curves with different steps are matched by step on the
        sorted union of their steps, NaN where one has none (False for ``&``, ``|``, ``^``); a comparison of
        such curves raises, as in pandas."""
        if isinstance(other, Curve):
            if len(other) == len(self) and np.array_equal(other.index, self.index):
                return self._values, other._values, self.index
            if how == "compare":
                raise ValueError("Can only compare identically-labeled Curves (the same steps in the same order)")
            steps = np.union1d(self.index.to_numpy(), other.index.to_numpy())
            own, theirs = self.reindex(steps)._values, other.reindex(steps)._values
            if how == "logical":  # a missing value reads as False (and see _binary)
                own = np.where(_missing(own), False, own).astype(bool)
                theirs = np.where(_missing(theirs), False, theirs).astype(bool)
            return own, theirs, steps
        if isinstance(other, np.ndarray) and other.ndim and other.shape != self._values.shape and not (
                other.size == 1 and how == "arith"):  # pandas broadcasts one value in arithmetic only
            raise ValueError(f"operands of {other.shape[0]} and {len(self)} values")
        return self._values, other, self.index

    def _binary(self, other: Any, function: Callable, how: str = "arith", reflected: bool = False) -> "Curve":
        other = _as_curve(other)  # a pandas Series aligns by its index, as it would with another Series
        own, theirs, steps = self._aligned(other, how)
        left, right = (theirs, own) if reflected else (own, theirs)
        with np.errstate(all="ignore"):
            result = function(left, right)
        if function in (operator.floordiv, operator.mod):
            result = _integer_division_by_zero(function, left, right, result)
        if how == "logical" and isinstance(other, Curve) and steps is not self.index:
            # pandas: a step the left curve lacks is False whatever the right holds, so `a | b` and `b | a`
            # differ there (Series._logical_method aligns as objects, then fills NaN results with False).
            result &= np.isin(steps, self.index.to_numpy())
        return Curve(result, steps, _shared_name(self, other))

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        """``np.log(curve)`` and the like: a Curve on the same steps. As pandas does, the ufuncs of an operator
        (``np.add``, ``np.greater``, ``np.floor_divide``…) are that operator, so ``np.greater`` of two curves
        with different steps raises as ``>`` does; other ufuncs of two curves match them by step."""
        if method != "__call__" or kwargs.get("out") is not None:
            return NotImplemented
        operator_name = _UFUNC_OPERATORS.get(ufunc.__name__)
        if operator_name and not kwargs and len(inputs) == 2:
            if inputs[0] is self:
                return getattr(self, f"__{operator_name}__")(inputs[1])
            reflected = _REFLECTED_COMPARISONS.get(operator_name, f"r{operator_name}")
            return getattr(self, f"__{reflected}__")(inputs[0])
        curves = [x for x in inputs if isinstance(x, Curve)]
        if len(curves) == 2 and not (len(curves[0]) == len(curves[1])
                                     and np.array_equal(curves[0].index, curves[1].index)):
            first, second = curves
            steps = np.union1d(first.index.to_numpy(), second.index.to_numpy())
            inputs = tuple(x.reindex(steps)._values if isinstance(x, Curve) else x for x in inputs)
        else:
            steps = curves[0].index
            inputs = tuple(x._values if isinstance(x, Curve) else x for x in inputs)
        result = getattr(ufunc, method)(*inputs, **kwargs)
        name = _shared_name(*curves)
        if isinstance(result, tuple):
            return tuple(Curve(r, steps, name) for r in result)
        return Curve(result, steps, name)


# pandas' arraylike.UFUNC_ALIASES restricted to the operators a Curve has.
_UFUNC_OPERATORS = {"add": "add", "subtract": "sub", "multiply": "mul", "true_divide": "truediv", "divide": "truediv",
                    "floor_divide": "floordiv", "remainder": "mod", "power": "pow", "equal": "eq", "not_equal": "ne",
                    "less": "lt", "less_equal": "le", "greater": "gt", "greater_equal": "ge", "bitwise_and": "and",
                    "bitwise_or": "or", "bitwise_xor": "xor"}
_REFLECTED_COMPARISONS = {"eq": "eq", "ne": "ne", "lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}


def _is_pandas_series(value: Any) -> bool:
    """Whether ``value`` is a ``pandas.Series`` (without importing pandas)."""
    kind = type(value)
    return kind.__name__ == "Series" and kind.__module__.startswith("pandas")


def _as_curve(value: Any) -> Any:
    """A pandas Series as a Curve on its index (so it aligns by step, as pandas aligns two Series); anything
    else as it is."""
    if _is_pandas_series(value):
        return Curve(value.to_numpy(), value.index.to_numpy(), value.name)
    return value


def _shared_name(first: Curve, *others: Any) -> str | None:
    """The result's name: the curves' common name, None when they differ (pandas)."""
    names = {x.name for x in (first, *others) if isinstance(x, Curve)}
    return first.name if len(names) == 1 else None


def _integer_division_by_zero(function: Callable, left: Any, right: Any, result: Any) -> Any:
    """pandas' answer where integers are floor-divided (±inf, NaN for 0 // 0) or taken modulo (NaN) by zero;
    numpy's is 0 with a warning. Floats need nothing: numpy already gives pandas' answer."""
    left, right = np.asarray(left), np.asarray(right)
    if left.dtype.kind not in "iu" or right.dtype.kind not in "iu" or not np.any(right == 0):
        return result
    left, right = np.broadcast_arrays(left, right)
    zero = right == 0
    result = np.asarray(result, dtype="float64").copy()
    if function is operator.mod:
        result[zero] = np.nan
    else:
        result[zero] = np.where(left[zero] > 0, np.inf, np.where(left[zero] < 0, -np.inf, np.nan))
    return result


def _missing(values: np.ndarray) -> np.ndarray:
    """NaN (float) or None/NaN (object) positions; none in integer and boolean arrays."""
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind == "O":
        return np.fromiter((is_missing(v) for v in values.tolist()), bool, len(values))
    return np.zeros(len(values), dtype=bool)


def _increasing(steps: np.ndarray) -> bool:
    return bool(len(steps) < 2 or np.all(steps[1:] >= steps[:-1]))


def _find(steps: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Position of each key in ``steps`` (unique, any order), -1 where absent; shape of ``keys``."""
    keys = np.asarray(keys)
    if not len(steps):
        return np.full(keys.shape, -1, dtype="int64")
    order = np.argsort(steps, kind="stable")
    where = np.minimum(np.searchsorted(steps, keys, sorter=order), len(steps) - 1)
    positions = order[where]
    return np.where(steps[positions] == keys, positions, -1).astype("int64")


def _nargsort(values: np.ndarray, ascending: bool) -> np.ndarray:
    """pandas' ``nargsort`` with its default kind: numpy's (unstable) quicksort of the non-missing values,
    reversed around the sort when descending, missing values last in their order."""
    missing = _missing(values)
    present, positions = values[~missing], np.flatnonzero(~missing)
    if not ascending:
        present, positions = present[::-1], positions[::-1]
    order = positions[present.argsort(kind="quicksort")]
    if not ascending:
        order = order[::-1]
    return np.concatenate([order, np.flatnonzero(missing)]).astype("int64")


def _whole_numbers(other: Any) -> bool:
    """Whether an integer array can take ``other`` without becoming float (pandas' ``np_can_hold_element``)."""
    array = np.asarray(other)
    if array.dtype.kind in "iu":
        return True
    if array.dtype.kind != "f":
        return False
    return bool(np.all(np.isfinite(array)) and np.all(array == np.round(array)))


def _numpy_reduction(numpy: dict[str, Any], skipna: bool) -> None:
    """``np.max(curve)`` and the like call ``curve.max(axis=None, out=None)``: accept numpy's defaults only."""
    if not skipna:
        raise NotImplementedError("a Curve's reductions always skip NaN (skipna=True)")
    unsupported = {k: v for k, v in numpy.items() if v is not None and not (k == "keepdims" and v is False)}
    if unsupported:
        raise TypeError(f"unsupported reduction arguments: {sorted(unsupported)}")


def _operator(function: Callable, how: str = "arith", reflected: bool = False) -> Callable:
    def method(self: Curve, other: Any) -> Curve:
        return self._binary(other, function, how, reflected)
    return method


for _name, _function in (("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                         ("truediv", operator.truediv), ("floordiv", operator.floordiv), ("pow", operator.pow),
                         ("mod", operator.mod)):
    setattr(Curve, f"__{_name}__", _operator(_function))
    setattr(Curve, f"__r{_name}__", _operator(_function, reflected=True))
for _name, _function in (("and", operator.and_), ("or", operator.or_), ("xor", operator.xor)):
    setattr(Curve, f"__{_name}__", _operator(_function, "logical"))
    setattr(Curve, f"__r{_name}__", _operator(_function, "logical", reflected=True))
for _name, _function in (("lt", operator.lt), ("le", operator.le), ("gt", operator.gt), ("ge", operator.ge),
                         ("eq", operator.eq), ("ne", operator.ne)):
    setattr(Curve, f"__{_name}__", _operator(_function, "compare"))
Curve.__hash__ = None  # type: ignore[assignment]  # == is element-wise


class _ILoc:
    __slots__ = ("_curve",)

    def __init__(self, curve: Curve) -> None:
        self._curve = curve

    def __getitem__(self, key: Any) -> Any:
        curve = self._curve
        if isinstance(key, (int, np.integer)):
            if not -len(curve) <= key < len(curve):
                raise IndexError(f"position {key} out of a Curve of {len(curve)} values")
            return curve._take(int(key))
        return curve._take(curve._positions(key))


class _Loc:
    __slots__ = ("_curve",)

    def __init__(self, curve: Curve) -> None:
        self._curve = curve

    def __getitem__(self, key: Any) -> Any:
        curve = self._curve
        if isinstance(key, slice):
            steps = curve.index.to_numpy()
            begin = 0 if key.start is None else _slice_bound(steps, key.start, "left")
            end = len(steps) if key.stop is None else _slice_bound(steps, key.stop, "right")
            return curve._take(slice(begin, max(begin, end), key.step))
        mask = curve._mask(key)
        if mask is not None:
            return curve._take(mask)
        return curve._take(curve._label_positions(key))


def _slice_bound(steps: np.ndarray, label: Any, side: str) -> int:
    """Where a ``loc`` slice starts (side "left") or ends (side "right") in ``steps``, as pandas'
    ``Index.get_slice_bound``: monotonic steps need not hold ``label``; other steps must hold it once.

    Raises:
        KeyError: the steps are not monotonic and ``label`` is absent or repeated.
    """
    if _increasing(steps):
        return int(np.searchsorted(steps, label, side=side))
    if _increasing(steps[::-1]):
        return len(steps) - int(np.searchsorted(steps[::-1], label, side="right" if side == "left" else "left"))
    found = np.flatnonzero(steps == label)
    if found.size != 1:
        raise KeyError(f"Cannot get {side} slice bound for non-monotonic steps with a missing or repeated step "
                       f"{label!r}")
    return int(found[0]) + (side == "right")


class Rolling:
    """``curve.rolling(window, min_periods, center)``: a moving median, mean, max or min (NaN and ±inf ignored).

    Raises:
        ValueError: ``window`` is not an integer >= 0, or ``min_periods`` is negative or above ``window`` (pandas).
    """

    def __init__(self, curve: Curve, window: int, min_periods: int, center: bool) -> None:
        if isinstance(window, (bool, np.bool_)) or not isinstance(window, (int, np.integer)) or window < 0:
            raise ValueError("window must be an integer 0 or greater")
        if min_periods < 0:
            raise ValueError("min_periods must be >= 0")
        if min_periods > window:
            raise ValueError(f"min_periods {min_periods} must be <= window {window}")
        self.curve, self.window, self.min_periods, self.center = curve, int(window), max(1, int(min_periods)), center

    def _apply(self, moving: Callable[[np.ndarray, int, int], np.ndarray]) -> Curve:
        values = _float(self.curve._values)
        # pandas' windows read ±inf as missing (BaseWindow._prep_values): a window of [inf, 1] has the median 1.
        values = np.where(np.isinf(values), np.nan, values)
        window = self.window
        if window == 0:  # no value in any window: NaN throughout, as pandas
            return self.curve._new(np.full(len(values), np.nan))
        if self.center:
            # pandas centres a window of w on position i over [i + o - w + 1, i + o] with o = (w - 1) // 2:
            # the trailing window ending o later. Pad the end, compute, shift back.
            offset = (window - 1) // 2
            padded = np.concatenate([values, np.full(offset, np.nan)])
            result = moving(padded, window, self.min_periods)[offset:] if len(values) else values.copy()
        else:
            result = moving(values, window, self.min_periods) if len(values) else values.copy()
        return self.curve._new(result)

    def median(self) -> Curve:
        return self._apply(_moving_median)

    def mean(self) -> Curve:
        return self._apply(lambda v, w, m: _window(v, w, m, np.nanmean, "move_mean"))

    def max(self) -> Curve:
        return self._apply(lambda v, w, m: _window(v, w, m, np.nanmax, "move_max"))

    def min(self) -> Curve:
        return self._apply(lambda v, w, m: _window(v, w, m, np.nanmin, "move_min"))


# Above this many window cells (curve length × window) a moving mean, max or min runs in bottleneck's O(n)
# memory: the sliding-window view that numpy reduces is copied (n × window floats: 3 GB for a 200k-step curve
# and a window of 2,000). Below it the exact window-by-window answer (no running sum) is kept.
_WINDOW_CELLS = 1 << 20


def _window(values: np.ndarray, window: int, min_periods: int, reduce: Callable, moving: str) -> np.ndarray:
    if len(values) * window <= _WINDOW_CELLS:
        return _short_window(values, window, min_periods, reduce)
    return _bottleneck_window(values, window, min_periods, moving)


def _bottleneck_window(values: np.ndarray, window: int, min_periods: int, moving: str) -> np.ndarray:
    """bottleneck's O(n) trailing ``moving`` (NaN ignored, NaN below ``min_periods`` values). A window longer
    than the curve holds what one of the curve's length holds (bottleneck refuses it)."""
    import bottleneck

    if window > len(values):
        if min_periods > len(values):
            return np.full(len(values), np.nan)
        window = len(values)
    return getattr(bottleneck, moving)(values, window, min_count=min(min_periods, window))


def _moving_median(values: np.ndarray, window: int, min_periods: int) -> np.ndarray:
    """A trailing moving median ignoring NaN, NaN below ``min_periods`` values: bottleneck's skip list, O(n log w)."""
    if window > len(values) and len(values) * window <= _WINDOW_CELLS:
        return _short_window(values, window, min_periods, np.nanmedian)
    return _bottleneck_window(values, window, min_periods, "move_median")


def _short_window(values: np.ndarray, window: int, min_periods: int, reduce: Callable) -> np.ndarray:
    """A trailing moving ``reduce`` by sliding windows: O(n × window); NaN below ``min_periods`` non-NaN values."""
    padded = np.concatenate([np.full(window - 1, np.nan), values])
    windows = np.lib.stride_tricks.sliding_window_view(padded, window)
    counts = (~np.isnan(windows)).sum(axis=1)
    # Only windows with enough values are reduced: an all-NaN one would warn, and silencing that with
    # warnings.catch_warnings changes the filters of every thread (the probe's own warnings were lost).
    kept = counts >= max(min_periods, 1)
    found = np.full(len(windows), np.nan)
    if kept.any():
        found[kept] = reduce(windows[kept], axis=1)
    return found


class Table:
    """Rows as named numpy columns: a run's scalars, confusion counts or events (what ``RunData`` holds).

    ``table[name]`` is a column as an ndarray; ``table[mask]`` (a boolean array) the matching rows;
    ``table[[names]]`` those columns. String columns are object arrays with None where missing; numeric
    ones float64 or int64 with NaN where missing.
    """

    __slots__ = ("_columns", "_length")

    def __init__(self, columns: dict[str, Any] | None = None, *, names: Sequence[str] = ()) -> None:
        data = {str(name): np.asarray(values) for name, values in (columns or {}).items()}
        given = {len(v) for v in data.values()}
        rows = next(iter(given)) if len(given) == 1 else 0
        for name in names:  # a column the source lacks: missing (None) in every row
            data.setdefault(name, np.full(rows, None, dtype=object))
        lengths = {len(v) for v in data.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self._columns = data
        self._length = lengths.pop() if lengths else 0

    @classmethod
    def of(cls, source: Any, names: Sequence[str] = ()) -> "Table":
        """A Table from a Table, a mapping of columns, a pyarrow Table or a pandas DataFrame (each column kept)."""
        if source is None:
            return cls(names=names)
        if isinstance(source, Table):
            return source if all(name in source._columns for name in names) else cls(dict(source._columns),
                                                                                      names=names)
        if isinstance(source, dict):
            return cls({name: _none_for_missing(np.asarray(values)) for name, values in source.items()},
                       names=names)
        if hasattr(source, "column_names") and hasattr(source, "to_pydict"):  # pyarrow.Table
            return cls({name: _arrow_column(source.column(name)) for name in source.column_names}, names=names)
        if hasattr(source, "columns") and hasattr(source, "iloc"):  # pandas.DataFrame
            return cls({str(name): _none_for_missing(source[name].to_numpy()) for name in source.columns},
                       names=names)
        raise TypeError(f"cannot make a Table of {type(source).__name__}")

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    @property
    def empty(self) -> bool:
        return self._length == 0

    def __len__(self) -> int:
        return self._length

    def __contains__(self, name: str) -> bool:
        return name in self._columns

    def column(self, name: str) -> np.ndarray:
        return self._columns[name]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self._columns[key]
        if isinstance(key, list) and key and all(isinstance(v, (bool, np.bool_)) for v in key):
            key = np.asarray(key, dtype=bool)  # a row mask, as DataFrame[[True, False, ...]]
        elif isinstance(key, list):
            return Table({name: self._columns[name] for name in key})
        if isinstance(key, (np.ndarray, slice)):
            return Table({name: values[key] for name, values in self._columns.items()})
        raise TypeError(f"a Table is indexed by a column name, a list of names or a row mask, not {key!r}")

    def rows(self, mask: Any) -> "Table":
        return self[np.asarray(mask) if not isinstance(mask, slice) else mask]

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame(dict(self._columns))

    def __repr__(self) -> str:
        return f"Table({self._length} rows: {', '.join(self._columns)})"


def to_float(values: Any) -> np.ndarray:
    """Values as float64, NaN for None, non-numbers and unparseable strings (pandas' ``to_numeric(errors="coerce")``)."""
    array = np.asarray(values)
    if array.dtype.kind in "biuf":
        return array.astype("float64")
    result = np.full(array.shape, np.nan)
    for position, value in enumerate(array.tolist()):
        if value is None or isinstance(value, bool):
            result[position] = float(value) if isinstance(value, bool) else np.nan
            continue
        if isinstance(value, str) and (not value.isascii() or "_" in value):
            continue  # float() reads "1_000" and non-ASCII digits ("١٢"); pandas' parser does not
        try:
            result[position] = float(value)
        except (TypeError, ValueError):
            pass
    return result


def is_missing(value: Any) -> bool:
    """None, a float NaN, a NaT or pandas' NA (``pd.isna`` of one value)."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    if isinstance(value, (np.datetime64, np.timedelta64)):
        return bool(np.isnat(value))
    return type(value).__name__ in ("NAType", "NaTType") and type(value).__module__.startswith("pandas")


def _none_for_missing(values: np.ndarray) -> np.ndarray:
    """An object column with None where it held pandas' NA or NaT (a ``string`` column's missing value, whose
    comparisons have no truth value, so ``column == "group0"`` would raise); other columns as they are."""
    if values.dtype.kind != "O" or not len(values):
        return values
    try:
        np.asarray(values == values, dtype=bool)  # one C loop; raises on pd.NA (no warnings.catch_warnings: it
        # changes the filters of every thread, and the probe's own warnings were lost during live checks)
        return values
    except (TypeError, ValueError):
        pass
    values = values.copy()
    values[np.fromiter((is_missing(v) and v is not None and not isinstance(v, float) for v in values.tolist()),
                       bool, len(values))] = None
    return values


def _arrow_column(column: Any) -> np.ndarray:
    import pyarrow as pa

    kind = column.type
    if pa.types.is_integer(kind):
        return (column.to_numpy() if column.null_count == 0
                else np.asarray(column.to_pylist(), dtype="float64"))  # NULL → NaN, like pandas
    if pa.types.is_floating(kind):
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype="float64")
    if pa.types.is_boolean(kind) and column.null_count == 0:
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=bool)
    return np.asarray(column.to_pylist(), dtype=object)
