"""Findings drawn on a chart: one lane per overlapping finding above the plot, outlines in it.

Shading every finding across the whole plot blended overlapping findings
into one grey block with their labels printed over each other (issue #17).
Instead each finding gets a bar in a lane of a strip above the plot, exactly
as wide as its steps; findings whose bars (or labels) would overlap go to
different lanes. In the plot itself a finding is two thin lines at its
first and last step, never a fill. A finding of one step (or a few, on a long
run) gets a bar of a minimum visible width, centred on its steps; its label
and hover text still give its true steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import plotly.graph_objects as go

from traindoctor.dashboard.app.text import plotly_text

SEVERITY_COLORS = {"critical": "#d62728", "warning": "#ff7f0e", "info": "#1f77b4"}
# Lanes above the plot, each this share of the figure's height, at most this
# many (findings beyond the last lane share it; the hover text tells them apart).
LANE_HEIGHT = 0.055
MAX_LANES = 5
# A bar is never narrower than this share of the x range: one step of a
# 2,000-step run would be under a pixel.
MIN_BAR_SHARE = 0.006
# A label needs about this share of the x range per character (10 px font,
# ~6 px a character, ~650 px of plot in a half-width column).
LABEL_SHARE_PER_CHAR = 0.0095


@dataclass(frozen=True)
class Span:
    """One finding as drawn: its true steps, the bar's x extent, its lane and label."""

    start: float
    end: float
    x0: float
    x1: float
    lane: int
    severity: str
    rule: str
    label: str


def steps_label(start: int, end: int) -> str:
    """``step 44`` or ``steps 44–430``."""
    return f"step {start}" if start == end else f"steps {start}–{end}"


def finding_lanes(findings: Iterable, x_extent: tuple[float, float], *,
                  max_lanes: int = MAX_LANES) -> list[Span]:
    """Where each finding with steps is drawn: bars packed into the fewest lanes
    so that no two bars, nor a bar and another's label, overlap in a lane.

    Args:
        findings: :class:`~traindoctor.diagnosis.finding.Finding`-like objects
            (``rule``, ``severity``, ``step_range``); whole-run ones are skipped.
        x_extent: the chart's x range (first, last step shown).
        max_lanes: lanes at most; findings that fit in none go to the last one.

    Returns:
        One :class:`Span` per finding with steps, in the given order.

    Example:
        >>> from types import SimpleNamespace as F
        >>> spans = finding_lanes([F(rule="a", severity="warning", step_range=(10, 90)),
        ...                        F(rule="b", severity="info", step_range=(50, 50))], (0, 100))
        >>> [(s.lane, s.x0, s.x1, s.label) for s in spans]
        [(0, 10.0, 90.0, 'a · steps 10–90'), (1, 49.7, 50.3, 'b · step 50')]
    """
    low, high = float(x_extent[0]), float(x_extent[1])
    width = max(high - low, 1.0)
    minimum = MIN_BAR_SHARE * width
    lanes: list[list[tuple[float, float]]] = []
    spans = []
    for finding in findings:
        steps = finding.step_range
        if steps is None:
            continue
        start, end = float(steps[0]), float(steps[1])
        x0, x1 = start, end
        if x1 - x0 < minimum:
            centre = (x0 + x1) / 2
            x0, x1 = centre - minimum / 2, centre + minimum / 2
        label = f"{finding.rule} · {steps_label(int(start), int(end))}"
        occupied = (x0, max(x1, x0 + len(label) * LABEL_SHARE_PER_CHAR * width))
        lane = next((i for i, taken in enumerate(lanes)
                     if all(occupied[1] <= a or occupied[0] >= b for a, b in taken)), None)
        if lane is None:
            if len(lanes) < max_lanes:
                lanes.append([])
                lane = len(lanes) - 1
            else:
                lane = max_lanes - 1
        lanes[lane].append(occupied)
        spans.append(Span(start=start, end=end, x0=x0, x1=x1, lane=lane, severity=finding.severity,
                          rule=finding.rule, label=label))
    return spans


def draw_findings(figure: go.Figure, findings: Sequence, x_extent: tuple[float, float] | None, *,
                  outline_layer: str = "below") -> go.Figure:
    """Draw ``findings`` on ``figure`` (a one-y-axis chart): the plot shrinks to make room for one lane
    per overlapping finding above it; each finding is a bar in its lane with its rule and steps as
    label and hover text, and two dotted lines at its first and last step in the plot (``outline_layer``
    ``below`` the curves, ``above`` a heatmap that would hide them)."""
    if x_extent is None:
        return figure
    spans = finding_lanes(findings, x_extent)
    if not spans:
        return figure
    lanes = max(span.lane for span in spans) + 1
    top = 1.0 - lanes * LANE_HEIGHT
    bars, annotations, shapes = [], [], []
    for span in spans:
        color = SEVERITY_COLORS.get(span.severity, "#7f7f7f")
        y0 = top + span.lane * LANE_HEIGHT
        y1 = y0 + LANE_HEIGHT * 0.75
        label = plotly_text(span.label)
        # The bar is a filled SVG path (a scatter with fill), so it carries hover text; shapes cannot.
        bars.append(go.Scatter(
            x=[span.x0, span.x1, span.x1, span.x0, span.x0], y=[y0, y0, y1, y1, y0], yaxis="y2",
            mode="lines", fill="toself", fillcolor=color, line={"color": color, "width": 1}, opacity=0.75,
            hoveron="fills", hoverinfo="text", text=f"{label} ({span.severity})", showlegend=False,
            name=label))
        annotations.append({"x": span.x0, "y": (y0 + y1) / 2, "yref": "y2", "text": label, "showarrow": False,
                            "xanchor": "left", "yanchor": "middle", "font": {"size": 10, "color": "#222"},
                            "bgcolor": "rgba(255,255,255,0.7)"})
        shapes += [{"type": "line", "x0": step, "x1": step, "yref": "paper", "y0": 0.0, "y1": top - 0.01,
                    "line": {"color": color, "width": 1, "dash": "dot"}, "layer": outline_layer}
                   for step in sorted({span.start, span.end})]
    # Added in one go: plotly validates the whole list on each add_shape/add_annotation (quadratic).
    figure.add_traces(bars)
    figure.update_layout(
        shapes=[*figure.layout.shapes, *shapes], annotations=[*figure.layout.annotations, *annotations],
        # The lane strip: an axis over the top of the figure, in paper units, not drawn.
        yaxis={"domain": [0.0, top - 0.01]},
        yaxis2={"domain": [top, 1.0], "range": [top, 1.0], "visible": False, "fixedrange": True, "anchor": "x"})
    return figure
