"""What every page shares: the store, cached data, query-string sync, findings display.

Every user-controlled string reaches a Markdown-rendering element through
:func:`~traindoctor.dashboard.app.text.plain` (see ``text.py``); options of
selectboxes and multiselects, dataframes and ``st.json`` show text as it is.

Caches are keyed on the run's data fingerprint (:func:`dashboard.data.run_version`),
so a run that is still being written is re-read as soon as a segment lands and a
finished one never is. Only frames and findings are cached; every query opens and
closes its own DuckDB connection, so no connection is ever shared by sessions.
"""

from __future__ import annotations

import functools
import json
import sys
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import pandas as pd
import streamlit as st

from traindoctor.dashboard import data
from traindoctor.dashboard.app.text import inline_code, plain
from traindoctor.diagnosis.engine import RECORDS
from traindoctor.diagnosis.finding import SEVERITIES, Finding
from traindoctor.store.catalog import shown_train_loss
from traindoctor.store.errors import StoreError
from traindoctor.store.listing import FilterError
from traindoctor.store.reader import Store

# Findings read off confusion counts (their records say so): the Classes page shows their evidence.
CLASS_RULES = frozenset(rule_id for rule_id, record in RECORDS.items() if record.classes_page)
# A running run's page redraws its data this often (seconds): frequent enough to
# feel live, and the writer publishes every 2 s anyway.
LIVE_REFRESH_S = 3.0

# Plain symbols, not emoji: they render with the fonts every Linux box has.
STATUS_MARKERS = {"running": "● running", "finished": "✔ finished", "crashed": "✖ crashed"}
SEVERITY_COLORS = {"critical": "red", "warning": "orange", "info": "blue"}

RUNS_PAGE = "views/runs.py"
RUN_PAGE = "views/run.py"
CLASSES_PAGE = "views/classes.py"
COMPARE_PAGE = "views/compare.py"

FIRST_RUN_HELP = """
This store holds no runs yet. Record one by adding three lines to a training loop:

```python
from traindoctor.probe import Probe

with Probe(run="my-first-run", store={store}, config={{"lr": 0.1}}, num_classes=10) as probe:
    probe.watch(model, optimizer)          # once, before the loop
    for x, y in loader:
        ...                                # forward, backward, optimizer.step() as before
        probe.step(loss=loss)              # once per optimizer step
```

Then reload this page. To look at the bundled examples instead, run `traindoctor demo`.
"""


# ------------------------------------------------------------------ the store

def store_path() -> str:
    """The store folder from the server's command line (``-- --store DIR``) or the environment."""
    return str(data.store_path_from_args(sys.argv[1:]))


@st.cache_resource(show_spinner=False)
def _store(path: str) -> Store:
    # A Store holds no connection (each query opens and closes its own), only a
    # cache of which segment files it has already checked: safe to share.
    return data.open_store(path)


def store() -> Store:
    return _store(store_path())


def show_store_error(error: StoreError) -> None:
    """A store that stopped answering (a bucket gone unreachable) as one line on the page, not a crash."""
    st.error(plain(f"{str(error).rstrip('.')}. The page shows again once the store answers: reload it to retry."))


def store_guarded(function: Callable[..., None]) -> Callable[..., None]:
    """``function`` showing a StoreError as one line: for the fragments that refresh themselves,
    whose errors never reach the page script's own handler (main.py)."""
    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            function(*args, **kwargs)
        except StoreError as error:
            show_store_error(error)
    return guarded


def show_empty_store() -> None:
    st.info(f"No runs in {inline_code(store_path())}.")
    # A Python literal keeps any character of the path inside the code block.
    st.markdown(FIRST_RUN_HELP.format(store=repr(store_path())))


# ------------------------------------------------------------------ cached data

@st.cache_data(show_spinner=False, max_entries=256)
def _findings(path: str, run_id: str, version: tuple) -> tuple[list[Finding] | None, str | None]:
    found, problem = data.run_findings(_store(path), run_id)
    return (None if problem else found), problem


