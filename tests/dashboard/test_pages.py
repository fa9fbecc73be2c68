"""AppTest tests of every page, on stores built in the test."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from traindoctor.dashboard.app.charts.classes import confusion_matrix
from traindoctor.dashboard.app.text import WORD_JOINER, inline_code, plain
from traindoctor.diagnosis.finding import Finding
from traindoctor.store.segments import RunWriter
from tests.dashboard.factories import HOSTILE_FRAGMENTS, hostile, make_hostile_run, make_run, write_steps

pytestmark = pytest.mark.slow  # each AppTest run imports and renders the whole app (seconds on 2 cores)


def shown(markdown: str) -> str:
    """What the browser shows for Markdown that :func:`plain` escaped: the escapes and word joiners gone."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace(WORD_JOINER, "")


def texts(at) -> str:
    """Everything written as markdown, captions, alerts and expander labels, as the reader sees it."""
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "success", "error") for e in at.get(kind)]
    parts += [e.label for e in at.expander]
    return shown("\n".join(str(p) for p in parts))


def table_with(at, column: str):
    """The first table shown with ``column`` (among its columns or as its index name)."""
    for element in at.dataframe:
        frame = element.value
        if column in frame.columns or frame.index.name == column:
            return frame
    raise AssertionError(f"no table with column {column!r}")


def chart(at, key: str) -> str:
    """The plotly spec (JSON, spaces removed) of the chart drawn with ``key``
    (or its redraw with the findings shaded)."""
    for element in at.get("plotly_chart"):
        if element.proto.id.endswith((f"-{key}", f"-{key}_shaded", f"-{key}_marked")):
            return element.proto.spec.replace(" ", "")
    raise AssertionError(f"no chart with key {key!r}")


