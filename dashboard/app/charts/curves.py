"""Line charts of global series: raw points, a smoothed line, a spread band,
and the steps of findings shaded behind them."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from traindoctor.dashboard.app.charts.findings import draw_findings
from traindoctor.dashboard.app.text import plotly_text

# Seeds 004 ("look at learning curves") ask for the average training loss with
# its variance: a rolling median is robust to spikes, and the 10–90 % band
# shows the spread without being stretched by a single outlier.
BAND_QUANTILES = (0.1, 0.9)
# The smoothing window, as a share of the points drawn: 2 % of ~2000 points
# (40) averages out batch noise yet keeps an lr drop's knee sharp.
SMOOTHING_SHARE = 0.02
MIN_SMOOTHING_WINDOW = 5
# Sparse series (an evaluation every epoch) are drawn as they are: a band over
# a handful of points would invent a spread nobody measured.
MIN_POINTS_TO_SMOOTH = 50
# The smoothed line and its band are drawn with at most this many points: a
# rolling median over 2 % of the points has no detail finer than that, and
# three fewer 2,000-point SVG paths per split halve what a chart costs to send and draw.
MAX_SMOOTHED_POINTS = 500

SERIES_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                 "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def smoothing_window(num_points: int) -> int:
    """Points in the rolling window for a series of ``num_points`` points."""
    return max(MIN_SMOOTHING_WINDOW, int(round(num_points * SMOOTHING_SHARE)))


def smoothed_band(points: pd.DataFrame, window: int | None = None,
                  quantiles: tuple[float, float] = BAND_QUANTILES) -> pd.DataFrame:
    """Rolling median and quantile band of one series.

    Args:
        points: frame with ``step`` and ``value`` (one series, any order).
        window: points per centred window; :func:`smoothing_window` when None.
        quantiles: lower and upper quantile of the band.

    Returns:
        Frame (step, median, low, high) in step order. Non-finite values
        (NaN, ±Inf) are left out of the statistics, never smoothed into them.

    Example:
        >>> frame = pd.DataFrame({"step": [1, 2, 3], "value": [1.0, 3.0, 2.0]})
        >>> smoothed_band(frame, window=3)["median"].tolist()
        [2.0, 2.0, 2.5]
    """
    ordered = points.sort_values("step", kind="stable")
    values = ordered["value"].astype("float64")
    values = values.where(np.isfinite(values))
    size = window or smoothing_window(len(ordered))
    rolling = values.rolling(size, center=True, min_periods=1)
    return pd.DataFrame({
        "step": ordered["step"].to_numpy(),
        "median": rolling.median().to_numpy(),
        "low": rolling.quantile(quantiles[0]).to_numpy(),
        "high": rolling.quantile(quantiles[1]).to_numpy(),
    })


def curve_figure(points: pd.DataFrame, *, title: str, findings: Sequence = (), log_y: bool = False,
                 smooth: bool = True, x_range: tuple[float, float] | None = None) -> go.Figure:
    """One chart of a metric: a trace group per split (or per layer for lr).

    Args:
        points: frame with ``step``, ``value`` and ``split`` (and optionally
            ``layer``), already downsampled by the store.
        title: chart title (also the y-axis label).
        findings: findings whose steps are drawn in lanes above the plot
            (``charts.findings.draw_findings``).
        log_y: logarithmic y axis.
        smooth: add the rolling median and its 10–90 % band to each trace.
        x_range: zoom on these steps (a finding's evidence).
    """
    figure = go.Figure()
    groups = _trace_groups(points)
    for index, (label, series) in enumerate(groups):
        color = SERIES_COLORS[index % len(SERIES_COLORS)]
        series = series.sort_values("step", kind="stable")
        values = series["value"].astype("float64")
        finite = np.isfinite(values)
        draw_smooth = smooth and len(series) >= MIN_POINTS_TO_SMOOTH
        # SVG, not WebGL (Scattergl): lines hold at most ~2,000 points, which SVG draws at once, and a
        # browser keeps only ~16 WebGL contexts per page: a Run page with many charts lost them all.
        figure.add_trace(go.Scatter(
            x=series["step"], y=values.where(finite), mode="lines" if len(series) > MIN_POINTS_TO_SMOOTH else "lines+markers",
            name=f"{label} (raw)" if draw_smooth else label, line={"color": color, "width": 1},
            opacity=0.35 if draw_smooth else 1.0, legendgroup=label,
        ))
        if draw_smooth:
            band = smoothed_band(series)
            band = band.iloc[::max(1, -(-len(band) // MAX_SMOOTHED_POINTS))]
            figure.add_trace(go.Scatter(x=band["step"], y=band["high"], mode="lines", line={"width": 0},
                                        showlegend=False, hoverinfo="skip", legendgroup=label))
            figure.add_trace(go.Scatter(x=band["step"], y=band["low"], mode="lines", line={"width": 0},
                                        fill="tonexty", fillcolor=_rgba(color, 0.18),
                                        name=f"{label} 10–90 %", hoverinfo="skip", legendgroup=label))
            figure.add_trace(go.Scatter(x=band["step"], y=band["median"], mode="lines",
                                        line={"color": color, "width": 2}, name=f"{label} (median)",
                                        legendgroup=label))
        if (~finite).any():
            bad = series[~finite.to_numpy()]
            top = values[finite].max() if finite.any() else 0.0
            figure.add_trace(go.Scatter(
                x=bad["step"], y=[top] * len(bad), mode="markers", name=f"{label} NaN/Inf",
                marker={"symbol": "x", "color": "#d62728", "size": 9}, legendgroup=label,
                text=[str(v) for v in bad["value"]], hovertemplate="step %{x}: %{text}<extra></extra>",
            ))
    extent = x_range if x_range else _extent(points)
    draw_findings(figure, findings, extent)
    title = plotly_text(title)
    figure.update_layout(title=title, height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                         legend={"orientation": "h", "y": -0.2}, hovermode="x unified")
    figure.update_xaxes(title_text="step", range=list(x_range) if x_range else None)
    # The curve's axis only: update_yaxes would also turn the findings' lane axis (yaxis2) to log.
    figure.update_layout(yaxis={"title": {"text": title}, "type": "log" if log_y else "linear",
                                "range": _flat_range(points, log_y)})
    return figure


def _extent(points: pd.DataFrame) -> tuple[float, float] | None:
    """(first, last) step of the points; None when there are none."""
    if points.empty:
        return None
    steps = points["step"].astype("float64")
    return float(steps.min()), float(steps.max())


def _flat_range(points: pd.DataFrame, log_y: bool) -> list[float] | None:
    """A y range around a constant series (a fixed lr): plotly pads one by ±1,
    which draws lr = 1e-3 on the zero line."""
    values = points["value"].astype("float64") if len(points) else pd.Series(dtype="float64")
    values = values[np.isfinite(values)]
    if values.empty or values.max() - values.min() > 1e-9 * max(abs(values.max()), 1e-300):
        return None
    level = float(values.iloc[0])
    if log_y:
        return [np.log10(level) - 0.5, np.log10(level) + 0.5] if level > 0 else None
    return [level - 1.0, level + 1.0] if level == 0 else sorted([level * 0.5, level * 1.5])


def compare_figure(points: pd.DataFrame, *, x: str, title: str, labels: dict[str, str],
                   log_y: bool = False) -> go.Figure:
    """Several runs' series of one metric on a shared x axis.

    Args:
        points: frame with ``run_id``, ``value`` and the column ``x``
            (``step``, ``epoch`` or ``wall_time``).
        x: which column is the x axis; ``wall_time`` is drawn as seconds
            since each run's first point so runs started at different times line up.
        labels: run id → the label in the legend, in legend order.
    """
    figure = go.Figure()
    present = set(points["run_id"])
    order = [run_id for run_id in labels if run_id in present] + sorted(present - set(labels))
    for index, run_id in enumerate(order):
        series = points[points["run_id"] == run_id].sort_values("step", kind="stable")
        x_values = series[x].astype("float64")
        if x == "wall_time":
            x_values = x_values - x_values.min()
        finite = np.isfinite(series["value"])
        figure.add_trace(go.Scatter(  # SVG: see curve_figure; a lone point needs a marker to be seen
            x=x_values, y=series["value"].where(finite), mode="lines" if finite.sum() > 1 else "lines+markers",
            name=plotly_text(labels.get(run_id, run_id)), line={"color": SERIES_COLORS[index % len(SERIES_COLORS)]},
        ))
    x_title = {"step": "step", "epoch": "epoch", "wall_time": "seconds since start"}[x]
    title = plotly_text(title)
    figure.update_layout(title=title, height=380, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                         legend={"orientation": "h", "y": -0.2})
    figure.update_xaxes(title_text=x_title)
    figure.update_yaxes(title_text=title, type="log" if log_y else "linear")
    return figure


def _trace_groups(points: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(legend label, rows) per split, or per split and layer; labels escaped for plotly."""
    if points.empty:
        return []
    keys = ["split"]
    if "layer" in points and points["layer"].notna().any():
        keys = ["split", "layer"]
    groups = []
    for key, frame in points.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        label = " ".join(str(part) for part in key if part is not None and part == part)
        groups.append((plotly_text(label), frame))
    return groups


def _rgba(hex_color: str, alpha: float) -> str:
    red, green, blue = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"