def findings(run_id: str) -> tuple[list[Finding], str | None]:
    """Findings of one run, most severe first, and an error line when there are none to show.

    Diagnosis reads the whole run, so it is kept in the store's findings cache
    (``traindoctor diagnose`` shares it) and in this server's memory until the
    run's data changes.
    """
    found, problem = _findings(store_path(), run_id, data.run_version(store(), run_id))
    return found or [], problem  # diagnose() returns them sorted


@st.cache_resource(max_entries=256, show_spinner=False)
def _figure(key: tuple, _build: Callable[[], Any]) -> Any:
    return _build()


def figure(key: tuple, build: Callable[[], Any]) -> Any:
    """The plotly figure ``build()`` makes, built once per ``key`` and shared by every session.

    ``key`` must hold everything the figure depends on: the run's data
    version (``dashboard.data.run_version``), the chart and its options, and
    :func:`findings_key` of the findings drawn. Building a figure costs
    ~60 ms of plotly's validation a chart (7 on a Run page): a second visit,
    a toggle or an opened finding reuses what was built. The figure is shared:
    never change it after it is returned.
    """
    return _figure(key, build)


def findings_key(found: Sequence[Finding]) -> tuple:
    """What a chart draws of ``found``: each finding's rule, severity and steps."""
    return tuple((f.rule, f.severity, f.step_start, f.step_end) for f in found)


def train_loss(run_id: str) -> float | None:
    """The run's smoothed training loss from its catalog summary (``store.catalog.shown_train_loss``, as the
    Runs page and ``traindoctor runs`` show)."""
    try:
        return shown_train_loss(store().catalog.summary(run_id))
    except Exception:  # a summary that cannot be read: the header shows a dash
        return None


def recorded_steps(run_id: str) -> int | None:
    """Optimizer steps the run recorded (its catalog summary's ``num_steps``: training-loss records),
    as ``traindoctor diagnose`` counts them; None when the summary cannot be read."""
    try:
        steps = store().catalog.summary(run_id).get("num_steps")
    except Exception:  # a summary that cannot be read: the page judges the run as it is
        return None
    return steps if isinstance(steps, int) else None


@st.cache_data(show_spinner=False, max_entries=32)
def _run_view(path: str, run_id: str, version: tuple) -> data.RunView:
    return data.load_run_view(_store(path), run_id)


def run_view(run_id: str) -> data.RunView:
    """Everything the Run page draws, re-read when the run's data changes."""
    return _run_view(store_path(), run_id, data.run_version(store(), run_id))


@st.cache_data(show_spinner=False, max_entries=64)
def _curves(path: str, run_ids: tuple[str, ...], names: tuple[str, ...], versions: tuple) -> pd.DataFrame:
    return data.curve_points(_store(path), run_ids, names)


@st.cache_data(show_spinner=False, max_entries=64)
def _lr(path: str, run_ids: tuple[str, ...], versions: tuple) -> pd.DataFrame:
    return data.lr_points(_store(path), run_ids)


@st.cache_data(show_spinner=False, max_entries=64)
def _heatmap(path: str, run_id: str, name: str, version: tuple) -> pd.DataFrame:
    return data.layer_heatmap(_store(path), run_id, name)


@st.cache_data(show_spinner=False, max_entries=64)
def _events(path: str, run_id: str, version: tuple) -> pd.DataFrame:
    return data.run_events(_store(path), run_id)


@st.cache_data(show_spinner=False, max_entries=64)
def _confusion(path: str, run_id: str, version: tuple) -> pd.DataFrame:
    return data.run_confusion(_store(path), run_id)


@st.cache_data(show_spinner=False, max_entries=64)
def _names(path: str, run_ids: tuple[str, ...], versions: tuple) -> list[tuple[str, str]]:
    return data.series_names(_store(path), run_ids)


def series_names(run_ids: Sequence[str]) -> list[tuple[str, str]]:
    return _names(store_path(), tuple(run_ids), _versions(run_ids))


def _versions(run_ids: Sequence[str]) -> tuple:
    return tuple(data.run_version(store(), run_id) for run_id in run_ids)


