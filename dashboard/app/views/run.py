"""Run: the verdict first, then the findings (causes first, each consequence
folded under its cause), the curves with the findings' steps in lanes above
them, per-layer heatmaps and the events. A running run refreshes itself.

Every chart is built and sent once per run of the script: the findings come
before the charts (from the findings cache; a big run's first diagnosis makes
the page wait for it), so no chart is drawn bare and then again shaded.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import streamlit as st

from traindoctor.dashboard.app.charts.curves import curve_figure
from traindoctor.dashboard.app.charts.layers import grad_norm_heatmap_figure, update_ratio_heatmap_figure
from traindoctor.dashboard.app.text import inline_code, plain
from traindoctor.dashboard import data
from traindoctor.dashboard.data import RunView
from traindoctor.diagnosis.engine import RECORDS
from traindoctor.diagnosis.finding import Finding
from traindoctor.diagnosis.live import finding_from_detail
from traindoctor.diagnosis.report import interrupted_by_user, verdict_headline
from traindoctor.diagnosis.records import Evidence
from traindoctor.diagnosis.verdict import Verdict, groups, verdict
from traindoctor.numbers import significant
from traindoctor.store.catalog import TRAIN_LOSS_TAIL
from traindoctor.dashboard.app.views import common

# Which chart holds a finding's evidence comes from its rule's record; a
# finding of a rule without one (a user's own rule) is shown on the loss.
DEFAULT_EVIDENCE = Evidence.series("loss")
# Which figure draws each per-layer statistic.
HEATMAP_FIGURES = {"update_ratio": update_ratio_heatmap_figure, "grad_norm": grad_norm_heatmap_figure}
# A finding's chart shows this share of its own width on either side (at least
# a few steps), so the lead-up and the aftermath are visible.
EVIDENCE_MARGIN_SHARE = 0.25
MIN_EVIDENCE_MARGIN_STEPS = 5
MAX_EVENT_ROWS = 500
# Curves drawn without a smoothed line and band: set by the user, not measured.
UNSMOOTHED = frozenset({"lr", "amp_scale"})


def evidence_range(finding: Finding) -> tuple[float, float] | None:
    if finding.step_range is None:
        return None
    start, end = finding.step_range
    margin = max(MIN_EVIDENCE_MARGIN_STEPS, (end - start) * EVIDENCE_MARGIN_SHARE)
    return start - margin, end + margin


def split_series(points: pd.DataFrame, name: str) -> pd.DataFrame:
    return points[points["name"] == name]


def show_evidence_chart(view: RunView, finding: Finding, index: int) -> None:
    """The chart (or events) behind one finding, zoomed on its steps."""
    key = f"evidence_{index}"
    record = RECORDS.get(finding.rule)
    evidence = record.evidence if record is not None else DEFAULT_EVIDENCE
    if evidence.chart == "events":
        # Set-up rules judge what the probe saw, not a curve: their evidence is the events.
        related = view.events[view.events["kind"] == finding.rule]
        if not related.empty:
            st.dataframe(related[["step", "kind", "detail"]].head(MAX_EVENT_ROWS), hide_index=True,
                         key=key)
        return
    x_range = evidence_range(finding)
    cache_key = ("evidence", *_version(view), evidence.chart, evidence.name, common.findings_key([finding]))
    if evidence.chart == "heatmap":
        frame = layer_frame(view, evidence.name)
        if not frame.empty:
            def build():
                figure = HEATMAP_FIGURES[evidence.name](frame, findings=[finding])
                return figure.update_xaxes(range=list(x_range)) if x_range else figure

            st.plotly_chart(common.figure(cache_key, build), key=key)
        return
    series = split_series(view.curves, evidence.name)
    if not series.empty:
        st.plotly_chart(common.figure(cache_key, lambda: curve_figure(
            series, title=evidence.name, findings=[finding], x_range=x_range)), key=key)
    if finding.rule in common.CLASS_RULES:
        query = {"run": st.query_params.get("run", view.meta["run_id"])}
        if finding.step_end is not None:
            query["step"] = str(finding.step_end)
        st.page_link(common.CLASSES_PAGE, label="Per-class view", icon=":material/category:", query_params=query)


def show_header(meta: dict, points: pd.DataFrame) -> None:
    last_step = int(points["step"].max()) if not points.empty else 0
    columns = st.columns(4)
    columns[0].metric("status", plain(common.STATUS_MARKERS.get(meta["status"], meta["status"])))
    columns[1].metric("last step", f"{last_step:,}")
    columns[2].metric("started (UTC)", common.format_time(meta.get("created_at"), short=True))
    # The smoothed training loss of the run catalog, as the Runs page shows it: the last minibatch's is noise.
    columns[3].metric(f"train loss (mean of last {TRAIN_LOSS_TAIL})", significant(common.train_loss(meta["run_id"]))
                      or "–", help="mean of the last logged training losses (store.catalog.train_loss_tail)")
    with st.expander("Hyperparameters and environment"):
        left, right = st.columns(2)
        left.json(meta.get("config") or {}, expanded=True)
        right.json({"task": meta.get("task") or {}, "env": meta.get("env") or {}}, expanded=False)


def _version(view: RunView) -> tuple:
    """(run id, data version) of the run a view shows: the first part of its figures' cache keys."""
    run_id = view.meta["run_id"]
    return run_id, data.run_version(common.store(), run_id)


