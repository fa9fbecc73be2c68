"""Compare: runs overlaid on shared axes, the hyperparameters that differ,
their findings side by side, and hyperparameters against a final metric."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from traindoctor.dashboard.app.charts.compare import differing_hyperparameters, hyperparameter_table, parallel_coordinates_figure
from traindoctor.dashboard.app.charts.curves import compare_figure
from traindoctor.dashboard.app.text import plain
from traindoctor.dashboard import data
from traindoctor.dashboard.app.views import common

X_AXES = {"step": "step", "epoch": "epoch", "wall time": "wall_time"}
FINAL_METRICS = ("final_val_accuracy", "final_val_loss", "final_train_loss")
# Parallel coordinates say something only with a handful of runs.
MIN_RUNS_FOR_PARALLEL = 3
FINDINGS_COLUMNS_PER_ROW = 4


PREFERRED_METRICS = (("val", "loss"), ("train", "loss"), ("val", "accuracy"))


def preferred_metric(options: list[tuple[str, str]]) -> tuple[str, str]:
    for choice in PREFERRED_METRICS:
        if choice in options:
            return choice
    return options[0]


def metric_label(metric: tuple[str, str]) -> str:
    split, name = metric
    return f"{split} {name}"


def overlay(run_ids: list[str], labels: dict[str, str]) -> None:
    # (split, name) pairs, not "split name" text: a user's split or metric name may hold spaces.
    options = sorted(set(common.series_names(run_ids)))
    if not options:
        st.info("These runs recorded no curves yet.")
        return
    left, middle, right = st.columns([2, 2, 1])
    if st.session_state.get("compare_metric") not in options:
        st.session_state["compare_metric"] = preferred_metric(options)
    metric = left.selectbox("Metric", options, key="compare_metric", format_func=metric_label)
    axis = middle.radio("x axis", list(X_AXES), horizontal=True, key="compare_axis")
    log_y = right.toggle("log scale", key="compare_log")
    split, name = metric
    if name == "lr":
        points = common.lr(run_ids)
        points = points[points["layer"] == "group0"]
    else:
        points = common.curves(run_ids, [name])
    points = points[points["split"] == split]
    x = X_AXES[axis]
    if x == "epoch" and points["epoch"].isna().all():
        st.caption("No epochs recorded for this series; showing steps.")
        x = "step"
    st.plotly_chart(compare_figure(points, x=x, title=metric_label(metric), labels=labels, log_y=log_y),
                    key="compare_chart")


def side_by_side_findings(run_ids: list[str], labels: dict[str, str]) -> None:
    st.subheader("Findings")
    for row_start in range(0, len(run_ids), FINDINGS_COLUMNS_PER_ROW):
        row = run_ids[row_start:row_start + FINDINGS_COLUMNS_PER_ROW]
        for column, run_id in zip(st.columns(len(row)), row):
            with column:
                st.markdown(f"**{plain(labels[run_id])}**")
                found, problem = common.findings(run_id)
                if problem:
                    st.caption(f"No diagnosis: {plain(problem)}")
                elif not found:
                    st.caption("No findings.")
                for finding in found:
                    with st.expander(common.finding_heading(finding)):
                        common.show_finding_text(finding)


# Axes at most: the hyperparameters that vary most across the chosen runs
# (an HF run records ~110 TrainingArguments; a hundred axes say nothing).
MAX_PARALLEL_AXES = 8


def parallel_view(runs: pd.DataFrame) -> None:
    """Parallel coordinates of the chosen runs' hyperparameters (those that vary most) against a final
    metric; ``runs``: their rows of ``common.chosen_runs`` (config and final metrics)."""
    if len(runs) < MIN_RUNS_FOR_PARALLEL:
        return
    stats = runs[data.STAT_COLUMNS]
    metrics = [m for m in FINAL_METRICS if stats[m].notna().sum() >= MIN_RUNS_FOR_PARALLEL]
    configs = hyperparameter_table(dict(zip(runs["run_id"], runs["config"])))
    if not metrics or configs.empty:
        return
    keys = data.varying_hyperparameters([{key: value for key, value in row.items() if value == value}
                                         for row in configs.to_dict("records")], limit=MAX_PARALLEL_AXES)
    configs = configs[keys]
    if configs.empty:
        return
    st.subheader("Hyperparameters against the final metric (the chosen runs)")
    metric = st.selectbox("Final metric", metrics, key="parallel_metric")
    table = configs.join(stats.set_index("run_id")[[metric]], how="inner")
    table = table[table[metric].notna()]
    if len(table) >= MIN_RUNS_FOR_PARALLEL:
        st.plotly_chart(parallel_coordinates_figure(table, metric=metric), key="parallel_chart")


def main() -> None:
    st.title("Compare")
    if not common.store().catalog.has_runs():
        common.show_empty_store()
        return
    chosen, choices = common.select_runs()
    labels = choices.labels
    if not chosen:
        st.info("Pick runs above (or tick them on the Runs page).")
    else:
        overlay(chosen, {run_id: labels[run_id] for run_id in chosen})
        st.subheader("Hyperparameters that differ")
        runs = common.chosen_runs(chosen)
        configs = dict(zip(runs["run_id"], runs["config"]))
        differing = differing_hyperparameters({labels[r]: configs.get(r) or {} for r in chosen})
        if differing.empty:
            st.caption("The chosen runs share all their hyperparameters." if len(chosen) > 1 else
                       "Pick a second run to see what differs.")
        else:
            st.dataframe(differing.astype(str), key="differing_table")
        side_by_side_findings(chosen, labels)
        parallel_view(runs)


main()