def no_exceptions(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


# ------------------------------------------------------------------------ Runs

def test_root_opens_the_runs_page(app):
    at = app()
    no_exceptions(at)
    assert [t.value for t in at.title] == ["Runs"]


def test_runs_table_lists_runs_with_status_and_findings(app, store, fake_diagnosis):
    _, ids = store
    at = app("views/runs.py")
    no_exceptions(at)
    table = at.dataframe[0].value.set_index("name")
    assert sorted(table.index) == ["alpha", "beta", "gamma"]
    assert table.loc["beta", "status"] == "✖ crashed"
    assert table.loc["alpha", "status"] == "✔ finished"
    assert table.loc["beta", "critical"] == 1 and table.loc["alpha", "critical"] == 0
    assert table.loc["gamma", "last_step"] == 200
    assert table.loc["gamma", "lr"] == "1e-02" and table.loc["gamma", "batch_size"] == "64"  # significant digits
    assert table.loc["alpha", "open"] == f"run?run={ids['alpha']}"


@pytest.mark.parametrize(("name_filter", "statuses", "expected"), [
    ("alp", [], ["alpha"]),
    ("", ["crashed"], ["beta"]),
    ("a", ["finished"], ["alpha", "gamma"]),
], ids=["by-name", "by-status", "both"])
def test_runs_filters_change_the_rows(app, name_filter, statuses, expected):
    at = app("views/runs.py")
    at.text_input(key="runs_filter").set_value(name_filter)
    at.multiselect(key="runs_status").set_value(statuses)
    at.run()
    no_exceptions(at)
    assert sorted(at.dataframe[0].value["name"]) == expected


def test_runs_filter_matching_nothing_and_a_page_past_the_end_show_pages_that_make_sense(app):
    # Both were Streamlit's "This app has encountered an error" box: an empty page of rows made the
    # link column a float column ("run?run=" + a float Series).
    at = app("views/runs.py")
    at.text_input(key="runs_filter").set_value("no-run-has-this-name").run()
    no_exceptions(at)
    assert len(at.dataframe[0].value) == 0
    assert "0–0 of 0 matching runs (3 in the store), page 1 of 1." in texts(at)
    at.text_input(key="runs_filter").set_value("").run()
    at.number_input(key="runs_page").set_value(99999).run()
    no_exceptions(at)
    assert sorted(at.dataframe[0].value["name"]) == ["alpha", "beta", "gamma"]
    assert "page 99,999 is past the last: 1–3 of 3 matching runs (3 in the store), page 1 of 1." in texts(at)
    # A query that cannot be read shows every run, from page 1 (it was queried again after the
    # visible rows' diagnoses, raising FilterError).
    at.text_input(key="runs_query").set_value("nosuchkey>3").run()
    no_exceptions(at)
    assert "1–3 of 3 matching runs (3 in the store), page 1 of 1." in texts(at)


def test_empty_store_shows_how_to_record_a_run(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.dashboard.conftest import APP, APP_TIMEOUT_S

    monkeypatch.setenv("TRAINDOCTOR_STORE", str(tmp_path / "nothing-here"))
    for page in ("views/runs.py", "views/run.py", "views/classes.py", "views/compare.py"):
        at = AppTest.from_file(APP, default_timeout=APP_TIMEOUT_S).run()
        at.switch_page(page).run()
        no_exceptions(at)
        shown = texts(at)
        assert "probe.watch(model, optimizer)" in shown and "probe.step(loss=loss)" in shown, page


# ------------------------------------------------------------------------- Run

def test_run_page_shows_findings_first_with_evidence(app, fake_diagnosis):
    at = app("views/run.py", run="beta")
    no_exceptions(at)
    assert at.title[0].value == "beta"
    finding = [e for e in at.expander if "divergence" in e.label]
    assert len(finding) == 1 and "critical" in finding[0].label and "steps 150–200" in finding[0].label
    inside = "\n".join(m.value for m in finding[0].markdown)
    assert "NaN from step 150" in inside and "Lower the learning rate" in inside
    assert finding[0].get("plotly_chart"), "the finding's evidence chart is missing"
    assert finding[0].json[0].value  # the evidence numbers


def test_run_page_without_findings_says_so(app, fake_diagnosis):
    at = app("views/run.py", run="alpha")
    no_exceptions(at)
    assert not [e for e in at.expander if "divergence" in e.label]
    assert any("No findings" in s.value for s in at.success)


def test_run_page_of_a_run_without_a_training_step_says_nothing_was_recorded(app, store):
    # TensorBoard's add_hparams folder, an eval-only log: `traindoctor diagnose` says NOTHING
    # RECORDED, and the Run page said "no problem found".
    root, _ = store
    writer = RunWriter(root, name="evals-only", background=False)
    writer.add_scalars(step=np.array([100, 200]), value=np.array([2.0, 1.5]), split="val", name="loss")
    writer.close("finished")
    at = app("views/run.py", run="evals-only")
    no_exceptions(at)
    assert not any("no problem found" in str(s.value) for s in at.success), [s.value for s in at.success]
    assert any("NOTHING RECORDED" in shown(w.value) for w in at.warning), [w.value for w in at.warning]
    assert any("no training step to judge" in c.value for c in at.caption)


def test_run_page_of_a_run_stopped_with_ctrl_c_says_interrupted_not_crashed(app, store):
    root, _ = store
    writer = RunWriter(root, name="stopped", background=False)
    writer.add_scalars(step=np.arange(1, 41), value=np.full(40, 2.0), name="loss")
    writer.close("crashed", detail="Traceback (most recent call last):\n  File \"train.py\", line 9\nKeyboardInterrupt")
    at = app("views/run.py", run="stopped")
    no_exceptions(at)
    assert any("interrupted by its user" in str(i.value) for i in at.info), [i.value for i in at.info]
    assert any("stopped by its user" in str(i.value) for i in at.info)
    assert not any("crashed" in str(e.value) for e in at.error), [e.value for e in at.error]


def test_run_page_has_curves_heatmaps_toggles_and_events(app):
    at = app("views/run.py", run="beta")
    no_exceptions(at)
    toggles = {t.key for t in at.toggle}
    assert {"smooth", "log_loss", "log_accuracy", "log_lr", "log_grad_norm"} <= toggles
    for key in ("chart_loss", "chart_accuracy", "chart_lr", "chart_grad_norm", "heatmap_update_ratio"):
        assert chart(at, key)
    at.radio(key="layer_view").set_value("gradient norm").run()
    no_exceptions(at)
    assert '"title":{"text":"gradientnormperlayer"' in chart(at, "heatmap_grad_norm")
    events = table_with(at, "kind")
    assert set(events["kind"]) == {"nan_loss", "config_lint", "crash"}
    assert any("RuntimeError: boom" in c.value for c in at.code)  # the crash traceback, in full
    lint = events.loc[events["kind"] == "config_lint", "detail"].iloc[0]
    assert lint == "weight_decay_on_norm_and_bias: weight decay on 4 norm/bias tensors"


def broken_rule(run):
    raise ZeroDivisionError("a rule divided by zero")


def test_run_page_with_a_broken_rule_still_shows_the_run(app, monkeypatch):
    import traindoctor.diagnosis

    monkeypatch.setattr(traindoctor.diagnosis, "diagnose", broken_rule)
    at = app("views/run.py", run="beta")
    no_exceptions(at)
    assert "No diagnosis: diagnosis failed: ZeroDivisionError: a rule divided by zero" in [shown(w.value) for w in at.warning]
    assert chart(at, "chart_loss") and chart(at, "heatmap_update_ratio")


@pytest.mark.parametrize("page, query", [(None, {}), ("views/run.py", {"run": "beta"}),
                                         ("views/classes.py", {"run": "beta"}),
                                         ("views/compare.py", {"runs": "alpha,beta"})])
def test_a_store_that_stops_answering_is_one_line_on_the_page(app, monkeypatch, page, query):
    # A bucket gone unreachable while the dashboard runs: every page was Streamlit's "This app has
    # encountered an error" box and a traceback in the terminal.
    from traindoctor.store.catalog import Catalog
    from traindoctor.store.errors import StoreError
    from traindoctor.store.reader import Store

    at = app(page, **query)
    no_exceptions(at)

    def unreachable(*args, **kwargs):
        raise StoreError("store s3://team/runs is unreachable: Could not connect to the endpoint URL.")

    monkeypatch.setattr(Store, "runs", unreachable)
    monkeypatch.setattr(Catalog, "listing", unreachable)
    at.run()
    no_exceptions(at)
    assert [shown(e.value) for e in at.error] == [
        "store s3://team/runs is unreachable: Could not connect to the endpoint URL. "
        "The page shows again once the store answers: reload it to retry."]


def test_run_page_selecting_another_run_changes_page_and_link(app, fake_diagnosis, store):
    at = app("views/run.py", run="beta")
    at.selectbox(key="select_run").set_value(store[1]["gamma"]).run()
    no_exceptions(at)
    assert at.title[0].value == "gamma"
    assert at.query_params["run"] == "gamma"
    assert not [e for e in at.expander if "divergence" in e.label]


def test_run_page_log_toggle_switches_axis(app):
    at = app("views/run.py", run="alpha")
    at.toggle(key="log_loss").set_value(False).run()
    no_exceptions(at)
    assert '"type":"linear"' in chart(at, "chart_loss")
    at.toggle(key="log_loss").set_value(True).run()
    assert '"type":"log"' in chart(at, "chart_loss")


def test_run_page_of_a_running_run_shows_new_steps_after_they_land(app, store, monkeypatch):
    root, _ = store
    writer = make_run(root, "live", steps=100, status="running", seed=5)
    try:
        at = app("views/run.py", run="live")
        no_exceptions(at)
        last = {m.label: m.value for m in at.metric}["last step"]
        assert last == "100"
        assert "Live: refreshing" in texts(at)
        write_steps(writer, 101, 151, seed=5)
        writer.flush()
        at.run()
        no_exceptions(at)
        assert {m.label: m.value for m in at.metric}["last step"] == "150"
    finally:
        writer.close()


def test_run_page_marks_live_findings_with_when_they_were_first_raised(app, store, fake_diagnosis):
    root, _ = store
    detail = json.dumps(Finding(rule="divergence", severity="critical", title="Training diverged", message="NaN.",
                                advice="Lower the lr.", step_start=31, step_end=40).to_dict())
    writer = make_run(root, "doomed", steps=60, status="running", events=(("live_finding", detail, 40),))
    try:
        at = app("views/run.py", run="doomed")
        no_exceptions(at)
        marks = [m.value for m in at.markdown if "first raised at" in m.value]
        assert len(marks) == 1 and "critical" in marks[0] and "Training diverged" in marks[0]
        assert "first raised at step 40, " in shown(marks[0]) and "UTC" in shown(marks[0])
        assert any("Raised live while the run trains" in m.value for m in at.markdown)
        events = table_with(at, "kind")
        assert events.loc[events["kind"] == "live_finding", "detail"].tolist() == [
            "divergence (critical): Training diverged"]
    finally:
        writer.close()


def test_run_page_lists_a_live_finding_every_rank_raised_once(app, store, fake_diagnosis):
    """Each rank runs the live checks on its own records: two ranks raising one divergence is
    one line, at the first rank's step, saying how many ranks raised it."""
    root, _ = store
    detail = json.dumps(Finding(rule="divergence", severity="critical", title="Training diverged", message="NaN.",
                                advice="Lower the lr.", step_start=31, step_end=40).to_dict())
    writer = make_run(root, "doomed-ddp", steps=60, status="running", events=(("live_finding", detail, 40),))
    other = RunWriter(root, run_id=writer.run_id, rank=1, world_size=2, background=False)
    try:
        other.add_event("live_finding", detail, step=42)
        other.flush()
        at = app("views/run.py", run="doomed-ddp")
        no_exceptions(at)
        marks = [shown(m.value) for m in at.markdown if "first raised at" in m.value]
        assert len(marks) == 1 and "first raised at step 40, " in marks[0] and marks[0].endswith("by 2 ranks")
        events = table_with(at, "kind")
        assert sorted(events.loc[events["kind"] == "live_finding", "rank"]) == [0, 1]
    finally:
        other.close()
        writer.close()

@pytest.mark.parametrize(("page", "reference", "suggested"), [
    ("views/run.py", "no-such-run", []),
    ("views/run.py", "alpah", ["alpha"]),
    ("views/classes.py", "gama", ["gamma"]),
], ids=["run-nothing-close", "run-typo", "classes-typo"])
def test_unknown_run_in_link_is_an_error_with_close_matches(app, page, reference, suggested):
    """Regression (#17): /run?run=nope silently showed another run."""
    at = app(page, run=reference)
    no_exceptions(at)
    assert len(at.error) == 1 and reference in at.error[0].value
    assert [link.proto.label for link in at.get("page_link")] == [f"Open {name}" for name in suggested]
    assert [link.proto.query_string for link in at.get("page_link")] == [f"run={name}" for name in suggested]
    assert not at.get("plotly_chart") and not at.expander  # no other run's page


def test_unknown_runs_in_a_compare_link_are_named(app):
    at = app("views/compare.py", runs="alpha,betta,gamma")
    no_exceptions(at)
    assert len(at.error) == 1 and "betta" in at.error[0].value and "beta" in at.error[0].value


# --------------------------------------------------------------------- Classes

def test_classes_page_matches_hand_computed_baseline(app, store):
    root, ids = store
    at = app("views/classes.py", run="alpha")
    no_exceptions(at)
    assert chart(at, "class_metrics_chart") and chart(at, "confusion_chart")
    assert at.query_params["step"] == "200"  # the last evaluation by default
    from traindoctor.store.reader import Store

    counts = Store(root).confusion([ids["alpha"]], step=200)
    matrix = confusion_matrix(counts)
    baseline = matrix.sum(axis=1).max() / matrix.sum()
    accuracy = np.trace(matrix) / matrix.sum()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["majority-class baseline"] == f"{baseline:.3f}"
    assert metrics["accuracy at this evaluation"] == f"{accuracy:.3f}"
    worst = table_with(at, "most_confused_with")
    assert worst["class"].iloc[0] == "class0"  # the factory gives class 0 the fewest correct


def test_classes_page_choosing_an_evaluation_changes_matrix_and_link(app):
    at = app("views/classes.py", run="alpha")
    before = {m.label: m.value for m in at.metric}["accuracy at this evaluation"]
    at.select_slider(key="select_step").set_value(20).run()
    no_exceptions(at)
    assert at.query_params["step"] == "20"
    assert {m.label: m.value for m in at.metric}["accuracy at this evaluation"] != before


def test_classes_page_step_from_link_is_used(app):
    at = app("views/classes.py", run="alpha", step="45")
    no_exceptions(at)
    assert at.select_slider(key="select_step").value == 40  # the evaluation at or before step 45


# --------------------------------------------------------------------- Compare

def test_compare_page_overlays_chosen_runs_and_lists_differences(app, fake_diagnosis):
    at = app("views/compare.py", runs="alpha,beta")
    no_exceptions(at)
    overlay = chart(at, "compare_chart")
    assert '"name":"alpha"' in overlay and '"name":"beta"' in overlay
    differing = table_with(at, "hyperparameter")
    assert list(differing.index) == ["lr"]  # batch_size is 32 in both
    assert [e for e in at.expander if "divergence" in e.label]  # beta's finding, side by side


def test_compare_page_changing_runs_changes_table_and_link(app, store):
    _, ids = store
    at = app("views/compare.py", runs="alpha,beta")
    at.multiselect(key="select_runs").set_value([ids["alpha"], ids["gamma"]]).run()
    no_exceptions(at)
    assert at.query_params["runs"] == "alpha,gamma"
    assert sorted(table_with(at, "hyperparameter").index) == ["batch_size", "lr"]


@pytest.mark.parametrize("axis", ["step", "epoch", "wall time"])
def test_compare_page_axes(app, axis):
    at = app("views/compare.py", runs="alpha,gamma")
    at.radio(key="compare_axis").set_value(axis).run()
    no_exceptions(at)
    assert chart(at, "compare_chart")


def test_compare_page_parallel_coordinates_of_the_chosen_runs_only(app):
    """Regression (#17): the parallel coordinates plotted every run of the store, not the chosen ones."""
    at = app("views/compare.py", runs="alpha,beta,gamma")
    no_exceptions(at)
    spec = json.loads(chart(at, "parallel_chart"))["data"][0]
    assert spec["type"] == "parcoords"
    values = spec["dimensions"][0]["values"]  # plotly sends arrays as base64 of their dtype
    assert len(np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])) == 3
    assert [d["label"] for d in spec["dimensions"][:-1]] == ["lr(log10)", "batch_size"]  # spaces removed by chart()
    fewer = app("views/compare.py", runs="alpha,gamma")
    assert not [e for e in fewer.get("plotly_chart") if e.proto.id.endswith("-parallel_chart")]