def show_curves(points: pd.DataFrame, lr_points: pd.DataFrame, found: list[Finding], run_id: str,
                version: tuple) -> None:
    """Draw the curves, each once, with the findings' steps in lanes above them."""
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
                log_y = st.toggle(f"log scale ({name})", value=log_default and _spans_decades(series),
                                  key=f"log_{name}")
                # The lr is a schedule, not a noisy measurement: nothing to smooth (three traces fewer to draw).
                smoothed = smooth and name not in UNSMOOTHED
                st.plotly_chart(common.figure(
                    ("curve", run_id, version, name, log_y, smoothed, common.findings_key(found)),
                    lambda series=series, name=name, log_y=log_y, smoothed=smoothed: curve_figure(
                        series, title=name, findings=found, log_y=log_y, smooth=smoothed)),
                    key=f"chart_{name}")


LAYER_VIEWS = {"update / weight ratio": "update_ratio", "gradient norm": "grad_norm"}


def layer_frame(view: RunView, name: str) -> pd.DataFrame:
    return view.update_ratio if name == "update_ratio" else common.heatmap(view.meta["run_id"], name)


def show_layers(view: RunView, found: list[Finding]) -> None:
    """One per-layer heatmap at a time: each costs a scan of the run's per-layer rows."""
    st.subheader("Layers")
    choice = st.radio("Per-layer statistic", list(LAYER_VIEWS), horizontal=True, key="layer_view")
    name = LAYER_VIEWS[choice]
    frame = layer_frame(view, name)
    if frame.empty:
        st.caption(f"No per-layer {name} recorded.")
        return
    builder = HEATMAP_FIGURES[name]
    if name == "update_ratio":
        st.caption("Seed 004: a healthy update/weight ratio is about 1e-3 (white). "
                   "Blue layers barely learn; red ones take steps too large for their weights.")
    st.plotly_chart(common.figure(("heatmap", *_version(view), name, common.findings_key(found)),
                                  lambda: builder(frame, findings=found)), key=f"heatmap_{name}")


def describe_event(kind: str, detail: str) -> str:
    if kind == "config_lint":
        try:
            parsed = json.loads(detail)
            return f"{parsed.get('rule', '')}: {parsed.get('message', '')}"
        except (TypeError, ValueError):
            return str(detail)
    if kind == "live_finding":
        finding = finding_from_detail(detail)
        return str(detail) if finding is None else f"{finding.rule} ({finding.severity}): {finding.title}"
    if kind == "crash":
        # The traceback is shown whole above; its last line names the error.
        lines = [line for line in str(detail or "").splitlines() if line.strip()]
        return lines[-1] if lines else ""
    return "" if detail is None else str(detail)


