"""Classes: per-class precision, recall and F1 over evaluations, the confusion
matrix at one evaluation, the worst classes and the majority-class baseline."""

from __future__ import annotations

import streamlit as st

from traindoctor.dashboard.app.charts.classes import (
    class_metrics,
    class_metrics_figure,
    class_metrics_over_evaluations,
    confusion_matrix,
    confusion_matrix_figure,
    majority_baseline,
    worst_classes,
)
from traindoctor.dashboard.app.text import plain
from traindoctor.dashboard.app.views import common

WORST_CLASSES_SHOWN = 5


def select_step(steps: list[int]) -> int:
    """The evaluation to look at, kept in sync with ``?step=`` (default: the last one)."""
    key = "select_step"
    raw = st.query_params.get("step")
    wanted = int(raw) if raw is not None and raw.lstrip("-").isdigit() else None
    if wanted is not None and steps:
        # A finding may point between evaluations: take the nearest one at or before it.
        earlier = [s for s in steps if s <= wanted]
        st.session_state[key] = earlier[-1] if earlier else steps[0]
    elif st.session_state.get(key) not in steps:
        st.session_state[key] = steps[-1]

    def write_back() -> None:
        st.query_params["step"] = str(st.session_state[key])

    if len(steps) == 1:
        st.caption(f"One evaluation, at step {steps[0]}.")
        chosen = steps[0]
    else:
        chosen = st.select_slider("Evaluation (step)", options=steps, key=key, on_change=write_back)
    st.query_params["step"] = str(chosen)
    return int(chosen)


def main() -> None:
    st.title("Classes")
    if not common.store().catalog.has_runs():
        common.show_empty_store()
        return
    run_id, _ = common.select_run(page=common.CLASSES_PAGE)
    counts = common.confusion(run_id)
    meta = common.store().run_meta(run_id)
    task = meta.get("task") or {}
    class_names = task.get("class_names")
    if counts.empty:
        st.info("This run recorded no confusion matrices. `probe.evaluate(...)` with "
                "`ev.update(logits, targets)` records one per evaluation.")
        return
    found, _ = common.findings(run_id)
    for finding in (f for f in found if f.rule in common.CLASS_RULES):
        with st.expander(common.finding_heading(finding), expanded=True):
            common.show_finding_text(finding)
            common.show_finding_evidence(finding)

    splits = sorted(counts["split"].unique())
    split = (st.radio("Split", splits, horizontal=True, key="select_split", format_func=plain)
             if len(splits) > 1 else splits[0])
    counts = counts[counts["split"] == split]
    steps = sorted(int(s) for s in counts["step"].unique())
    step = select_step(steps)

    over_time = class_metrics_over_evaluations(counts, task.get("num_classes"), class_names)
    metric = st.radio("Metric", ["f1", "precision", "recall"], horizontal=True, key="select_metric")
    st.plotly_chart(class_metrics_figure(over_time, metric=metric, selected_step=step), key="class_metrics_chart")

    matrix = confusion_matrix(counts[counts["step"] == step], task.get("num_classes"))
    metrics = class_metrics(matrix, class_names)
    baseline, accuracy = majority_baseline(matrix)
    columns = st.columns(3)
    columns[0].metric("accuracy at this evaluation", f"{accuracy:.3f}", delta=f"{accuracy - baseline:+.3f} vs baseline")
    columns[1].metric("majority-class baseline", f"{baseline:.3f}",
                      help="Accuracy of always predicting the most frequent class (seed 002: the zero-rule baseline).")
    columns[2].metric("macro F1", f"{metrics['f1'].mean():.3f}")

    left, right = st.columns([3, 2])
    with left:
        normalize = st.toggle("Row-normalised", value=True, key="normalize")
        st.plotly_chart(confusion_matrix_figure(matrix, class_names, normalize=normalize), key="confusion_chart")
    with right:
        st.markdown("**Worst classes** (lowest F1)")
        st.dataframe(worst_classes(metrics, matrix, WORST_CLASSES_SHOWN).drop(columns="class_index"),
                     hide_index=True, key="worst_classes",
                     column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("precision", "recall", "f1")})
        with st.expander("All classes"):
            st.dataframe(metrics.drop(columns="class_index"), hide_index=True, key="all_classes")


main()
