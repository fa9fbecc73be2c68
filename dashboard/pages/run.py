"""Run: the findings first, then the curves with the findings' steps shaded,
per-layer heatmaps and the events. A running run refreshes itself."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from dashboard.charts.curves import curve_figure
from dashboard.charts.layers import grad_norm_heatmap_figure, update_ratio_heatmap_figure
from dashboard.diagnosis.finding import Finding
from dashboard.pages import common

# Which chart holds a rule's evidence: the global series it judges, a
# per-layer heatmap, or the Classes page.
EVIDENCE_SERIES = {
    "no_better_than_baseline": "accuracy",
    "exploding_gradients": "grad_norm",
    "vanishing_gradients": "grad_norm",
    "amp_skipped_steps": "amp_scale",
}
EVIDENCE_HEATMAP = {"update_ratio_out_of_band": "update_ratio", "dead_layers": "grad_norm",
                    "vanishing_gradients": "grad_norm"}
# Rules about the set-up, not a curve: their evidence is the events and the config.
SETUP_RULES = {"eval_mode_during_training", "train_mode_during_eval", "weight_decay_on_norm_and_bias",
               "adam_hyperparameters"}
CLASS_RULES = {"underperforming_classes", "class_imbalance", "no_better_than_baseline"}
# A finding's chart shows this share of its own width on either side (at least
# a few steps), so the lead-up and the aftermath are visible.
EVIDENCE_MARGIN_SHARE = 0.25
MIN_EVIDENCE_MARGIN_STEPS = 5
MAX_EVENT_ROWS = 500


def evidence_range(finding: Finding) -> tuple[float, float] | None:
    if finding.step_start is None and finding.step_end is None:
        return None
    start = finding.step_start if finding.step_start is not None else finding.step_end
    end = finding.step_end if finding.step_end is not None else finding.step_start
    margin = max(MIN_EVIDENCE_MARGIN_STEPS, (end - start) * EVIDENCE_MARGIN_SHARE)
    return start - margin, end + margin


def split_series(points: pd.DataFrame, name: str) -> pd.DataFrame:
    return points[points["name"] == name]


def show_evidence_chart(run_id: str, points: pd.DataFrame, lr_points: pd.DataFrame, finding: Finding) -> None:
    if finding.rule in SETUP_RULES:
        related = common.events(run_id)
        related = related[related["kind"] == finding.rule]
        if not related.empty:
            st.dataframe(related[["step", "kind", "detail"]].head(MAX_EVENT_ROWS), hide_index=True,
                         key=f"evidence_events_{finding.rule}")
        return
    x_range = evidence_range(finding)
    key = f"evidence_{finding.rule}_{finding.step_start}_{finding.step_end}"
    if finding.rule in EVIDENCE_HEATMAP and finding.rule not in EVIDENCE_SERIES:
        name = EVIDENCE_HEATMAP[finding.rule]
        frame = common.heatmap(run_id, name)
        if not frame.empty:
            builder = update_ratio_heatmap_figure if name == "update_ratio" else grad_norm_heatmap_figure
            figure = builder(frame, findings=[finding])
            if x_range:
                figure.update_xaxes(range=list(x_range))
            st.plotly_chart(figure, key=key)
        return
    name = EVIDENCE_SERIES.get(finding.rule, "loss")
    series = lr_points if name == "lr" else split_series(points, name)
    if not series.empty:
        st.plotly_chart(curve_figure(series, title=name, findings=[finding], x_range=x_range), key=key)
    if finding.rule in CLASS_RULES:
        query = {"run": st.query_params.get("run", run_id)}
        if finding.step_end is not None:
            query["step"] = str(finding.step_end)
        st.page_link(common.CLASSES_PAGE, label="Per-class view", icon="🎯", query_params=query)


def show_header(run_id: str, meta: dict, points: pd.DataFrame) -> None:
    last_step = int(points["step"].max()) if not points.empty else 0
    columns = st.columns(4)
    columns[0].metric("status", common.STATUS_MARKERS.get(meta["status"], meta["status"]))
    columns[1].metric("last step", f"{last_step:,}")
    columns[2].metric("started", common.format_time(meta.get("created_at")))
    losses = points[(points["name"] == "loss") & (points["split"] == "train")].sort_values("step")
    columns[3].metric("last train loss", f"{losses['value'].iloc[-1]:.4g}" if len(losses) else "–")
    with st.expander("Hyperparameters and environment"):
        left, right = st.columns(2)
        left.json(meta.get("config") or {}, expanded=True)
        right.json({"task": meta.get("task") or {}, "env": meta.get("env") or {}}, expanded=False)


def show_curves(points: pd.DataFrame, lr_points: pd.DataFrame, found: list[Finding]) -> None:
    st.subheader("Curves")
    smooth = st.toggle("Smoothed line and spread band", value=True, key="smooth")
    charts = [("loss", split_series(points, "loss"), True), ("accuracy", split_series(points, "accuracy"), False),
              ("lr", lr_points, True), ("grad_norm", split_series(points, "grad_norm"), True)]
    amp = split_series(points, "amp_scale")
    if not amp.empty:
        charts.append(("amp_scale", amp, True))
    charts = [chart for chart in charts if not chart[1].empty]
    if not charts:
        st.info("No curves recorded yet.")
        return
    for row_start in range(0, len(charts), 2):
        for column, (name, series, log_default) in zip(st.columns(2), charts[row_start:row_start + 2]):
            with column:
                log_y = st.toggle(f"log scale ({name})", value=log_default and _positive(series), key=f"log_{name}")
                st.plotly_chart(curve_figure(series, title=name, findings=found, log_y=log_y, smooth=smooth),
                                key=f"chart_{name}")


def show_layers(run_id: str, found: list[Finding]) -> None:
    update_ratio = common.heatmap(run_id, "update_ratio")
    grad_norm = common.heatmap(run_id, "grad_norm")
    if update_ratio.empty and grad_norm.empty:
        return
    st.subheader("Layers")
    tabs = st.tabs(["update / weight ratio", "gradient norm"])
    with tabs[0]:
        if update_ratio.empty:
            st.info("No per-layer update ratios recorded.")
        else:
            st.caption("Seed 004: a healthy update/weight ratio is about 1e-3 (white). "
                       "Blue layers barely learn; red ones take steps too large for their weights.")
            st.plotly_chart(update_ratio_heatmap_figure(update_ratio, findings=found), key="heatmap_update_ratio")
    with tabs[1]:
        if grad_norm.empty:
            st.info("No per-layer gradient norms recorded.")
        else:
            st.plotly_chart(grad_norm_heatmap_figure(grad_norm, findings=found), key="heatmap_grad_norm")


def describe_event(kind: str, detail: str) -> str:
    if kind == "config_lint":
        try:
            parsed = json.loads(detail)
            return f"{parsed.get('rule', '')}: {parsed.get('message', '')}"
        except (TypeError, ValueError):
            return str(detail)
    return "" if detail is None else str(detail).splitlines()[0] if kind == "crash" else str(detail)


def show_events(run_id: str) -> None:
    frame = common.events(run_id)
    st.subheader("Events")
    if frame.empty:
        st.caption("No events: no AMP skips, no train/eval mode mistakes, no config warnings, no crash.")
        return
    for crash in frame.loc[frame["kind"] == "crash", "detail"]:
        st.error("The run crashed.")
        st.code(crash, language="python")
    counts = frame["kind"].value_counts()
    st.caption(" · ".join(f"{kind}: {count}" for kind, count in counts.items()))
    shown = frame.head(MAX_EVENT_ROWS).assign(
        detail=[describe_event(k, d) for k, d in zip(frame["kind"].head(MAX_EVENT_ROWS), frame["detail"].head(MAX_EVENT_ROWS))],
        time=lambda f: f["wall_time"].map(common.format_time),
    )[["step", "time", "kind", "detail"]]
    st.dataframe(shown, hide_index=True, width="stretch", key="events_table")


def show_run(run_id: str, was_running: bool) -> None:
    meta = common.store().run_meta(run_id)
    if was_running and meta["status"] != "running":
        st.rerun(scope="app")  # finished while watched: stop the timer
    points = common.curves([run_id])
    lr_points = common.lr([run_id])
    found, problem = common.findings(run_id)
    show_header(run_id, meta, points)
    st.subheader("Findings")
    if found:
        st.caption(" · ".join(f"{common.SEVERITY_MARKERS[s]} {n} {s}" for s, n in common.severity_counts(found).items() if n))
    common.show_findings_list(found, problem,
                              chart=lambda finding: show_evidence_chart(run_id, points, lr_points, finding))
    show_curves(points, lr_points, found)
    show_layers(run_id, found)
    show_events(run_id)


def _positive(series: pd.DataFrame) -> bool:
    values = series["value"]
    finite = values[values.notna() & (values.abs() != float("inf"))]
    return bool(len(finite)) and bool((finite > 0).all())


def main() -> None:
    runs = common.runs_frame()
    if runs.empty:
        st.title("Run")
        common.show_empty_store()
        return
    run_id = common.select_run(runs)
    status = runs.loc[runs["run_id"] == run_id, "status"].iloc[0]
    st.title(common.run_label(runs, run_id))
    live = status == "running"
    if live:
        st.caption(f"🟢 Live: refreshing every {common.LIVE_REFRESH_S:g} s while the run writes.")
    st.fragment(show_run, run_every=common.LIVE_REFRESH_S if live else None)(run_id, live)


main()
