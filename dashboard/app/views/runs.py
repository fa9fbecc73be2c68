"""Runs: every run in the store, filtered, sorted and paged on the server; pick one to open or several to compare.

The table comes from the run catalog (one summary per run), one page at a
time, so a store of 10,000 runs answers as fast as one of ten. Findings
come from the findings cache: the visible rows without findings are
diagnosed right after the table is drawn, the rest on a background thread,
and the table refreshes itself while that runs.
"""

from __future__ import annotations

import math
import shlex
import urllib.parse

import pandas as pd
import streamlit as st

from traindoctor.dashboard import data
from traindoctor.dashboard.app.text import plain
from traindoctor.dashboard.app.views import common
from traindoctor.store.catalog import TRAIN_LOSS_TAIL, TRAIN_LOSS_TAIL_SHARE
from traindoctor.store.listing import FilterError

# Seconds of diagnosis the page does itself, for its visible rows, after
# drawing the table: a small store shows every finding at once, a big one
# hands the rest to the background thread.
VISIBLE_DIAGNOSIS_BUDGET_S = 2.0
# While runs wait for a diagnosis, the table refreshes this often (seconds).
PENDING_REFRESH_S = 2.0
FINDINGS_FILTERS = {
    "any": [],
    "has critical": ["has:critical"],
    "has warnings or worse": ["has:warning"],
    "no findings": ["diagnosed=true", "critical=0", "warning=0", "info=0"],
    "not diagnosed yet": ["diagnosed=false"],
}
# "health" first: by default the worst runs come first (descending).
SORT_FIELDS = ("health", "started", "name", "status", "steps", "val.loss", "val.accuracy", "train.loss", "critical",
               "warning")
TRAIN_LOSS_HEADER = f"train loss (mean last {TRAIN_LOSS_TAIL})"
# Streamlit's column_config objects are plain dicts: safe to build at import.
# Widths (px) keep the health column, the name, the metrics and four
# hyperparameters inside a 1,400 px window; the counts and ids come after.
COLUMN_CONFIG = {
    "open": st.column_config.LinkColumn("open", display_text="open ▸", width=60),
    "health": st.column_config.TextColumn(
        "health", width=300, help="worst severity, findings per severity and the top finding (the verdict's)"),
    "name": st.column_config.TextColumn("name", width=160),
    "status": st.column_config.TextColumn("status", width=90),
    "last_step": st.column_config.NumberColumn("steps", format="%d", width=60),
    "started": st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm", width=130),
    "final_train_loss": st.column_config.TextColumn(
        TRAIN_LOSS_HEADER, width=140,
        help=f"mean of the last {TRAIN_LOSS_TAIL} logged training losses (of the last "
             f"{TRAIN_LOSS_TAIL_SHARE:.0%} when fewer than {round(TRAIN_LOSS_TAIL / TRAIN_LOSS_TAIL_SHARE)} were "
             "logged), not the last minibatch's; nan when the last one is not finite"),
    "final_val_loss": st.column_config.TextColumn("val loss", width=80),
    "final_val_accuracy": st.column_config.TextColumn("val accuracy", width=90),
    "critical": st.column_config.NumberColumn("critical", help="critical findings (empty: not diagnosed yet)"),
    "warning": st.column_config.NumberColumn("warnings", help="warning findings (empty: not diagnosed yet)"),
    "info": st.column_config.NumberColumn("notes", help="informational findings (empty: not diagnosed yet)"),
}
# The page's columns for data.runs_page's metric fields.
METRIC_COLUMNS = {"train_loss_tail": "final_train_loss", "val.loss": "final_val_loss",
                  "val.accuracy": "final_val_accuracy"}


def runs_table(page: data.RunsPage) -> pd.DataFrame:
    """The table's rows for one page: link, health, identity, status, metrics, the hyperparameters that vary
    most, steps, start, findings counts, id."""
    rows = page.rows.rename(columns={"steps": "last_step", **METRIC_COLUMNS})
    table = pd.DataFrame({
        # A list: an empty page's run_id column is a float column, which "run?run=" + … cannot add to.
        "open": ["run?run=" + urllib.parse.quote(run_id) for run_id in rows["run_id"]],
        "health": rows["health"],
        "name": rows["name"],
        "status": rows["status"].map(lambda s: common.STATUS_MARKERS.get(s, s)),
    })
    for column in [*METRIC_COLUMNS.values(), *page.hyperparameters]:
        table[column] = rows[column]
    table["last_step"] = rows["last_step"]
    table["started"] = pd.to_datetime(rows["started"].astype("float64"), unit="s", utc=True)
    for column in [*data.SEVERITY_COLUMNS, "run_id"]:
        table[column] = rows[column]
    return table


def column_config(hyperparameters: list[str]) -> dict:
    """COLUMN_CONFIG plus a narrow column per hyperparameter (its key as header, shown as text)."""
    return {**COLUMN_CONFIG, **{key: st.column_config.TextColumn(key, width=90) for key in hyperparameters}}


def query_filters() -> tuple[list[str], list[str]]:
    """Filters and statuses from the page's controls; a query that cannot be split is reported and ignored."""
    filters = []
    name = st.session_state.get("runs_filter") or ""
    if name.strip():
        filters.append(f"name~{name.strip()}")
    filters += FINDINGS_FILTERS[st.session_state.get("runs_findings") or "any"]
    query = st.session_state.get("runs_query") or ""
    try:
        filters += shlex.split(query)
    except ValueError as error:
        st.warning(f"Cannot read the query: {plain(str(error))}")
    return filters, list(st.session_state.get("runs_status") or [])