# ------------------------------------------------------------- real diagnosis

def test_real_diagnosis_shows_divergence_on_the_run_page(app):
    at = app("views/run.py", run="beta")
    no_exceptions(at)
    labels = [e.label for e in at.expander]
    assert any("`divergence`" in label for label in labels), labels
    alpha = app("views/run.py", run="alpha")
    assert not any("`divergence`" in e.label for e in alpha.expander)


@pytest.mark.parametrize(("rows", "label", "page", "query"), [
    # Rows are worst first (beta's loss turns NaN: critical), then newest first: beta, gamma, alpha.
    ([0], "Open beta", "run", "run=beta"),
    ([0, 2], "Compare 2 runs", "compare", "runs=beta%2Calpha"),
], ids=["one-opens-run", "several-compare"])
def test_selecting_rows_links_to_run_or_compare(app, rows, label, page, query):
    at = app("views/runs.py")
    at.session_state["runs_table"] = {"selection": {"rows": rows, "columns": [], "cells": []}}
    at.run()
    no_exceptions(at)
    links = at.get("page_link")
    assert len(links) == 1
    assert links[0].proto.label == label
    link = links[0].proto
    assert (link.label, link.page, link.query_string) == (label, page, query)


def test_each_curve_is_sent_once_with_the_findings_steps_in_a_lane(app, fake_diagnosis):
    """Regression (#17): each chart was built and sent twice, bare and then shaded."""
    at = app("views/run.py", run="beta")
    no_exceptions(at)
    ids = [element.proto.id.rsplit("-", 1)[-1] for element in at.get("plotly_chart")]
    assert len(ids) == len(set(ids)) and not [i for i in ids if i.endswith(("_shaded", "_marked"))]
    loss = json.loads(chart(at, "chart_loss"))
    lanes = [trace for trace in loss["data"] if trace.get("yaxis") == "y2"]
    assert [(min(t["x"]), max(t["x"])) for t in lanes] == [(150, 200)]  # never wider than its steps
    assert all(trace["type"] == "scatter" for trace in loss["data"])  # SVG: no WebGL context


