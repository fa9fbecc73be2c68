"""Comparing runs: which hyperparameters differ, and hyperparameters against a final metric."""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from traindoctor.dashboard.app.text import plotly_text


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted keys; lists and other values become hashable text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple, set)):
            flat[name] = json.dumps(list(value), default=str)
        else:
            flat[name] = value
    return flat


def hyperparameter_table(configs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Runs (rows, by label) × flattened hyperparameters (columns)."""
    rows = {label: flatten_config(config or {}) for label, config in configs.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def differing_hyperparameters(configs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Hyperparameters (rows) whose values differ between runs (columns).

    A key missing from some runs counts as differing (shown as empty).
    """
    table = hyperparameter_table(configs)
    if table.empty:
        return pd.DataFrame(index=pd.Index([], name="hyperparameter"))
    differing = [column for column in table.columns
                 if table[column].map(_comparable).nunique(dropna=False) > 1]
    result = table[differing].T
    result.index.name = "hyperparameter"
    return result.astype(object).where(result.notna(), "")


def parallel_coordinates_figure(table: pd.DataFrame, *, metric: str) -> go.Figure:
    """One line per run through its hyperparameters (axes) to ``metric`` (last axis, coloured).

    Args:
        table: one row per run; numeric and text hyperparameter columns plus
            the ``metric`` column. Columns that are constant are left out;
            text columns become categorical axes.
    """
    dimensions = []
    for column in table.columns:
        if column == metric:
            continue
        values = table[column]
        if values.map(_comparable).nunique(dropna=False) < 2:
            continue
        dimensions.append(_dimension(column, values))
    metric_values = pd.to_numeric(table[metric], errors="coerce")
    dimensions.append({"label": plotly_text(metric), "values": metric_values.to_numpy(dtype=float)})
    figure = go.Figure(go.Parcoords(
        line={"color": metric_values.to_numpy(dtype=float), "colorscale": "Viridis", "showscale": True,
              "colorbar": {"title": {"text": plotly_text(metric)}}},
        dimensions=dimensions,
    ))
    figure.update_layout(title={"text": f"hyperparameters against {plotly_text(metric)}", "y": 0.98}, height=460,
                         margin={"l": 70, "r": 140, "t": 110, "b": 30})
    return figure


def _dimension(column: str, values: pd.Series) -> dict[str, Any]:
    """One parcoords axis; its label and tick texts (config keys and values) escaped for plotly."""
    column = plotly_text(column)
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all() and not values.map(lambda v: isinstance(v, bool)).any():
        spread = numeric[numeric > 0]
        # lr, weight decay and friends span decades: put them on a log axis.
        if len(spread) == len(numeric) and spread.max() / spread.min() >= 100:
            logged = np.log10(numeric.to_numpy(dtype=float))
            ticks = np.arange(np.floor(logged.min()), np.ceil(logged.max()) + 1)
            return {"label": f"{column} (log10)", "values": logged,
                    "tickvals": ticks, "ticktext": [f"1e{int(t)}" for t in ticks]}
        return {"label": column, "values": numeric.to_numpy(dtype=float)}
    labels = values.map(lambda v: "" if v is None or v != v else str(v))
    categories = sorted(labels.unique())
    codes = labels.map({c: i for i, c in enumerate(categories)}).to_numpy(dtype=float)
    return {"label": column, "values": codes, "tickvals": list(range(len(categories))),
            "ticktext": [plotly_text(category) for category in categories]}


def _comparable(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "\0missing"
    return value if isinstance(value, (int, float, str, bool)) else str(value)
