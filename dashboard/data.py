"""The dashboard pages' only door to the store.

Everything here returns plain pandas frames or ``RunData``; pages never
see SQL or DuckDB. (The CLI reads runs through ``traindoctor.store`` directly:
it must not load this module's page helpers.)
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from traindoctor.store.catalog import shown_train_loss
from traindoctor.store.reader import Store, default_store_path, open_store
from traindoctor.store.run_data import CONFUSION_COLUMNS, EVENT_COLUMNS, RunData

if TYPE_CHECKING:
    from traindoctor.store.listing import Selection


# Every curve sent to the browser holds at most this many points (the store
# downsamples, keeping each bucket's min, max and last point): ~2000 points
# per line keeps a plotly chart responsive while a one-step spike stays visible.
MAX_POINTS_PER_LINE = 2000
# Heatmaps get at most this many step columns: a few hundred columns already
# exceed the pixels a layer row gets on screen.
MAX_HEATMAP_STEPS = 400
# The global series the Run page draws, by name.
CURVE_NAMES = ("loss", "accuracy", "grad_norm", "amp_scale")


def store_path_from_args(argv: Sequence[str]) -> Path | str:
    """The store folder (or object-store URL, kept as text) given as
    ``--store DIR`` after ``--`` on the ``streamlit run`` command line, else
    :func:`default_store_path`.

    The folder comes from whoever started the server, never from the page.
    """
    args = list(argv)
    for index, arg in enumerate(args):
        if arg == "--store" and index + 1 < len(args):
            return _location(args[index + 1])
        if arg.startswith("--store="):
            return _location(arg.split("=", 1)[1])
    return default_store_path()


def _location(text: str) -> Path | str:
    return text if "://" in text else Path(text)


def run_version(store: Store, run_id: str) -> tuple[int, ...]:
    """A fingerprint that changes whenever the run's data does.

    A segment is published by ``os.replace`` into its table folder, which
    updates the folder's mtime, and run.json is rewritten atomically, so the
    mtimes of run.json and the three table folders change with every flush.
    Costs four ``stat`` calls: cheap enough to key a cache on at every rerun.
    On an object store the run's mirror is synced first (one LIST, at most
    once a second).
    """
    store.sync([run_id])
    run_dir = store.root / run_id
    stamps = []
    for path in (run_dir / "run.json", run_dir / "scalars", run_dir / "confusion", run_dir / "events"):
        try:
            stat = path.stat()
            stamps.extend((stat.st_mtime_ns, stat.st_size))
        except FileNotFoundError:
            stamps.extend((0, 0))
    return tuple(stamps)


def diagnose_run(run_data: RunData) -> list:
    """The findings of the diagnosis engine for one run (imported on first use)."""
    from traindoctor.diagnosis import diagnose

    return list(diagnose(run_data))


def curve_points(store: Store, runs: Sequence[str], names: Sequence[str] = CURVE_NAMES,
                 max_points: int = MAX_POINTS_PER_LINE) -> pd.DataFrame:
    """Downsampled global series (layer NULL) of ``names`` for ``runs``, all splits."""
    if not runs:
        return pd.DataFrame(columns=["run_id", "split", "name", "layer", "step", "epoch", "wall_time", "value"])
    return store.series(list(runs), names=list(names), global_only=True, max_points=max_points)


def lr_points(store: Store, runs: Sequence[str], max_points: int = MAX_POINTS_PER_LINE) -> pd.DataFrame:
    """Downsampled learning rate per param group (layer ``group<i>``)."""
    return store.series(list(runs), names=["lr"], splits=["train"], max_points=max_points)


def layer_heatmap(store: Store, run_id: str, name: str, max_steps: int = MAX_HEATMAP_STEPS) -> pd.DataFrame:
    """Long (layer, step, value) grid of a per-layer statistic, step-bucketed by the store."""
    return store.heatmap(run_id, name=name, max_steps=max_steps)


def run_events(store: Store, run_id: str) -> pd.DataFrame:
    """The run's events of every rank, oldest first: EVENT_COLUMNS and ``rank``."""
    return store.events([run_id])[[*EVENT_COLUMNS, "rank"]].reset_index(drop=True)