def show_live_findings(events: pd.DataFrame, running: bool) -> None:
    """The findings the probe's live checks raised while the run trained, each with when it was first raised."""
    raised = events[events["kind"] == "live_finding"]
    if raised.empty:
        return
    # Each rank runs the live checks on its own records: a finding every rank
    # raised is one line, with the first time any rank raised it.
    first: dict[tuple[str, str], tuple] = {}
    ranks: dict[tuple[str, str], set] = {}
    ranks_of = raised["rank"] if "rank" in raised else [0] * len(raised)
    for step, wall, detail, rank in zip(raised["step"], raised["wall_time"], raised["detail"], ranks_of):
        finding = finding_from_detail(detail)
        if finding is None:
            continue
        key = (finding.rule, finding.severity)
        ranks.setdefault(key, set()).add(rank)
        first.setdefault(key, (step, wall, finding))  # events come oldest first
    if not first:
        return
    st.markdown("**● Raised live while the run trains**" if running else "**Raised live during training**")
    for key, (step, wall, finding) in first.items():
        when = "" if step is None or step != step else f"step {int(step):,}, "
        by = f", by {len(ranks[key])} ranks" if len(ranks[key]) > 1 else ""
        st.markdown(f"{common.severity_badge(finding.severity)} {plain(finding.title)} "
                    f"({inline_code(finding.rule)}): first raised at {plain(when + common.format_time(wall))}{by}")


def show_events(frame: pd.DataFrame) -> None:
    st.subheader("Events")
    if frame.empty:
        st.caption("No events: no AMP skips, no train/eval mode mistakes, no config warnings, no crash.")
        return
    for crash in frame.loc[frame["kind"] == "crash", "detail"]:
        lines = [line.strip() for line in str(crash).splitlines() if line.strip()]
        if lines and lines[-1] == "KeyboardInterrupt":
            st.info("The run was stopped by its user (Ctrl-C: KeyboardInterrupt).")
        else:
            st.error("The run crashed.")
        st.code(crash, language="python")
    counts = frame["kind"].value_counts()
    st.caption(" · ".join(f"{plain(kind)}: {count}" for kind, count in counts.items()))
    shown = frame.head(MAX_EVENT_ROWS)
    columns = ["step", "time", "kind", "detail"]
    if "rank" in shown and shown["rank"].nunique() > 1:
        columns.insert(0, "rank")  # a run of several ranks: whose event it is
    shown = shown.assign(detail=[describe_event(kind, detail) for kind, detail in zip(shown["kind"], shown["detail"])],
                         time=shown["wall_time"].map(common.format_time))[columns]
    if len(frame) > MAX_EVENT_ROWS:
        st.caption(f"The first {MAX_EVENT_ROWS} of {len(frame)} events.")
    st.dataframe(shown, hide_index=True, width="stretch", key="events_table")


def show_run(run_id: str, was_running: bool) -> None:
    view = common.run_view(run_id)
    if was_running and view.meta["status"] != "running":
        st.rerun(scope="app")  # finished while watched: stop the timer
    # The findings before any chart: each chart is then built and sent once, with
    # the findings' steps drawn (a big run's first diagnosis takes seconds, then it is cached).
    with st.spinner("Diagnosing…"):
        found, problem = common.findings(run_id)
    empty = common.recorded_steps(run_id) == 0
    status = view.meta["status"]
    if status == "crashed" and interrupted_by_user(SimpleNamespace(status=status, events=view.events)):
        status = "interrupted"  # Ctrl-C: run.json says crashed; the verdict says what diagnose says
    show_verdict(verdict(found) if not problem else None, found, problem, status, empty=empty)
    show_header(view.meta, view.curves)
    st.subheader("Findings")
    show_live_findings(view.events, view.meta["status"] == "running")
    if found:
        st.caption(" · ".join(common.severity_badge(s, n) for s, n in common.severity_counts(found).items() if n))
    show_findings(view, found, problem, empty=empty)
    show_curves(view.curves, view.lr, found, *_version(view))
    show_layers(view, found)
    show_events(view.events)