def curves(run_ids: Sequence[str], names: Sequence[str] = data.CURVE_NAMES) -> pd.DataFrame:
    return _curves(store_path(), tuple(run_ids), tuple(names), _versions(run_ids))


def lr(run_ids: Sequence[str]) -> pd.DataFrame:
    return _lr(store_path(), tuple(run_ids), _versions(run_ids))


def heatmap(run_id: str, name: str) -> pd.DataFrame:
    return _heatmap(store_path(), run_id, name, data.run_version(store(), run_id))


def events(run_id: str) -> pd.DataFrame:
    return _events(store_path(), run_id, data.run_version(store(), run_id))


def confusion(run_id: str) -> pd.DataFrame:
    return _confusion(store_path(), run_id, data.run_version(store(), run_id))


def chosen_runs(run_ids: Sequence[str]) -> pd.DataFrame:
    """These runs' rows of the runs table (metadata, config, last step, final losses and accuracy), newest first."""
    return data.chosen_runs(store(), run_ids)


# ------------------------------------------------------------------ run pickers

def _choices(key: str, what: str, keep: Sequence[str]) -> data.RunChoices:
    """A picker's search box and order, and the runs they match with ``keep`` (references) among them.

    The search runs on the server over the run catalog (``data.run_choices``):
    the browser gets the best ``data.PICKER_SIZE`` matches, never the whole store.
    """
    search_column, order_column = st.columns([3, 1])
    search = search_column.text_input(
        f"Find {what}", key=f"{key}_search", placeholder="part of a name, or a query: lr<1e-3 has:critical",
        help="Words of a run's name or id, and filters of the Runs page's query (KEY=VALUE, KEY<VALUE, "
             f"KEY~TEXT, has:critical, has:RULE). The picker below offers the first {data.PICKER_SIZE} "
             "matches and keeps what is chosen.")
    order = order_column.selectbox("Order", list(data.PICKER_ORDERS), key=f"{key}_order")
    try:
        return data.run_choices(store(), search, sort=data.PICKER_ORDERS[order], keep=keep)
    except FilterError as error:
        st.warning(plain(str(error)))
        return data.run_choices(store(), sort=data.PICKER_ORDERS[order], keep=keep)


def _caption(choices: data.RunChoices, searched: bool) -> None:
    offered = min(choices.matched, data.PICKER_SIZE)
    if searched and not choices.matched:
        st.caption(f"No run matches the search ({choices.total:,} in the store).")
    elif choices.matched > offered:
        st.caption(f"Offering the first {offered} of {choices.matched:,} matching runs ({choices.total:,} in the "
                   "store): search to find the others.")
    elif searched:
        st.caption(f"{choices.matched:,} of {choices.total:,} runs match.")


def select_run(*, param: str = "run", label: str = "Run", page: str = RUN_PAGE) -> tuple[str, data.RunChoices]:
    """A run picker searching the store on the server, kept in sync with ``?run=`` (name or id) both ways.

    Returns the chosen run id and what the picker offered (its labels and statuses name the choice).
    A ``?run=`` that names no run of the store stops the page with an error
    and links to the closest names on ``page`` (issue #17: it silently showed
    another run)."""
    key = f"select_{param}"
    reference = st.query_params.get(param, "")
    selected = st.session_state.get(key)
    choices = _choices(key, "a run", [reference] if reference else [selected] if selected else [])
    wanted = choices.resolved.get(reference) if reference else None
    if reference and wanted is None:
        show_unknown_runs([reference], choices.suggestions, param=param, page=page)
        st.stop()
    if wanted is not None:
        st.session_state[key] = wanted
    elif st.session_state.get(key) not in choices.options:
        if not choices.options:
            st.info("No run matches the search.")
            st.stop()
        st.session_state[key] = choices.options[0]

    def write_back() -> None:
        st.query_params[param] = choices.references[st.session_state[key]]

    chosen = st.selectbox(label, choices.options, key=key, on_change=write_back,
                          format_func=lambda run_id: option_label(choices, run_id))
    _caption(choices, bool(st.session_state.get(f"{key}_search")))
    st.query_params[param] = choices.references[chosen]
    return chosen, choices