def run_confusion(store: Store, run_id: str) -> pd.DataFrame:
    """Confusion counts of rank 0 (the rank that evaluates)."""
    confusion = store.confusion([run_id])
    return confusion[confusion["rank"] == 0][CONFUSION_COLUMNS].reset_index(drop=True)


STAT_COLUMNS = ["run_id", "last_step", "num_steps", "final_train_loss", "final_val_loss", "final_val_accuracy"]


def run_stats(store: Store) -> pd.DataFrame:
    """last_step, num_steps and final train/val loss and val accuracy of every run."""
    frame = store.runs(with_stats=True)
    return frame.reindex(columns=STAT_COLUMNS).reset_index(drop=True)


def chosen_runs(store: Store, run_ids: Sequence[str]) -> pd.DataFrame:
    """The runs table (``store.reader.runs_frame``: metadata, config, last_step, num_steps, final
    train/val loss and val accuracy) of these runs only, newest first, from their catalog summaries."""
    from traindoctor.store.reader import runs_frame

    return runs_frame(store.catalog.summaries(list(run_ids)), with_stats=True)


# Per-layer statistics: their global counterpart (if any) is what a run-level chart shows.
PER_LAYER_ONLY = ("update_ratio", "weight_norm")


def series_names(store: Store, runs: Sequence[str]) -> list[tuple[str, str]]:
    """(split, name) of the run-level series ``runs`` recorded: what can be overlaid."""
    if not runs:
        return []
    names = store.names(list(runs))
    names = names[~names["name"].isin(PER_LAYER_ONLY)]
    return [(str(split), str(name)) for split, name in zip(names["split"], names["name"])]


@dataclass
class RunView:
    """What the Run page draws when it opens: downsampled curves, the
    step-bucketed update-ratio heatmap, events. (The per-layer gradient-norm
    heatmap is fetched when it is asked for: one query fewer on opening.)"""

    meta: dict
    curves: pd.DataFrame
    lr: pd.DataFrame
    update_ratio: pd.DataFrame
    events: pd.DataFrame


# The Run page's queries are independent; DuckDB releases the GIL while it
# scans, so running them side by side cuts a big run's load time (each query
# also rebuilds the store's views, a fixed cost paid in parallel this way).
_RUN_VIEW_WORKERS = 4


def tidy_run(store: Store, run_id: str) -> None:
    """Merge a run's segments once they are many (a long live run publishes one
    every 2 s, and every query pays ~0.3 ms per file). Safe while training
    writes and others read; a read-only store is simply left as it is."""
    from traindoctor.store.compact import compact_if_fragmented

    try:
        compact_if_fragmented(store, run_id)
    except OSError:
        pass


def load_run_view(store: Store, run: str) -> RunView:
    """The Run page's data for one run, every series bounded in points."""
    run_id = store.resolve(run)
    tidy_run(store, run_id)
    with ThreadPoolExecutor(max_workers=_RUN_VIEW_WORKERS) as pool:
        curves = pool.submit(curve_points, store, [run_id])
        lr = pool.submit(lr_points, store, [run_id])
        update_ratio = pool.submit(layer_heatmap, store, run_id, "update_ratio")
        events = pool.submit(run_events, store, run_id)
        return RunView(meta=store.run_meta(run_id), curves=curves.result(), lr=lr.result(),
                       update_ratio=update_ratio.result(), events=events.result())


# ------------------------------------------------------------------ the Runs page

# Rows the Runs page shows at once: a screenful. Filtering, sorting and paging
# happen here, over the run catalog, so a store of 10,000 runs sends the
# browser 50 rows.
RUNS_PAGE_SIZE = 50
# Findings columns of the Runs page, most severe first.
SEVERITY_COLUMNS = ("critical", "warning", "info")
# Metrics the Runs page shows (header, catalog field). The training loss is
# the catalog's smoothed one (store.catalog.train_loss_tail), not the last
# minibatch's: a run thrashing around 4 listed 5.8e-09 (issue #17).
RUNS_METRICS = (("train loss", "train_loss_tail"), ("val loss", "val.loss"), ("val accuracy", "val.accuracy"))
# Hyperparameter columns at most: with the health column first and three
# metrics, four still fit a 1,400 px window without scrolling sideways.
MAX_HYPERPARAMETER_COLUMNS = 4
# The Runs page's health sort key; its default order is worst first (``-health``, runs_page).
HEALTH_SORT = "health"
# How many of the listed runs the hyperparameter columns are chosen from.
HYPERPARAMETER_SAMPLE = 2000