@pytest.mark.parametrize("page", ["views/runs.py", "views/run.py", "views/classes.py", "views/compare.py"],
                         ids=["runs", "run", "classes", "compare"])
def test_a_run_that_has_written_nothing_yet_breaks_no_page(tmp_path, monkeypatch, page):
    from streamlit.testing.v1 import AppTest

    from traindoctor.store.segments import RunWriter
    from tests.dashboard.conftest import APP, APP_TIMEOUT_S

    writer = RunWriter(tmp_path, name="fresh", background=False)  # run.json only, no segments
    monkeypatch.setenv("TRAINDOCTOR_STORE", str(tmp_path))
    try:
        at = AppTest.from_file(APP, default_timeout=APP_TIMEOUT_S).run()
        at.switch_page(page).run()
        no_exceptions(at)
    finally:
        writer.close()


def test_no_pages_folder_beside_the_app():
    """Regression: with a ``pages/`` folder next to the app's main script, Streamlit
    served it as an old-style multipage app (sidebar of every module, no top
    navigation, no wide layout) instead of the pages ``st.navigation`` declares."""
    from traindoctor.dashboard import serve

    assert not (serve.APP_PATH.parent / "pages").exists()


# ------------------------------------------------------------- names from the run

def markdown_values(at) -> list[str]:
    """Every value Streamlit renders as Markdown: titles, text and alerts, and the labels of
    expanders, metrics (their values too), radio options, page links, tabs and widgets."""
    values = [e.value for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning",
                                   "error", "success") for e in at.get(kind)]
    values += [e.label for e in at.expander] + [t.label for t in at.tabs]
    values += [v for m in at.metric for v in (m.label, m.value)]
    values += [option for radio in at.radio for option in [radio.label, *radio.options]]
    values += [link.proto.label for link in at.get("page_link")]
    values += [w.label for kind in ("selectbox", "multiselect", "toggle", "select_slider", "text_input")
               for w in at.get(kind)]
    return [str(v) for v in values]


