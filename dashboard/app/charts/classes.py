"""Per-class metrics derived from stored confusion counts, and their charts.

Only counts are stored (``confusion(step, split, true_class, pred_class,
count)``); precision, recall and F1 are derived where shown, by the same
function the per-class rules use (``traindoctor.diagnosis.classes``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from traindoctor.diagnosis.classes import class_metrics as derive_class_metrics


def confusion_matrix(confusion: pd.DataFrame, num_classes: int | None = None) -> np.ndarray:
    """Dense ``counts[true, pred]`` of one evaluation's long confusion rows."""
    if confusion.empty:
        return np.zeros((num_classes or 0, num_classes or 0), dtype=np.int64)
    size = int(max(confusion["true_class"].max(), confusion["pred_class"].max())) + 1
    size = max(size, int(num_classes or 0))
    matrix = np.zeros((size, size), dtype=np.int64)
    np.add.at(matrix, (confusion["true_class"].to_numpy(int), confusion["pred_class"].to_numpy(int)),
              confusion["count"].to_numpy(np.int64))
    return matrix


def class_metrics(matrix: np.ndarray, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Precision, recall, F1 and support per class of one confusion matrix.

    A class never predicted has precision 0 (sklearn's ``zero_division=0``);
    a class with no support has recall 0.
    """
    metrics = derive_class_metrics(matrix)
    precision, recall, f1, support = metrics.precision, metrics.recall, metrics.f1, metrics.support
    return pd.DataFrame({
        "class": _names(len(matrix), class_names),
        "class_index": np.arange(len(matrix)),
        "precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64),
    })


def class_metrics_over_evaluations(confusion: pd.DataFrame, num_classes: int | None = None,
                                   class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """:func:`class_metrics` of every evaluation (split, step), stacked with those keys."""
    frames = []
    for (split, step), rows in confusion.groupby(["split", "step"], sort=True):
        metrics = class_metrics(confusion_matrix(rows, num_classes), class_names)
        frames.append(metrics.assign(split=split, step=int(step)))
    if not frames:
        return pd.DataFrame(columns=["class", "class_index", "precision", "recall", "f1", "support", "split", "step"])
    return pd.concat(frames, ignore_index=True)


def majority_baseline(matrix: np.ndarray) -> tuple[float, float]:
    """(accuracy of always predicting the most frequent class, the model's accuracy).

    Seed 002: compare accuracy to the zero-rule baseline.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    total = matrix.sum()
    if total == 0:
        return float("nan"), float("nan")
    return float(matrix.sum(axis=1).max() / total), float(np.trace(matrix) / total)


def worst_classes(metrics: pd.DataFrame, matrix: np.ndarray, count: int = 5) -> pd.DataFrame:
    """The ``count`` classes with the lowest F1, each with what it is most often mistaken for."""
    matrix = np.asarray(matrix)
    names = list(metrics["class"])
    worst = metrics.sort_values(["f1", "support"], ascending=[True, False], kind="stable").head(count).copy()
    confused_with, confused_count = [], []
    for index in worst["class_index"]:
        row = matrix[index].copy()
        row[index] = 0
        if row.sum() == 0:
            confused_with.append("")
            confused_count.append(0)
        else:
            target = int(row.argmax())
            confused_with.append(names[target])
            confused_count.append(int(row[target]))
    worst["most_confused_with"] = confused_with
    worst["confused_count"] = confused_count
    return worst.reset_index(drop=True)


def class_metrics_figure(metrics: pd.DataFrame, *, metric: str = "f1", selected_step: int | None = None) -> go.Figure:
    """One line per class of ``metric`` (precision, recall or f1) over evaluation steps."""
    figure = go.Figure()
    for name, rows in metrics.groupby("class", sort=False):
        rows = rows.sort_values("step")
        figure.add_trace(go.Scatter(x=rows["step"], y=rows[metric], mode="lines+markers", name=str(name)))
    if selected_step is not None:
        figure.add_vline(x=selected_step, line={"dash": "dot", "color": "black"})
    figure.update_layout(title=f"per-class {metric} over evaluations", height=360,
                         margin={"l": 10, "r": 10, "t": 40, "b": 10})
    figure.update_xaxes(title_text="step")
    figure.update_yaxes(title_text=metric, range=[0, 1.02])
    return figure


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str] | None = None, *,
                            normalize: bool = True) -> go.Figure:
    """Heatmap of ``matrix[true, pred]``; with ``normalize``, each row sums to 1 (recall on the diagonal)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    names = _names(len(matrix), class_names)
    shown = matrix
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            shown = np.where(totals > 0, matrix / totals, 0.0)
    figure = go.Figure(go.Heatmap(
        z=shown, x=names, y=names, colorscale="Blues", zmin=0, zmax=1 if normalize else None,
        customdata=matrix, hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata:.0f} samples<extra></extra>",
    ))
    if len(matrix) <= 20:
        figure.update_traces(text=np.round(shown, 2 if normalize else 0), texttemplate="%{text}")
    figure.update_layout(title="confusion matrix" + (" (row-normalised)" if normalize else ""),
                         height=max(360, min(900, 120 + 24 * len(matrix))),
                         margin={"l": 10, "r": 10, "t": 40, "b": 10})
    figure.update_xaxes(title_text="predicted", type="category")
    figure.update_yaxes(title_text="true", autorange="reversed", type="category")
    return figure


def _names(size: int, class_names: Sequence[str] | None) -> list[str]:
    names = list(class_names or [])
    return [str(names[i]) if i < len(names) else str(i) for i in range(size)]
