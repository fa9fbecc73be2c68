"""Layers × steps heatmaps of per-layer statistics (update ratio, grad norm)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from traindoctor.dashboard.app.charts.findings import draw_findings
from traindoctor.dashboard.app.text import plotly_text

from traindoctor.diagnosis.engine import RECORDS

# Seed 004 (Karpathy's "ratio of weight update / weight magnitude"): a healthy
# ratio is around 1e-3; far below, the layer barely learns; far above, the lr
# is too high for it. The colour scale is centred on log10(1e-3) = -3.
UPDATE_RATIO_TARGET_LOG10 = -3.0
# The band drawn as "healthy" on the colour bar: a decade either side.
UPDATE_RATIO_BAND_DECADES = 1.0


def layer_grid(frame: pd.DataFrame) -> pd.DataFrame:
    """A layers × steps table of log10 values from a long (layer, step, value) frame.

    Layers keep the order they first appear in (model order when the probe
    recorded them in ``named_parameters()`` order); zero or negative values
    become NaN (log undefined), as do non-finite ones.
    """
    if frame.empty:
        return pd.DataFrame()
    values = frame["value"].astype("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        logged = np.where(np.isfinite(values) & (values > 0), np.log10(values.where(values > 0)), np.nan)
    table = frame.assign(log_value=logged).pivot_table(index="layer", columns="step", values="log_value",
                                                       aggfunc="last", dropna=False)
    order = list(dict.fromkeys(frame["layer"]))
    return table.reindex(order)


def update_ratio_heatmap_figure(frame: pd.DataFrame, *, findings=()) -> go.Figure:
    """Update/weight ratio per layer and step, diverging around 1e-3.

    Blue cells update too little, red ones too much, white ones sit at ~1e-3.
    """
    grid = layer_grid(frame)
    low = UPDATE_RATIO_TARGET_LOG10 - 3
    high = UPDATE_RATIO_TARGET_LOG10 + 3
    figure = _heatmap(grid, colorscale="RdBu_r", zmid=UPDATE_RATIO_TARGET_LOG10, zmin=low, zmax=high,
                      colorbar_title="log10 ratio", hover_name="update/weight")
    band = UPDATE_RATIO_BAND_DECADES
    figure.update_traces(colorbar={
        "tickvals": [low, UPDATE_RATIO_TARGET_LOG10 - band, UPDATE_RATIO_TARGET_LOG10,
                     UPDATE_RATIO_TARGET_LOG10 + band, high],
        "ticktext": [f"1e{low:.0f}", f"1e{UPDATE_RATIO_TARGET_LOG10 - band:.0f}", "1e-3 target",
                     f"1e{UPDATE_RATIO_TARGET_LOG10 + band:.0f}", f"1e{high:.0f}"],
    })
    _mark_findings(figure, findings, rules=outlined_rules("update_ratio"))
    figure.update_layout(title="update / weight ratio per layer (white ≈ 1e-3)")
    return figure


def grad_norm_heatmap_figure(frame: pd.DataFrame, *, findings=()) -> go.Figure:
    """Gradient norm per layer and step (log10, sequential scale)."""
    grid = layer_grid(frame)
    figure = _heatmap(grid, colorscale="Viridis", zmid=None, zmin=None, zmax=None,
                      colorbar_title="log10 norm", hover_name="grad norm")
    _mark_findings(figure, findings, rules=outlined_rules("grad_norm"))
    figure.update_layout(title="gradient norm per layer")
    return figure


def _heatmap(grid: pd.DataFrame, *, colorscale: str, zmid, zmin, zmax, colorbar_title: str,
             hover_name: str) -> go.Figure:
    figure = go.Figure()
    if not grid.empty:
        figure.add_trace(go.Heatmap(
            z=grid.to_numpy(), x=grid.columns.to_numpy(), y=[plotly_text(layer) for layer in grid.index],
            colorscale=colorscale,
            zmid=zmid, zmin=zmin, zmax=zmax, colorbar={"title": {"text": colorbar_title}},
            hovertemplate=f"%{{y}}<br>step %{{x}}<br>log10 {hover_name} %{{z:.2f}}<extra></extra>",
        ))
    height = max(260, min(900, 60 + 16 * len(grid.index)))
    figure.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    figure.update_xaxes(title_text="step")
    figure.update_yaxes(autorange="reversed")
    return figure


def outlined_rules(name: str) -> set[str]:
    """The rules whose findings the heatmap of per-layer ``name`` outlines (their records' ``heatmaps``)."""
    return {rule_id for rule_id, record in RECORDS.items() if name in record.heatmaps}


def _mark_findings(figure: go.Figure, findings, rules: set[str]) -> None:
    """The findings of ``rules`` in lanes above the heatmap (``charts.findings.draw_findings``)."""
    steps = [x for trace in figure.data for x in (trace.x if trace.x is not None else [])]
    if not steps:
        return
    draw_findings(figure, [f for f in findings if f.rule in rules], (float(min(steps)), float(max(steps))),
                  outline_layer="above")