@dataclass
class RunsPage:
    """One page of the Runs page's table, filtered and sorted over the whole store.

    Attributes:
        rows: one row per run of the page: health (:func:`health_text`),
            run_id, name, status, steps, started (Unix seconds), the
            hyperparameter and metric columns as text to three significant
            digits (``train_loss_tail``: the mean of the last logged training
            losses, store.catalog.train_loss_tail), and the findings counts
            (None until the run is diagnosed).
        hyperparameters: the hyperparameter columns shown.
        fields: every field a filter or sort can name (run fields, metrics, hyperparameters).
        matched: runs that pass the filters; total: runs in the store.
        undiagnosed: ids of matched runs without current findings, this page's first.
        fingerprints: run id -> content fingerprint, for the undiagnosed runs.
        references: run id -> what a link names a page row by: its name when
            no other run has it (and it holds no comma), else its id.
    """

    rows: pd.DataFrame
    hyperparameters: list[str]
    fields: list[str]
    matched: int
    total: int
    undiagnosed: list[str]
    fingerprints: dict[str, str]
    references: dict[str, str]


def runs_page(store: Store, *, filters: Sequence[str] = (), statuses: Sequence[str] = (), sort: str | None = None,
              offset: int = 0, limit: int = RUNS_PAGE_SIZE) -> RunsPage:
    """The Runs page's data: one page of runs from the run catalog (no segment is opened).

    ``filters`` and ``sort`` use ``store.listing``'s grammar (``lr<1e-3``,
    ``name~resnet``, ``has:critical``, ``-val.loss``); ``statuses`` keeps runs
    with any of these statuses. ``sort`` may also be ``-health`` (the default:
    worst first, :func:`health_rank`) or ``health`` (healthiest first). The
    hyperparameter columns are those that vary most across the matched runs
    (:func:`varying_hyperparameters`), not across the page.

    Raises:
        FilterError: a filter or sort key cannot be read or names no field.
    """
    from traindoctor.numbers import significant
    from traindoctor.store.listing import run_fields

    summaries, current, selection, rows = _matching(store, filters=filters, statuses=statuses,
                                                    sort=sort or f"-{HEALTH_SORT}")
    page = rows[offset:offset + limit]
    by_id = {summary["run_id"]: summary for summary in summaries}
    hyperparameters = varying_hyperparameters(
        [by_id[row["run_id"]].get("hyperparameters") or {} for row in rows[:HYPERPARAMETER_SAMPLE]],
        limit=MAX_HYPERPARAMETER_COLUMNS)
    table = pd.DataFrame({
        "health": [health_text(current[row["run_id"]], row.get("status"), by_id[row["run_id"]].get("num_steps"))
                   for row in page],
        "run_id": [row["run_id"] for row in page],
        "name": [row["name"] for row in page],
        "status": [row["status"] for row in page],
        "steps": pd.array([row["steps"] for row in page], dtype="Int64"),
        "started": pd.array([row["started"] for row in page], dtype="Float64"),
        **{key: [significant(row.get(key)) for row in page] for key in hyperparameters},
        "train_loss_tail": [significant(shown_train_loss(by_id[row["run_id"]])) for row in page],
        **{field: [significant(row.get(field)) for row in page] for _, field in RUNS_METRICS[1:]},
        **{severity: pd.array([row.get(severity) for row in page], dtype="Int64") for severity in SEVERITY_COLUMNS},
    })
    matched_ids = [row["run_id"] for row in rows]
    on_page = {row["run_id"] for row in page}
    undiagnosed = [run_id for run_id in matched_ids if current[run_id] is None]
    undiagnosed.sort(key=lambda run_id: run_id not in on_page)  # stable: visible rows first, then in table order
    # The fields filters and sorts can name, from the newest runs (enough to offer; a filter may name any).
    fields = sorted(set().union(*(run_fields(summary) for summary in summaries[-500:]))) if summaries else []
    names = Counter(summary.get("name") for summary in summaries)
    references = {row["run_id"]: row["name"] if names[row["name"]] == 1 and "," not in str(row["name"])
                  else row["run_id"] for row in page}
    return RunsPage(rows=table, hyperparameters=hyperparameters, fields=fields, matched=selection.matched,
                    total=selection.total, undiagnosed=undiagnosed,
                    fingerprints={run_id: by_id[run_id].get("fingerprint") for run_id in undiagnosed},
                    references=references)


