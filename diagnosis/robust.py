"""Robust statistics shared by the rules: levels, noise scales, persistence, trends.

Every helper takes plain numpy arrays or step-indexed :class:`~traindoctor.store.frames.Curve` objects, ignores
NaN and ±Inf where a statistic must, and is O(n) or O(n log w) so that a
143,000-step run is judged in well under a second per rule.
"""

from __future__ import annotations

import numpy as np

from traindoctor.store.frames import Curve

# 1.4826 × MAD estimates the standard deviation of Gaussian noise; the
# constant makes "k MADs" read like "k sigmas".
MAD_TO_SIGMA = 1.4826


def finite(series: Curve) -> Curve:
    """The finite values of a step-indexed series (NaN and ±Inf dropped)."""
    if series.empty:
        return series
    values = series.to_numpy(dtype="float64")
    return series[np.isfinite(values)]


def mad_sigma(values: np.ndarray) -> float:
    """Robust standard deviation (1.4826 × median absolute deviation) of the finite values."""
    values = np.asarray(values, dtype="float64")
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    return float(MAD_TO_SIGMA * np.median(np.abs(values - np.median(values))))


def median(values: np.ndarray) -> float:
    values = np.asarray(values, dtype="float64")
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else float("nan")


def trailing_median(values: np.ndarray, window: int, min_periods: int) -> np.ndarray:
    """Median of the ``window`` values *before* each position (the current one excluded).

    NaN where fewer than ``min_periods`` earlier values exist; non-finite
    inputs are ignored.
    """
    series = Curve(np.where(np.isfinite(values), values, np.nan))
    return series.rolling(window, min_periods=min_periods).median().shift(1).to_numpy()


def trailing_mad_sigma(residuals: np.ndarray, window: int, min_periods: int) -> np.ndarray:
    """Robust sigma of the ``window`` residuals before each position (current excluded)."""
    series = Curve(np.abs(np.where(np.isfinite(residuals), residuals, np.nan)))
    # Median of |residual| around a median baseline: a MAD without a second pass.
    return MAD_TO_SIGMA * series.rolling(window, min_periods=min_periods).median().shift(1).to_numpy()


def trailing_quantile_at(values: np.ndarray, positions: np.ndarray, window: int, min_periods: int,
                         quantile: float) -> np.ndarray:
    """The ``quantile`` of the ``window`` values before each of ``positions`` (current excluded).

    NaN where fewer than ``min_periods`` finite values precede; non-finite
    inputs are ignored. Costs O(len(positions) × window): for the few
    positions a rule asks about, where a rolling quantile over a 143,000-step
    run would cost a sorted window per record.
    """
    values = np.asarray(values, dtype="float64")
    positions = np.asarray(positions, dtype="int64")
    result = np.full(len(positions), np.nan)
    if not len(positions):
        return result
    padded = np.concatenate([np.full(window, np.nan), np.where(np.isfinite(values), values, np.nan)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, window)  # (n + 1, window): row i holds the window before i
    chunk = max(1, 2**22 // window)  # bounded memory: ~32 MB of float64 per chunk
    for begin in range(0, len(positions), chunk):
        rows = windows[positions[begin:begin + chunk]]
        counts = np.isfinite(rows).sum(axis=1)
        # Only rows with enough values are reduced: an all-NaN row would warn, and silencing that with
        # warnings.catch_warnings changes the filters of every thread (a probe's own warning, raised by its
        # publisher thread or a SIGTERM handler during a live check, was lost).
        kept = counts >= max(min_periods, 1)
        found = np.full(len(rows), np.nan)
        if kept.any():
            found[kept] = np.nanquantile(rows[kept], quantile, axis=1)
        result[begin:begin + chunk] = found
    return result


def true_runs(mask: np.ndarray, min_length: int = 1, max_gap: int = 0) -> list[tuple[int, int]]:
    """Index ranges ``(first, last)`` (inclusive) where ``mask`` holds for ``min_length`` positions or more.

    Runs separated by at most ``max_gap`` False positions are merged first,
    so one dip of noise does not split a persistent pattern.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.size == 0 or not mask.any():
        return []
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2] - 1
    merged: list[list[int]] = []
    for start, end in zip(starts, ends):
        if merged and start - merged[-1][1] - 1 <= max_gap:
            merged[-1][1] = int(end)
        else:
            merged.append([int(start), int(end)])
    return [(start, end) for start, end in merged if end - start + 1 >= min_length]


def binned_medians(series: Curve, bins: int) -> Curve:
    """The finite values in ``bins`` consecutive equal-count chunks, each reduced to its median.

    Indexed by the median step of each chunk. A noise-robust, fixed-size
    profile of a curve of any length (a 143,000-step loss becomes ``bins``
    points). Fewer points than ``bins`` are returned as they are.
    """
    series = finite(series)
    n = len(series)
    if n <= bins:
        return series.astype("float64")
    edges = np.linspace(0, n, bins + 1).astype(int)
    values = series.to_numpy(dtype="float64")
    steps = series.index.to_numpy()
    medians = [np.median(values[a:b]) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    centres = [int(steps[(a + b - 1) // 2]) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    return Curve(np.asarray(medians, dtype="float64"), np.asarray(centres, dtype="int64"))


def window_median(series: Curve, start_fraction: float, end_fraction: float) -> float:
    """Median of the finite values between two fractions of the series' length (at least one value)."""
    series = finite(series)
    n = len(series)
    if n == 0:
        return float("nan")
    start = min(int(start_fraction * n), n - 1)
    end = max(start + 1, int(round(end_fraction * n)))
    return float(np.median(series.to_numpy(dtype="float64")[start:end]))