def show_verdict(found: Verdict | None, findings: list[Finding], problem: str | None, status: str,
                 empty: bool = False) -> None:
    """The verdict line: the most likely cause in one sentence, its evidence and the one thing to try first.
    A run that recorded no training step (``empty``) gets no "no problem found", as in ``traindoctor
    diagnose``: nothing vouches for it."""
    if problem:
        return  # show_findings says why there is no diagnosis
    if found is None and empty:
        headline = verdict_headline(None, findings, status, empty=True)
        (st.info if status == "running" else st.warning)(f"**Verdict:** {plain(headline)}")
        return
    if found is None:
        if status == "crashed":
            st.error("**Verdict:** the run crashed, and no rule names a cause in what was recorded "
                     "(the traceback is under Events).")
        elif status == "interrupted":
            st.info("**Verdict:** interrupted by its user (Ctrl-C: KeyboardInterrupt) before it finished; "
                    "no rule names a cause in what was recorded.")
        else:
            hints = sum(f.severity == "info" for f in findings)
            st.success("**Verdict:** no problem found" + (f" ({hints} hint(s) below)." if hints else "."))
        return
    box = st.error if found.severity == "critical" else st.warning
    explains = f"  \nIt also explains: {plain(', '.join(found.explains))}." if found.explains else ""
    box(f"**Verdict: {plain(found.sentence)}**  \n{plain(found.evidence)}  \n"
        f"**Try first:** {plain(found.try_first)}{explains}")


def show_findings(view: RunView, found: list[Finding], problem: str | None, empty: bool = False) -> None:
    """Causes first, each an expander with the consequences it explains folded inside it; the verdict's
    finding is the first and the only one open.

    Each group is a fragment whose expander reruns only itself when opened
    or closed, and its evidence charts are built only while it is open: a
    run with a dozen findings sends the charts of the one being read, and
    opening another leaves every chart already drawn alone."""
    if problem:
        st.warning(f"No diagnosis: {plain(problem)}")
        return
    if not found and empty:
        st.caption("No findings: no training step to judge.")
        return
    if not found:
        st.success("No findings: nothing in this run breaks the rules of thumb.")
        return
    first = verdict(found)
    for positions in groups(found):
        opened = first is not None and positions[0] == first.index
        st.fragment(show_finding_group)(view, found, positions, opened)


def show_finding_group(view: RunView, found: list[Finding], positions: list[int], opened: bool) -> None:
    """One cause (or a finding on its own) and its consequences, in an expander drawing its charts while open."""
    head = found[positions[0]]
    expander = st.expander(common.finding_heading(head), expanded=opened, on_change="rerun",
                           key=f"finding_{view.meta['run_id']}_{positions[0]}_{head.rule}")
    with expander:
        common.show_finding_text(head)
        if expander.open:
            show_evidence_chart(view, head, positions[0])
        common.show_finding_evidence(head)
        for index in positions[1:]:
            consequence = found[index]
            with st.container(border=True):
                st.markdown(f"↳ {common.finding_heading(consequence)} · explained by "
                            f"{inline_code(consequence.explained_by)}")
                common.show_finding_text(consequence)
                if expander.open:
                    show_evidence_chart(view, consequence, index)
                common.show_finding_evidence(consequence)


# A log axis helps once a positive series spans this factor (a decade); below
# that it only squeezes the interesting part.
LOG_SCALE_MIN_SPAN = 10.0


def _spans_decades(series: pd.DataFrame) -> bool:
    values = series["value"]
    finite = values[values.notna() & (values.abs() != float("inf"))]
    if finite.empty or (finite <= 0).any():
        return False
    return bool(finite.max() / finite.min() >= LOG_SCALE_MIN_SPAN)


def main() -> None:
    if not common.store().catalog.has_runs():
        st.title("Run")
        common.show_empty_store()
        return
    title = st.empty()
    title.title("Run")
    run_id, choices = common.select_run()
    status = choices.statuses[run_id]
    title.title(plain(choices.labels[run_id]))
    live = status == "running"
    if live:
        st.caption(f"● Live: refreshing every {common.LIVE_REFRESH_S:g} s while the run writes.")
    st.fragment(common.store_guarded(show_run), run_every=common.LIVE_REFRESH_S if live else None)(run_id, live)


main()