def _matching(store: Store, *, filters: Sequence[str] = (), statuses: Sequence[str] = (), sort: str,
              words: Sequence[str] = ()) -> tuple[list[dict], dict[str, dict | None], Selection, list[dict]]:
    """(every run's listing summary, each chosen run's current findings entry or None, the query's
    selection, its rows in order) of the runs with one of ``statuses`` (any when empty) whose name or run id holds
    every one of ``words`` (case ignored) and that pass ``filters``, sorted by ``sort`` (a
    ``store.listing`` sort key, or ``[-]health``): what the Runs page and the run pickers share.

    Raises:
        FilterError: a filter or sort key cannot be read or names no field.
    """
    from traindoctor.diagnosis.cache import cached_findings_summary, engine_version
    from traindoctor.store.listing import query

    summaries = store.catalog.listing()
    chosen = summaries
    if statuses:
        chosen = [summary for summary in chosen if summary.get("status") in set(statuses)]
    lowered = [word.lower() for word in words if word]
    if lowered:
        chosen = [summary for summary in chosen
                  if all(word in f"{summary.get('name')}\n{summary['run_id']}".lower() for word in lowered)]
    engine = engine_version()
    current = {summary["run_id"]: cached_findings_summary(summary, engine) for summary in chosen}
    by_health = sort.lstrip("-") == HEALTH_SORT
    selection = query(chosen, filters=filters, sort="-started" if by_health else sort,
                      findings=lambda s: current[s["run_id"]])
    rows = selection.rows
    if by_health:  # stable: the newest first among runs of equal health
        steps = {summary["run_id"]: summary.get("num_steps") for summary in chosen}
        rows = sorted(rows, key=lambda row: health_rank(current[row["run_id"]], row.get("status"),
                                                        steps[row["run_id"]]),
                      reverse=sort.startswith("-"))
    return summaries, current, selection, rows


# ------------------------------------------------------------------ the run pickers

# Runs a picker (Run, Compare and Classes pages) offers at once: the best matches of its search.
# Offering every run sent 10,000 names to the browser on each rerun of a page and labelled them
# in quadratic time (13 s of CPU at 10,000 runs); 50 fill the dropdown's scroll a few times over.
PICKER_SIZE = 50
# The picker's orders: label -> the sort key of :func:`run_choices` (worst first: the Runs page's health order).
PICKER_ORDERS = {"newest first": "-started", "worst first": f"-{HEALTH_SORT}"}
# How close a run name must be to a mistyped one in a link to be suggested (difflib's ratio).
SUGGESTION_CUTOFF = 0.6
MAX_SUGGESTIONS = 3


@dataclass
class RunChoices:
    """What a run picker offers (:func:`run_choices`).

    Attributes:
        options: run ids in the order offered: the kept runs first, then the best matches.
        labels: run id -> its name, or ``name (run id)`` when another run of the store has that name.
        statuses: run id -> status, as the catalog lists it (a stale running run reads crashed).
        references: run id -> what a link names it by: its name when no other run has it (and it
            holds no comma), else its id.
        matched: runs that match the search; total: runs in the store.
        resolved: each kept reference -> the run id it names (None: no run of the store).
        suggestions: each reference that names no run -> up to MAX_SUGGESTIONS close names (else ids).
    """

    options: list[str]
    labels: dict[str, str]
    statuses: dict[str, str]
    references: dict[str, str]
    matched: int
    total: int
    resolved: dict[str, str | None]
    suggestions: dict[str, list[str]]