def select_runs(*, param: str = "runs", label: str = "Runs",
                default_count: int = 2) -> tuple[list[str], data.RunChoices]:
    """A multi-run picker searching the store on the server, kept in sync with ``?runs=a,b``; without
    either, the ``default_count`` newest runs. Returns the chosen run ids and what the picker offered."""
    key = f"select_{param}"
    raw = st.query_params.get(param)
    references = [part for part in raw.split(",") if part] if raw is not None else []
    choices = _choices(key, "runs", references if raw is not None else list(st.session_state.get(key) or []))
    if raw is not None:
        unknown = [reference for reference in references if choices.resolved[reference] is None]
        if unknown:
            show_unknown_runs(unknown, choices.suggestions, param=param, page=None)
        st.session_state[key] = list(dict.fromkeys(choices.resolved[reference] for reference in references
                                                   if choices.resolved[reference] is not None))
    elif key not in st.session_state:
        st.session_state[key] = choices.options[:default_count]
    else:
        st.session_state[key] = [run_id for run_id in st.session_state[key] if run_id in choices.options]

    def write_back() -> None:
        st.query_params[param] = ",".join(choices.references[run_id] for run_id in st.session_state[key])

    chosen = st.multiselect(label, choices.options, key=key, on_change=write_back,
                            format_func=lambda run_id: option_label(choices, run_id))
    _caption(choices, bool(st.session_state.get(f"{key}_search")))
    st.query_params[param] = ",".join(choices.references[run_id] for run_id in chosen)
    return chosen, choices


def show_unknown_runs(references: Sequence[str], suggestions: dict[str, list[str]], *, param: str = "run",
                      page: str | None = RUN_PAGE) -> None:
    """An error naming each run a link asked for that the store does not hold, with close matches
    (``data.RunChoices.suggestions``) as links to ``page`` (None: named only)."""
    for reference in references:
        close = suggestions.get(reference) or []
        hint = f" Did you mean {', '.join(inline_code(name) for name in close)}?" if close else ""
        st.error(f"No run {inline_code(reference)} in {inline_code(store_path())}.{hint}")
        if page is not None:
            for name in close:
                st.page_link(page, label=f"Open {plain(name)}",
                             query_params={param: name})


def option_label(choices: data.RunChoices, run_id: str) -> str:
    """A picker's text for a run: its label and status marker (shown as text, never Markdown)."""
    status = choices.statuses.get(run_id, "")
    return f"{choices.labels.get(run_id, run_id)} · {STATUS_MARKERS.get(status, status)}"


# ------------------------------------------------------------------ display

def format_time(timestamp: Any, *, short: bool = False) -> str:
    if timestamp is None or timestamp != timestamp:
        return ""
    moment = datetime.fromtimestamp(float(timestamp), tz=timezone.utc)
    return moment.strftime("%m-%d %H:%M") if short else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def severity_counts(found: Sequence[Finding]) -> dict[str, int]:
    return {severity: sum(f.severity == severity for f in found) for severity in SEVERITIES}


def finding_heading(finding: Finding) -> str:
    steps = ""
    if finding.step_range is not None:
        start, end = finding.step_range
        steps = f" · steps {start}–{end}" if end != start else f" · step {end}"
    return f"{severity_badge(finding.severity)} {plain(finding.title)} ({inline_code(finding.rule)}){steps}"


def severity_badge(severity: str, count: int | None = None) -> str:
    """Markdown for a coloured severity label, e.g. ``:red[**● critical**]``."""
    text = plain(severity if count is None else f"{count} {severity}")
    return f":{SEVERITY_COLORS.get(severity, 'gray')}[**● {text}**]"


def show_finding_text(finding: Finding) -> None:
    # Rules quote layer, class and split names in their text: all of it is shown as text.
    st.markdown(plain(finding.message))
    if finding.advice:
        st.markdown(f"**What to try:** {plain(finding.advice)}")
    if finding.source:
        st.caption(f"Source: {plain(finding.source)}")


def show_finding_evidence(finding: Finding) -> None:
    if finding.evidence:
        st.json(json.loads(json.dumps(finding.evidence, default=str)), expanded=False)