def unescaped(markdown: str) -> str:
    """Markdown without its backslash-escaped characters: what is left can still be markup."""
    return re.sub(r"\\[!-/:-@\[-`{-~]", "", markdown)


def chart_texts(at) -> list[str]:
    """Every string in every plotly figure on the page."""
    def strings(value):
        if isinstance(value, str):
            return [value]
        items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
        return [s for item in items for s in strings(item)]

    return [s for element in at.get("plotly_chart") for s in strings(json.loads(element.proto.spec))]


def hostile_findings(run) -> list[Finding]:
    """Findings that quote the run's names, as rules do (a layer in the title, a class in the message)."""
    return [
        Finding(rule=hostile("rule"), severity="warning", title=hostile("title"), message=hostile("message"),
                advice=hostile("advice"), step_start=5, step_end=9, source=hostile("source")),
        Finding(rule="underperforming_classes", severity="warning", title="1 class(es) far below the rest",
                message=f"In the val evaluation at step 60: {hostile('class')} has recall 0.50.",
                advice="Inspect it.", step_start=60, step_end=60),
    ]


@pytest.fixture()
def hostile_app(tmp_path, monkeypatch):
    """The app on a store whose newest run has a hostile name, layer, class, split, metric,
    config key and value and event; two plain runs beside it (Compare's parallel view needs three)."""
    from streamlit.testing.v1 import AppTest

    import traindoctor.diagnosis
    from tests.dashboard.conftest import APP, APP_TIMEOUT_S

    root = tmp_path / "runs"
    make_run(root, "alpha", seed=1)
    make_run(root, "beta", config={"lr": 1.0, "batch_size": 32}, seed=2)
    run_id = make_hostile_run(root)
    monkeypatch.setenv("TRAINDOCTOR_STORE", str(root))
    monkeypatch.setattr(traindoctor.diagnosis, "diagnose", hostile_findings, raising=False)

    def open_page(page: str, session: dict | None = None, **query: str):
        at = AppTest.from_file(APP, default_timeout=APP_TIMEOUT_S).run()
        at.switch_page(page)
        for key, value in query.items():
            at.query_params[key] = value.format(run_id=run_id)
        for key, value in (session or {}).items():
            at.session_state[key] = value
        return at.run()

    return open_page