def split_search(search: str) -> tuple[list[str], list[str]]:
    """(words, filters) of a run picker's search text, split as a shell would.

    A part holding a filter operator (``=``, ``<``, ``>``, ``~``, ``!=``) or
    starting with ``has:`` is a ``store.listing`` filter, as in the Runs
    page's query box; every other part is a word the run's name or id must
    hold (case ignored).

    Example:
        >>> split_search("resnet 'lr<1e-3' has:critical")
        (['resnet'], ['lr<1e-3', 'has:critical'])

    Raises:
        FilterError: the text cannot be split (an unbalanced quote).
    """
    import shlex

    from traindoctor.store.listing import OPERATORS, FilterError

    try:
        parts = shlex.split(search)
    except ValueError as error:
        raise FilterError(f"cannot read the search {search!r}: {error}") from None
    is_filter = [part.startswith("has:") or any(op in part for op in OPERATORS) for part in parts]
    return ([part for part, flag in zip(parts, is_filter) if not flag],
            [part for part, flag in zip(parts, is_filter) if flag])


def run_choices(store: Store, search: str = "", *, sort: str = "-started", keep: Sequence[str] = (),
                limit: int = PICKER_SIZE) -> RunChoices:
    """What a run picker offers: the first ``limit`` runs matching ``search`` in ``sort`` order,
    after the runs named by ``keep``, from the run catalog (no segment is opened).

    Args:
        store: the store.
        search: words of a run's name or id and Runs-page filters (:func:`split_search`).
        sort: a ``store.listing`` sort key, or ``-health`` (worst first, as the Runs page).
        keep: references (run ids or names; a name means the newest run with it) of runs
            offered whatever the search: the picker's selection and the page's link.
        limit: matches offered at most, besides the kept runs.

    Raises:
        FilterError: a filter of ``search`` cannot be read or names no field.
    """
    from traindoctor.store.catalog import close_names

    words, filters = split_search(search)
    summaries, _, selection, rows = _matching(store, filters=filters, sort=sort, words=words)
    by_id = {summary["run_id"]: summary for summary in summaries}
    newest: dict[str, tuple[float, str]] = {}
    for summary in summaries:
        order = (summary.get("created_at") or 0.0, summary["run_id"])
        name = str(summary.get("name"))
        if name not in newest or order > newest[name]:
            newest[name] = order
    resolved = {reference: reference if reference in by_id else newest[reference][1] if reference in newest
                else None for reference in keep}
    suggestions = {}
    for reference, run_id in resolved.items():
        if run_id is None:
            for candidates in (sorted(newest), sorted(by_id)):
                close = close_names(reference, candidates, n=MAX_SUGGESTIONS, cutoff=SUGGESTION_CUTOFF)
                if close:
                    break
            suggestions[reference] = close
    options = list(dict.fromkeys(run_id for run_id in resolved.values() if run_id is not None))
    kept = set(options)
    options += [row["run_id"] for row in rows[:limit + len(kept)] if row["run_id"] not in kept][:limit]
    names = Counter(str(summary.get("name")) for summary in summaries)
    labels, references = {}, {}
    for run_id in options:
        name = str(by_id[run_id].get("name"))
        unique = names[name] == 1
        labels[run_id] = name if unique else f"{name} ({run_id})"
        references[run_id] = name if unique and "," not in name else run_id
    return RunChoices(options=options, labels=labels,
                      statuses={run_id: str(by_id[run_id].get("status")) for run_id in options},
                      references=references, matched=selection.matched, total=len(summaries),
                      resolved=resolved, suggestions=suggestions)


def recorded_nothing(status: str | None, steps: Any) -> bool:
    """An ended run that recorded no training step (its summary's ``num_steps`` is 0): ``diagnose``
    says NOTHING RECORDED and ``--fail-on`` counts it as a warning, since nothing vouches for it."""
    return status != "running" and isinstance(steps, int) and not isinstance(steps, bool) and steps == 0


