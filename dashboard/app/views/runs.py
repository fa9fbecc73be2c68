"""Runs: every run in the store, filterable and sortable; pick one to open or several to compare."""

from __future__ import annotations

import contextlib
import urllib.parse

import pandas as pd
import streamlit as st

from traindoctor.dashboard.app.charts.compare import hyperparameter_table
from traindoctor.dashboard.app.text import plain
from traindoctor.dashboard.app.views import common

# Hyperparameters worth a column when runs have them, most telling first.
KEY_HYPERPARAMETERS = ("lr", "learning_rate", "batch_size", "optimizer", "weight_decay", "epochs",
                       "model", "warmup_steps", "scheduler", "seed")
MAX_HYPERPARAMETER_COLUMNS = 6


def key_hyperparameters(configs: pd.DataFrame) -> list[str]:
    """Known important keys first, then keys whose values differ between runs."""
    chosen = [key for key in KEY_HYPERPARAMETERS if key in configs.columns]
    varying = [c for c in configs.columns if c not in chosen and configs[c].astype(str).nunique() > 1]
    return (chosen + varying)[:MAX_HYPERPARAMETER_COLUMNS]


SEVERITY_COLUMNS = ("critical", "warning", "info")
# Streamlit's column_config objects are plain dicts: safe to build at import.
COLUMN_CONFIG = {
    "open": st.column_config.LinkColumn("open", display_text="open ▸", width="small"),
    "last_step": st.column_config.NumberColumn("steps", format="%d"),
    "started": st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm"),
    "final_train_loss": st.column_config.NumberColumn("train loss", format="%.4g"),
    "final_val_loss": st.column_config.NumberColumn("val loss", format="%.4g"),
    "final_val_accuracy": st.column_config.NumberColumn("val accuracy", format="%.3f"),
    "critical": st.column_config.NumberColumn("critical", help="critical findings"),
    "warning": st.column_config.NumberColumn("warnings", help="warning findings"),
    "info": st.column_config.NumberColumn("notes", help="informational findings"),
}


def findings_counts(run_ids: list[str]) -> pd.DataFrame:
    """Findings per severity of each run (empty cells where there is no diagnosis)."""
    rows = []
    for run_id in run_ids:
        found, problem = common.findings(run_id)
        rows.append({s: None for s in SEVERITY_COLUMNS} if problem else common.severity_counts(found))
    return pd.DataFrame(rows, index=run_ids, columns=list(SEVERITY_COLUMNS))


def runs_overview(runs: pd.DataFrame, counts: pd.DataFrame | None) -> pd.DataFrame:
    """The table's rows: identity, status, steps, key hyperparameters, final metrics, findings."""
    stats = common.run_stats()
    table = runs[["run_id", "name", "status", "created_at"]].merge(stats, on="run_id", how="left")
    configs = hyperparameter_table(dict(zip(runs["run_id"], runs["config"])))
    columns = key_hyperparameters(configs)
    hyperparameters = configs.reindex(index=list(runs["run_id"]), columns=columns)
    hyperparameters = hyperparameters.map(lambda v: "" if v is None or v != v else str(v))
    table = table.join(hyperparameters, on="run_id")
    if counts is None:
        counts = pd.DataFrame(index=list(runs["run_id"]), columns=list(SEVERITY_COLUMNS), dtype="float64")
    table = table.join(counts, on="run_id")
    table["status"] = table["status"].map(lambda s: common.STATUS_MARKERS.get(s, s))
    table["started"] = pd.to_datetime(table["created_at"], unit="s", utc=True)
    table["open"] = "run?run=" + table["run_id"].map(urllib.parse.quote)
    ordered = (["open", "name", "status", "last_step", "started"] + columns
               + ["final_train_loss", "final_val_loss", "final_val_accuracy", "critical", "warning", "info", "run_id"])
    return table[ordered]


def main() -> None:
    st.title("Runs")
    runs = common.runs_frame()
    if runs.empty:
        common.show_empty_store()
        return
    left, right = st.columns([2, 1])
    text = left.text_input("Filter by name", key="runs_filter", placeholder="part of a run name")
    statuses = right.multiselect("Status", ["running", "finished", "crashed"], key="runs_status")
    shown = runs
    if text:
        shown = shown[shown["name"].str.contains(text, case=False, regex=False)]
    if statuses:
        shown = shown[shown["status"].isin(statuses)]
    shown = shown.reset_index(drop=True)
    slot = st.empty()
    # Diagnosing a run reads all of it: the first time this session meets a run
    # (or new data of it), show the table at once and add the counts after.
    diagnosed = st.session_state.setdefault("diagnosed_versions", set())
    pending = set(zip(shown["run_id"], shown["version"])) - diagnosed
    if pending:
        slot.dataframe(runs_overview(shown, None), hide_index=True, width="stretch", column_config=COLUMN_CONFIG)
    with st.spinner(f"Diagnosing {len(pending)} runs…") if pending else contextlib.nullcontext():
        counts = findings_counts(list(shown["run_id"]))
    diagnosed.update(pending)
    table = runs_overview(shown, counts)
    event = slot.dataframe(
        table, hide_index=True, width="stretch", on_select="rerun", selection_mode="multi-row", key="runs_table",
        column_config=COLUMN_CONFIG,
    )

    selected = [table["run_id"].iloc[i] for i in event.selection.rows] if event else []
    st.caption(f"{len(table)} of {len(runs)} runs. Click a column header to sort; tick rows to open or compare them.")
    if len(selected) == 1:
        st.page_link(common.RUN_PAGE, label=f"Open {plain(common.run_label(runs, selected[0]))}",
                     icon=":material/monitoring:", query_params={"run": common.run_reference(runs, selected[0])})
    elif len(selected) > 1:
        references = ",".join(common.run_reference(runs, r) for r in selected)
        st.page_link(common.COMPARE_PAGE, label=f"Compare {len(selected)} runs", icon=":material/compare_arrows:",
                     query_params={"runs": references})


main()