@st.cache_resource(show_spinner=False)
def _background(path: str) -> data.BackgroundDiagnosis:
    # One thread per store for every session: each run is diagnosed once, into the cache.
    return data.BackgroundDiagnosis(common._store(path))


def show_table(refreshing: bool) -> None:
    """The filtered, sorted page of runs; ``refreshing``: this fragment reruns
    itself every PENDING_REFRESH_S seconds (while diagnoses are pending)."""
    filters, statuses = query_filters()
    sort = st.session_state.get("runs_sort") or data.HEALTH_SORT
    if st.session_state.get("runs_descending", True):
        sort = f"-{sort}"
    number = asked = int(st.session_state.get("runs_page") or 1)
    try:
        page = data.runs_page(common.store(), filters=filters, statuses=statuses, sort=sort,
                              offset=(number - 1) * data.RUNS_PAGE_SIZE)
    except FilterError as error:
        st.warning(plain(str(error)))
        filters, number, asked = [], 1, 1  # the rows shown: every run's, page 1
        page = data.runs_page(common.store(), statuses=statuses, sort=sort)
    last = max(1, math.ceil(page.matched / data.RUNS_PAGE_SIZE))
    if number > last:  # a page past the end (typed, or left from a wider filter): the last one
        number = last
        page = data.runs_page(common.store(), filters=filters, statuses=statuses, sort=sort,
                              offset=(number - 1) * data.RUNS_PAGE_SIZE)
    slot = st.empty()
    visible = [run_id for run_id in page.undiagnosed if run_id in set(page.rows["run_id"])]
    if visible:
        # The table first, findings as they come: the visible rows within a budget, the rest in the background.
        slot.dataframe(runs_table(page), hide_index=True, width="stretch",
                       column_config=column_config(page.hyperparameters))
        left = data.diagnose_first(common.store(), visible, VISIBLE_DIAGNOSIS_BUDGET_S)
        if len(left) < len(visible):
            page = data.runs_page(common.store(), filters=filters, statuses=statuses, sort=sort,
                                  offset=(number - 1) * data.RUNS_PAGE_SIZE)
    background = _background(common.store_path())
    if page.undiagnosed:
        background.want(page.undiagnosed, page.fingerprints)
    table = runs_table(page)
    event = slot.dataframe(table, hide_index=True, width="stretch", on_select="rerun", selection_mode="multi-row",
                           key="runs_table", column_config=column_config(page.hyperparameters))
    diagnosed = page.matched - len(page.undiagnosed)
    if page.undiagnosed:
        st.progress(diagnosed / max(page.matched, 1),
                    text=f"Diagnosing in the background: {diagnosed:,} of {page.matched:,} runs have findings")
    pages = max(1, math.ceil(page.matched / data.RUNS_PAGE_SIZE))
    first = (number - 1) * data.RUNS_PAGE_SIZE
    past = f"page {asked:,} is past the last: " if asked > number else ""
    st.caption(f"{past}{first + 1 if len(table) else 0:,}–{first + len(table):,} of {page.matched:,} matching runs "
               f"({page.total:,} in the store), page {number} of {pages}. Tick rows to open or compare them.")
    selected = [table["run_id"].iloc[i] for i in event.selection.rows] if event else []
    if len(selected) == 1:
        reference = page.references[selected[0]]
        name = page.rows.set_index("run_id").loc[selected[0], "name"]
        label = reference if reference != selected[0] else f"{name} ({reference})"
        st.page_link(common.RUN_PAGE, label=f"Open {plain(label)}", icon=":material/monitoring:",
                     query_params={"run": reference})
    elif len(selected) > 1:
        st.page_link(common.COMPARE_PAGE, label=f"Compare {len(selected)} runs", icon=":material/compare_arrows:",
                     query_params={"runs": ",".join(page.references[run_id] for run_id in selected)})
    if bool(background.pending()) != refreshing:
        st.rerun()  # start refreshing as work is queued, stop once it is done


def main() -> None:
    st.title("Runs")
    if not common.store().catalog.has_runs():
        common.show_empty_store()
        return
    left, middle, right = st.columns([2, 1, 1])
    left.text_input("Filter by name", key="runs_filter", placeholder="part of a run name")
    middle.multiselect("Status", ["running", "finished", "crashed"], key="runs_status")
    right.selectbox("Findings", list(FINDINGS_FILTERS), key="runs_findings")
    query, sort, order, number = st.columns([3, 1, 1, 1])
    query.text_input("Query", key="runs_query", placeholder="lr<1e-3 batch_size>=64 has:loss_spike",
                     help="Filters of `traindoctor runs --filter`, separated by spaces: KEY=VALUE, KEY<VALUE, "
                          "KEY~TEXT, has:critical, has:RULE; keys are run fields, metrics (val.loss) and "
                          "hyperparameters (lr).")
    sort.selectbox("Sort by", SORT_FIELDS, key="runs_sort", accept_new_options=True,
                   help="any field a query can name, hyperparameters included")
    order.toggle("Descending", value=True, key="runs_descending")
    number.number_input("Page", min_value=1, value=1, step=1, key="runs_page")
    refreshing = bool(_background(common.store_path()).pending())
    st.fragment(common.store_guarded(show_table), run_every=PENDING_REFRESH_S if refreshing else None)(refreshing)


main()