def health_rank(found: dict | None, status: str | None = None, steps: Any = None) -> tuple:
    """The sort key of a run's health: critical findings (a crashed run counts as one, as
    ``diagnose --fail-on`` counts it), then warnings (an ended run that recorded no training
    step, ``steps`` 0, counts as one), then notes (more is worse); an undiagnosed run (``found``
    None) sorts below the runs with warnings and above those with only notes or none: it is not
    known to be fine."""
    crashed = status == "crashed" and not interrupted(found)
    if found is None:
        return (4 if crashed else 2, 0, 0, 0)
    counts = found.get("counts") or {}
    worst = 4 if counts.get("critical") or crashed else 3 if counts.get("warning") else 1 if counts.get("info") else 0
    if worst < 3 and recorded_nothing(status, steps):
        worst = 3
    return (worst, int(counts.get("critical") or 0), int(counts.get("warning") or 0), int(counts.get("info") or 0))


HEALTH_MARKERS = {"critical": "✖ critical", "warning": "▲ warning", "info": "● note"}


def interrupted(found: dict | None) -> bool:
    """Whether the run's cached findings say it was stopped by its user (its crash event ends in
    ``KeyboardInterrupt``): run.json says crashed, ``diagnose`` says INTERRUPTED and ``--fail-on``
    does not count it as critical; the Runs page follows."""
    return isinstance(found, dict) and found.get("crash") == "KeyboardInterrupt"


def health_text(found: dict | None, status: str | None = None, steps: Any = None) -> str:
    """The Runs page's health cell: the worst severity, the counts and the top
    finding's title (the verdict's, ``diagnosis.cache.top_finding``), e.g.
    ``✖ critical · 1 crit, 4 warn · Loss climbed back after its best: lr too high``;
    a crashed run reads ``✖ crashed`` first, whatever its findings, and an ended run
    that recorded no training step (``steps`` 0) reads ``▲ nothing recorded``, not
    ``✔ no findings``."""
    crashed = "✖ crashed · " if status == "crashed" else ""
    if crashed and interrupted(found):
        crashed = "■ interrupted · "
    if found is None:
        return crashed + "… not diagnosed yet"
    counts = found.get("counts") or {}
    if not any(counts.get(severity) for severity in SEVERITY_COLUMNS):
        if recorded_nothing(status, steps):
            return crashed + "▲ nothing recorded · no training step to judge"
        return crashed + ("no findings in what was recorded" if crashed else "✔ no findings")
    if crashed:
        shown = ", ".join(f"{counts[severity]} {short}" for severity, short in
                          (("critical", "crit"), ("warning", "warn"), ("info", "note")) if counts.get(severity))
        top = found.get("top") or {}
        return crashed + shown + (f" · {top['title']}" if top.get("title") else "")
    worst = next(severity for severity in SEVERITY_COLUMNS if counts.get(severity))
    shown = ", ".join(f"{counts[severity]} {short}" for severity, short in
                      (("critical", "crit"), ("warning", "warn"), ("info", "note")) if counts.get(severity))
    top = found.get("top") or {}
    title = f" · {top['title']}" if top.get("title") else ""
    return f"{HEALTH_MARKERS[worst]} · {shown}{title}"


def varying_hyperparameters(hyperparameters: Sequence[dict], limit: int = MAX_HYPERPARAMETER_COLUMNS) -> list[str]:
    """The hyperparameter keys that vary most across these runs' (flattened) hyperparameters.

    Keys are ranked by the entropy (bits) of their values' distribution over
    the runs (a missing key counts as a value of its own); a key with one
    value everywhere (a default nobody changed, such as most of HF's
    TrainingArguments) is never shown; nor is a text key that differs in
    every run (an output folder or a run name: an identifier, not a
    setting). Ties go to the known important keys (``store.listing``'s
    KEY_HYPERPARAMETERS), then by name.

    Example:
        >>> varying_hyperparameters([{"lr": 0.1, "seed": 1, "warmup": 0}, {"lr": 0.01, "seed": 2, "warmup": 0},
        ...                          {"lr": 0.01, "seed": 3, "warmup": 0}])
        ['seed', 'lr']
    """
    import math

    from traindoctor.store.listing import KEY_HYPERPARAMETERS

    runs = len(hyperparameters)
    if runs < 2:
        return [key for key in KEY_HYPERPARAMETERS if hyperparameters and key in hyperparameters[0]][:limit]
    values: dict[str, Counter] = {}
    for index, run in enumerate(hyperparameters):
        for key, value in run.items():
            values.setdefault(key, Counter())[repr(value)] += 1
    scored = []
    for key, counter in values.items():
        missing = runs - sum(counter.values())
        counts = list(counter.values()) + ([missing] if missing else [])
        if len(counts) < 2:
            continue
        texts = [run.get(key) for run in hyperparameters if isinstance(run.get(key), str)]
        if runs > 2 and len(counts) == runs and len(texts) == runs:
            continue
        entropy = -sum(count / runs * math.log2(count / runs) for count in counts)
        known = KEY_HYPERPARAMETERS.index(key) if key in KEY_HYPERPARAMETERS else len(KEY_HYPERPARAMETERS)
        scored.append((-round(entropy, 9), known, key))
    return [key for _, _, key in sorted(scored)[:limit]]