# What each page must show, escaped, besides showing no hostile text unescaped anywhere.
HOSTILE_PAGES = {
    "runs": ("views/runs.py", {"runs_table": {"selection": {"rows": [0], "columns": [], "cells": []}}}, {},
             [f"Open {plain(hostile('name'))}"]),
    "run": ("views/run.py", None, {"run": "{run_id}"},
            [plain(hostile("name")), plain(hostile("message")), f"**What to try:** {plain(hostile('advice'))}",
             f"Source: {plain(hostile('source'))}", f"{plain(hostile('event'))}: 1",
             f"{plain(hostile('title'))} ({inline_code(hostile('rule'))})"]),
    "classes": ("views/classes.py", None, {"run": "{run_id}"},
                [plain(hostile("split")), plain(hostile_findings(None)[1].message)]),
    "compare": ("views/compare.py", None, {"runs": "{run_id},alpha"},
                [f"**{plain(hostile('name'))}**", plain(hostile("message"))]),
}


@pytest.mark.parametrize("page", list(HOSTILE_PAGES))
def test_markdown_in_names_is_shown_as_text_on_every_page(hostile_app, page):
    """Regression (#18, item 7): a run named ``![x](http://host/beacon)`` was rendered as Markdown in
    the Run page title, Compare's labels and the Runs page link, so every viewer's browser fetched
    the URL. Names of layers, classes, splits, metrics, config keys and events went the same way."""
    path, session, query, expected = HOSTILE_PAGES[page]
    at = hostile_app(path, session, **query)
    no_exceptions(at)
    values = markdown_values(at)
    assert [v for v in values if any(fragment in unescaped(v) for fragment in HOSTILE_FRAGMENTS)] == []
    for text in expected:
        assert any(text in v for v in values), (text, values)
    assert [s for s in chart_texts(at) if "<img" in s or "<a " in s] == []