def run_findings(store: Store, run_id: str) -> tuple[list, str | None]:
    """One run's findings from the findings cache, diagnosed and kept when it
    has none for the run's current content; and an error line when there are
    none to show."""
    from traindoctor.diagnosis.cache import diagnose_cached
    from traindoctor.store.errors import UnknownRunError

    try:
        summary = store.catalog.summary(run_id)
        return list(diagnose_cached(store.catalog, summary, store=store).findings), None
    except UnknownRunError as error:
        return [], str(error)
    except Exception as error:  # a broken rule must not take the page down
        return [], f"diagnosis failed: {type(error).__name__}: {error}"


def diagnose_first(store: Store, run_ids: Sequence[str], budget_s: float) -> list[str]:
    """Diagnose ``run_ids`` in order (each kept in the findings cache) until
    ``budget_s`` seconds have passed; returns the ids left undone.

    The Runs page calls it for its visible rows after drawing the table, so a
    small store shows every finding in the first answer and a big one hands
    the rest to :class:`BackgroundDiagnosis`.
    """
    import time

    deadline = time.monotonic() + budget_s
    left = list(run_ids)
    while left and time.monotonic() < deadline:
        run_findings(store, left.pop(0))
    return left


class BackgroundDiagnosis:
    """Diagnoses runs on one background thread, writing each into the findings cache.

    The Runs page shows what the cache holds at once and hands the rest
    here, visible rows first (:meth:`want`); its table refreshes as results
    land. One thread: diagnosing is CPU-bound and the machine also serves
    pages (and often trains). A run the engine fails on is remembered as
    failed and not retried until its content changes.

    A context manager: ``close`` stops the thread after the run in progress.
    """

    def __init__(self, store: Store) -> None:
        import threading

        self.store = store
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._queue: list[str] = []
        self._failed: dict[str, str] = {}  # run_id -> fingerprint it failed on
        self.done = 0
        self._thread = threading.Thread(target=self._loop, name="traindoctor-background-diagnosis", daemon=True)
        self._thread.start()

    def want(self, run_ids: Sequence[str], fingerprints: dict[str, str] | None = None) -> None:
        """Put ``run_ids`` at the front of the queue, in this order (the rest keep
        theirs), but for runs whose diagnosis failed on the content they still
        have (``fingerprints``: run id -> current fingerprint)."""
        fingerprints = fingerprints or {}
        with self._lock:
            wanted = [run_id for run_id in dict.fromkeys(run_ids)
                      if run_id not in self._failed or self._failed[run_id] != fingerprints.get(run_id)]
            chosen = set(wanted)
            self._queue = wanted + [run_id for run_id in self._queue if run_id not in chosen]
        if wanted:
            self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def _next(self) -> str | None:
        with self._lock:
            return self._queue.pop(0) if self._queue else None

    def _loop(self) -> None:
        from traindoctor.diagnosis.cache import diagnose_cached, engine_version

        engine = engine_version()
        while not self._stop.is_set():
            run_id = self._next()
            if run_id is None:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            summary = None
            try:
                summary = self.store.catalog.summary(run_id)
                if self._failed.get(run_id) == summary.get("fingerprint"):
                    continue
                diagnose_cached(self.store.catalog, summary, store=self.store, engine=engine)
                with self._lock:
                    self.done += 1
            except Exception:  # a broken rule or a run removed meanwhile: the Run page says why
                self._failed[run_id] = None if summary is None else summary.get("fingerprint")

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def __enter__(self) -> "BackgroundDiagnosis":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
