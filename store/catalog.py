"""The run catalog: one small summary per run, so thousands of runs list without opening a segment.

Each run folder holds ``summary.json`` (``store.format``'s "Summaries"): status,
steps, wall time, the last and best value of every global series per split,
flattened hyperparameters and a content fingerprint. :class:`Catalog` reads
them for a whole store and keeps them current:

- **Fresh** (the common case): a stat stamp of run.json and the three table
  folders (5 ``stat`` calls; publishing a segment or rewriting run.json
  renames a file into one of those folders, which moves its mtime) equals the
  stamp the summary was computed under. The summary is used as it is.
- **Out of date**: the table folders are listed again. Unchanged segment
  names (a heartbeat rewrote run.json) only refresh the metadata. New
  segments only (a running run publishing) are added from their footers'
  series aggregates (``store.format.SERIES_KEY``), never their rows. Anything
  else (a compaction, a resumed attempt over recorded steps, files written
  before footers carried aggregates) is recomputed: from all footers when
  they add up exactly, else with one DuckDB query over the run's resolved
  ``scalars`` view.
- **Missing or corrupt** (a run written by an older traindoctor, a process
  killed before it closed, a hand-edited file): computed as above, kept, and
  warned about by name when the run had closed (a finished or crashed run
  should have one).

Summaries are written atomically (temporary file, ``os.replace``) without
fsync: a summary is a cache of the run's files, and one torn by a power cut
reads as corrupt and is rebuilt. A read-only store just computes them.

This module imports only the standard library when summaries are fresh:
``traindoctor runs`` on a store of 10,000 finished runs loads neither pandas
nor DuckDB nor pyarrow. Footers are read with pyarrow, imported when first
needed. The exact fallback is a query of the reader
(:meth:`~traindoctor.store.reader.Store.series_aggregates`), which imports
this module: a catalog is handed a Store, or a function that opens one
(``open_store``), and never imports the reader itself.

Example:
    >>> catalog = Catalog("traindoctor_runs")  # doctest: +SKIP
    >>> [(s["name"], s["status"], s["last_step"]) for s in catalog.summaries()]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from traindoctor.store.errors import OnceWarnings, StoreError, UnknownRunError
from traindoctor.store.format import (
    DEFAULT_STORE, FINDINGS_JSON, INDEX_JSON, OLD_DEFAULT_STORE, RUN_JSON, SERIES_FIELDS, SUMMARY_FORMAT, SUMMARY_JSON, TABLES, TEMPORARY_PREFIX,
    check_run_id,
    clean_json, decode_attempts, decode_covers, decode_series, metric_goal, segment_names,
)

# A run whose writer has not refreshed its heartbeat (every 5 s) for this long
# is reported as crashed: twelve missed beats rules out a slow disk or a long
# checkpoint save.
DEFAULT_STALE_AFTER_S = 60.0
# A folder modified this recently may still change within the same tick of
# the file-time clock (coarse: jiffies on Linux, up to 2 s on FAT and some
# network mounts) without its mtime moving: such a stamp is not kept, and the
# next read lists the folders again.
_SETTLE_NS = 2_000_000_000
# Hyperparameters kept per run, and the length a text value is cut to: a
# config can hold thousands of keys or megabyte reprs; a listing needs a few.
MAX_HYPERPARAMETERS = 256
MAX_HYPERPARAMETER_TEXT = 200
# Missing summaries named in one warning (the rest are counted).
_NAMED_IN_WARNING = 10

# Positions in a SERIES_FIELDS entry.
_FIELD = {name: index for index, name in enumerate(SERIES_FIELDS)}
# A summary's series entries are SERIES_FIELDS without the rank (rank 0 only).
_ENTRY_FIELDS = SERIES_FIELDS[1:]
_ENTRY = {name: index for index, name in enumerate(_ENTRY_FIELDS)}


def default_store_path() -> Path:
    """The store to read when none is named (docs/design.md, "CLI").

    ``$TRAINDOCTOR_STORE``, else ``./traindoctor_runs``
    (``store.format.DEFAULT_STORE``); but when that folder does not exist and
    the old default ``./runs`` holds a traindoctor store (:func:`holds_runs`),
    ``./runs``. A ``./runs`` holding only TensorBoard event files is never
    taken for ours.
    """
    named = os.environ.get("TRAINDOCTOR_STORE")
    if named:
        return Path(named).expanduser()  # a quoted "~/runs" reaches us unexpanded
    if not os.path.exists(DEFAULT_STORE) and holds_runs(OLD_DEFAULT_STORE):
        return Path(OLD_DEFAULT_STORE)
    return Path(DEFAULT_STORE)


def close_names(reference: str, candidates: Iterable[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """Up to ``n`` of ``candidates`` close to ``reference``: those :func:`difflib.get_close_matches`
    finds (ratio ≥ ``cutoff``), then those holding it (3 characters or more, any case:
    ``version_0`` for an imported ``lightning_logs/version_0``, a ratio of 0.55)."""
    import difflib

    ordered = sorted(candidates)
    close = difflib.get_close_matches(reference, ordered, n=n, cutoff=cutoff)
    if len(reference) >= 3:
        close += [name for name in ordered if reference.casefold() in name.casefold()]
    return list(dict.fromkeys(close))[:n]


def did_you_mean(run: str, rows: Iterable[dict[str, Any]]) -> str:
    """``"; did you mean 'a' or 'b'?"``: up to three run names (else run ids) close
    to ``run`` by :func:`difflib.get_close_matches` (ratio ≥ 0.6), then names holding
    ``run`` (3 characters or more, any case: ``version_0`` for an imported
    ``lightning_logs/version_0``); ``""`` when none is."""
    rows = list(rows)
    for candidates in ({str(row.get("name")) for row in rows if row.get("name")}, {row["run_id"] for row in rows}):
        close = close_names(run, candidates)
        if close:
            quoted = [repr(name) for name in close]
            return "; did you mean " + (quoted[0] if len(quoted) == 1 else
                                        ", ".join(quoted[:-1]) + " or " + quoted[-1]) + "?"
    return ""


def holds_runs(root: str | os.PathLike) -> bool:
    """Whether ``root`` is a traindoctor store with at least one run: a sub-folder
    named like a run id holding a run.json (stops at the first; no warning for
    other folders, such as TensorBoard's ``Nov30_02-36-37_host``)."""
    try:
        entries = os.scandir(root)
    except OSError:
        return False
    with entries:
        for entry in entries:
            try:
                if (entry.is_dir() and not entry.name.startswith(".") and check_run_id(entry.name)
                        and os.path.isfile(os.path.join(entry.path, RUN_JSON))):
                    return True
            except (OSError, StoreError):
                continue
    return False


# ------------------------------------------------------------------ stamps


def stamp(run_dir: str | os.PathLike) -> list[int] | None:
    """``[run.json mtime_ns, run.json size, scalars/ mtime_ns, confusion/ mtime_ns,
    events/ mtime_ns]``: changes whenever the run's files do; None without run.json.

    Five ``stat`` calls. Segments are published and run.json rewritten by
    renaming a file into one of these folders, which moves its mtime.
    """
    run_dir = os.fspath(run_dir)
    try:
        meta = os.stat(os.path.join(run_dir, RUN_JSON))
    except (FileNotFoundError, NotADirectoryError):
        return None
    result = [meta.st_mtime_ns, meta.st_size]
    for table in TABLES:
        try:
            result.append(os.stat(os.path.join(run_dir, table)).st_mtime_ns)
        except (FileNotFoundError, NotADirectoryError):
            result.append(0)
    return result


def _settled(key: list[int] | None) -> list[int] | None:
    """``key`` when none of its times is within the file clock's tick of now, else None."""
    if key is None:
        return None
    newest = max(key[0], *key[2:])
    return key if time.time_ns() - newest > _SETTLE_NS else None


def list_segments(run_dir: str | os.PathLike) -> dict[str, list[str]]:
    """Table -> the published file names in that table folder, sorted (covered pieces included)."""
    run_dir = os.fspath(run_dir)
    listing = {}
    for table in TABLES:
        try:
            listing[table] = segment_names(entry.name for entry in os.scandir(os.path.join(run_dir, table)))
        except (FileNotFoundError, NotADirectoryError):
            listing[table] = []
    return listing


def damaged_segments(run_dir: str | os.PathLike, segments: dict[str, list[str]]) -> list[str]:
    """The files of ``segments`` (table -> names, as a summary lists them) that are gone or do not end
    in Parquet's footer magic (``PAR1``): truncated or overwritten since they were published.

    Published segments are immutable, so a summary's fingerprint (their names) vouches for their
    content; this is the check that a file was not damaged under that name (a full disk's partial
    copy, a bad sync), read as 4 bytes a file. Paths are ``table/name``.
    """
    damaged = []
    for table, names in segments.items():
        for name in names:
            path = os.path.join(os.fspath(run_dir), table, name)
            try:
                with open(path, "rb") as handle:
                    handle.seek(0, os.SEEK_END)
                    if handle.tell() < 12:
                        damaged.append(f"{table}/{name}")
                        continue
                    handle.seek(-4, os.SEEK_END)
                    if handle.read(4) != b"PAR1":
                        damaged.append(f"{table}/{name}")
            except OSError:
                damaged.append(f"{table}/{name}")
    return damaged


# The run.json fields the rules read (RunData's): editing one changes the findings.
_DIAGNOSED_META = ("config", "task", "env", "source")


def run_fingerprint(segments: dict[str, list[str]], meta: dict[str, Any]) -> str:
    """The content fingerprint of a run (sha256 hex): its files' names
    (immutable files, named uniquely) and the run.json fields the diagnosis reads.

    Example:
        >>> a = run_fingerprint({"scalars": ["0-0-00000000-5f1c0a93.parquet"]}, {"config": {"lr": 0.1}})
        >>> a == run_fingerprint({"scalars": ["0-0-00000000-5f1c0a93.parquet"]}, {"config": {"lr": 0.2}})
        False
    """
    content = {"segments": {table: sorted(names) for table, names in sorted(segments.items())},
               **{key: meta.get(key) or {} for key in _DIAGNOSED_META}}
    text = json.dumps(content, sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# ------------------------------------------------------------------ run.json

_META_NUMBERS = ("created_at", "heartbeat_at", "finished_at")
_META_TEXTS = ("name", "project", "status")
_META_OBJECTS = ("config", "env", "task", "source", "attempts")


def checked_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with each known key of the wrong type dropped: a hand-edited
    or foreign run.json shows as a run with less metadata, never fails a listing."""
    checked = dict(meta)
    for key in _META_NUMBERS:
        value = checked.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            checked.pop(key, None)
        else:
            checked[key] = float(value)
    for key in _META_TEXTS:
        if not isinstance(checked.get(key), str):
            checked.pop(key, None)
    for key in _META_OBJECTS:
        if not isinstance(checked.get(key), dict):
            checked.pop(key, None)
    return checked


def read_run_meta(run_dir: str | os.PathLike, run_id: str, store_name: str,
                  warn: Callable[[str], None]) -> dict[str, Any]:
    """:func:`read_meta` for a reader: a missing run.json is an unknown run, an unreadable one a warning
    (through ``warn``) and an unknown run.

    Raises:
        UnknownRunError: the run folder or its run.json is gone or unreadable.
    """
    try:
        return read_meta(run_dir)
    except FileNotFoundError:
        raise UnknownRunError(f"unknown run {run_id!r} in store {store_name}") from None
    except (OSError, ValueError) as error:
        warn(f"skipping run folder {run_dir}: unreadable {RUN_JSON} ({error})")
        raise UnknownRunError(f"run {run_id!r} has an unreadable {RUN_JSON}") from None


def read_meta(run_dir: str | os.PathLike) -> dict[str, Any]:
    """run.json, cleaned and type-checked (:func:`checked_meta`).

    Raises:
        FileNotFoundError: no run.json.
        OSError, ValueError: unreadable or not a JSON object.
    """
    path = os.path.join(os.fspath(run_dir), RUN_JSON)
    with open(path, "rb") as handle:
        meta = clean_json(json.loads(handle.read().decode("utf-8")))
    if not isinstance(meta, dict):
        raise ValueError(f"{RUN_JSON} holds a {type(meta).__name__}, not an object")
    return checked_meta(meta)


def effective_status(meta: dict[str, Any], stale_after_s: float = DEFAULT_STALE_AFTER_S,
                     now: float | None = None) -> str:
    """The status a reader shows: a ``running`` run whose heartbeat is older
    than ``stale_after_s`` is ``crashed``."""
    status = meta.get("status") or "running"
    if status == "running":
        heartbeat = meta.get("heartbeat_at") or meta.get("created_at") or 0
        if (time.time() if now is None else now) - heartbeat > stale_after_s:
            return "crashed"
    return status


def flatten_config(config: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters as one level: nested keys joined with ``.``, lists and
    other values as JSON text, text cut to :data:`MAX_HYPERPARAMETER_TEXT`
    characters, at most :data:`MAX_HYPERPARAMETERS` keys.

    Example:
        >>> flatten_config({"lr": 0.1, "optimizer": {"name": "adam", "betas": [0.9, 0.99]}})
        {'lr': 0.1, 'optimizer.name': 'adam', 'optimizer.betas': '[0.9, 0.99]'}
    """
    flat: dict[str, Any] = {}

    def visit(value: Any, prefix: str) -> None:
        if len(flat) >= MAX_HYPERPARAMETERS:
            return
        if isinstance(value, dict) and value:
            for key, item in value.items():
                visit(item, f"{prefix}.{key}" if prefix else str(key))
            return
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        elif not (value is None or isinstance(value, (bool, int, float, str))):
            value = json.dumps(value, default=str, allow_nan=True)
        if isinstance(value, str) and len(value) > MAX_HYPERPARAMETER_TEXT:
            value = value[:MAX_HYPERPARAMETER_TEXT - 1] + "…"
        flat[prefix] = value

    for key, item in (config or {}).items():
        visit(item, str(key))
    return flat


def hyperparameters(meta: dict[str, Any]) -> dict[str, Any]:
    """run.json's ``config`` flattened (:func:`flatten_config`), with ``lr`` taken from the optimizer
    the probe saw when the config has none: param group 0's ``initial_lr`` (a scheduler's base lr;
    its ``lr`` at ``watch()`` can be a warm-up's 0), else its ``lr``. ``Probe(run=...)`` without a
    config still lists, sorts and filters by its lr.

    Example:
        >>> hyperparameters({"config": {}, "env": {"optimizer": {"param_groups": [{"lr": 0.0, "initial_lr": 0.05}]}}})
        {'lr': 0.05}
    """
    flat = flatten_config(meta.get("config") or {})
    if "lr" not in flat and len(flat) < MAX_HYPERPARAMETERS:
        env = meta.get("env") if isinstance(meta.get("env"), dict) else {}
        optimizer = env.get("optimizer") if isinstance(env.get("optimizer"), dict) else {}
        groups = optimizer.get("param_groups") if isinstance(optimizer.get("param_groups"), list) else []
        first = groups[0] if groups and isinstance(groups[0], dict) else {}
        for key in ("initial_lr", "lr"):
            value = first.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                flat["lr"] = float(value)
                break
    return flat


# ------------------------------------------------------------------ series aggregates


def _merge_entries(entries: Iterable[Sequence[Any]]) -> dict[tuple, list] | None:
    """Rank 0's SERIES_FIELDS entries of several files merged per (attempt,
    split, name); None when two files hold overlapping steps of one series
    (their distinct-step counts cannot be added)."""
    merged: dict[tuple, list] = {}
    for entry in entries:
        if entry[_FIELD["rank"]] != 0:
            continue
        item = list(entry[1:])
        key = (item[_ENTRY["attempt"]], item[_ENTRY["split"]], item[_ENTRY["name"]])
        known = merged.get(key)
        merged[key] = item if known is None else _combine(known, item)
        if merged[key] is None:
            return None
    return merged


def _combine(first: list, second: list) -> list | None:
    """Two aggregates of one series over disjoint step ranges; None when they overlap."""
    e = _ENTRY
    if first[e["first_step"]] > second[e["first_step"]]:
        first, second = second, first
    if second[e["first_step"]] <= first[e["last_step"]]:
        return None
    result = list(second)
    result[e["count"]] = first[e["count"]] + second[e["count"]]
    result[e["first_step"]] = first[e["first_step"]]
    for value, step, pick in (("min", "min_step", min), ("max", "max_step", max)):
        candidates = [(item[e[value]], item[e[step]]) for item in (first, second) if item[e[value]] is not None]
        if candidates:
            result[e[value]], result[e[step]] = pick(candidates, key=lambda pair: pair[0])
    for wall, pick in (("first_wall_time", min), ("last_wall_time", max)):
        walls = [item[e[wall]] for item in (first, second) if item[e[wall]] is not None]
        result[e[wall]] = pick(walls) if walls else None
    return result


def _resolved_metrics(series: list[list], attempt_starts: dict[str, int | None]) -> dict[tuple[str, str], list] | None:
    """(split, name) -> one aggregate over the attempts the views keep; None when
    a later attempt overrides part of an earlier attempt's series (the
    aggregates cannot be cut at that step)."""
    e = _ENTRY
    starts = [(int(attempt), first) for attempt, first in attempt_starts.items() if first is not None]
    combined: dict[tuple[str, str], list] = {}
    for item in series:
        later = [first for attempt, first in starts if attempt > item[e["attempt"]]]
        if later and item[e["last_step"]] >= min(later):
            return None
        key = (item[e["split"]], item[e["name"]])
        known = combined.get(key)
        combined[key] = list(item) if known is None else _combine(known, item)
        if combined[key] is None:
            return None
    return combined


def _finite(value: Any) -> Any:
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _stats_fields(series: list[list], attempt_starts: dict[str, int | None]) -> dict[str, Any] | None:
    """The summary's step, wall-time and metric fields from its series aggregates."""
    resolved = _resolved_metrics(series, attempt_starts)
    if resolved is None:
        return None
    e = _ENTRY
    metrics: dict[str, dict[str, dict[str, Any]]] = {}
    for (split, name), item in sorted(resolved.items()):
        goal = metric_goal(name)
        best, best_step = (item[e["min"]], item[e["min_step"]]) if goal == "min" else (item[e["max"]], item[e["max_step"]])
        metrics.setdefault(split, {})[name] = {
            "last": item[e["last_value"]], "last_step": item[e["last_step"]],
            "best": best, "best_step": best_step, "goal": goal, "count": item[e["count"]],
        }
    steps = [item[e["last_step"]] for item in resolved.values()]
    first_walls = [item[e["first_wall_time"]] for item in resolved.values() if item[e["first_wall_time"]] is not None]
    last_walls = [item[e["last_wall_time"]] for item in resolved.values() if item[e["last_wall_time"]] is not None]
    train_loss = resolved.get(("train", "loss"))
    first_wall = min(first_walls) if first_walls else None
    last_wall = max(last_walls) if last_walls else None
    return {
        "last_step": max(steps) if steps else None,
        "num_steps": train_loss[e["count"]] if train_loss else 0,
        "first_wall_time": first_wall, "last_wall_time": last_wall,
        "wall_time_s": None if first_wall is None else last_wall - first_wall,
        "metrics": metrics,
    }


class _Footer:
    """What one scalars file's footer says, for the catalog."""

    __slots__ = ("attempts", "covers", "series")

    def __init__(self, path: str) -> None:
        import pyarrow.parquet as pq  # only when footers must be read: listings of fresh summaries never do

        metadata = pq.read_schema(path).metadata or {}
        self.attempts = decode_attempts(metadata) or ()
        self.covers = decode_covers(metadata)
        self.series = decode_series(metadata)


# The Runs page's training loss is the mean of the last 50 logged training
# losses, not the last one: one minibatch's loss is noise (issue #17: a run
# thrashing around 3-5 listed 5.8e-09, its luckiest last batch). Fewer than
# 500 logged: the mean of the last 10 %, so a run logged every few hundred
# steps (HF Trainer) is not averaged over half its length.
TRAIN_LOSS_TAIL = 50
TRAIN_LOSS_TAIL_SHARE = 0.10


def train_loss_tail(run_dir: str, files: Sequence[str], attempt_starts: dict[str, int | None],
                    count: int) -> float | None:
    """Mean of the last finite training losses of rank 0 (TRAIN_LOSS_TAIL of them, or
    TRAIN_LOSS_TAIL_SHARE of the ``count`` logged when fewer than 500), newest attempt
    per step as the views resolve it; None without a finite one.

    Reads the ``loss`` rows of split ``train`` of ``files`` (the scalars files
    the summary counts) with pyarrow into numpy (``store.arrow_numpy``: no
    pandas): a summary is computed once per change of the run, never on a
    fresh listing.
    """
    import numpy as np

    from traindoctor.store.arrow_numpy import read_segment, to_numpy

    wanted = max(1, min(TRAIN_LOSS_TAIL, int(count * TRAIN_LOSS_TAIL_SHARE)))
    starts = sorted((int(attempt), first) for attempt, first in attempt_starts.items() if first is not None)
    rows: dict[int, tuple[int, float]] = {}  # step -> (attempt, value), newest attempt wins
    for name in files:
        try:
            table = read_segment(os.path.join(run_dir, "scalars", name),
                                 ["rank", "attempt", "step", "value", "name", "split"])
            column = {key: to_numpy(table.column(key)) for key in table.column_names}
        except Exception:  # gone (a compaction) or foreign: the tail is a nicety, never a reason to fail
            continue
        chosen = ((column["name"] == "loss") & (column["split"] == "train") & (column["rank"] == 0)
                  & np.isfinite(column["value"]) & ~np.isnan(column["attempt"]) & ~np.isnan(column["step"]))
        for attempt, step, value in zip(column["attempt"][chosen].astype(np.int64).tolist(),
                                        column["step"][chosen].astype(np.int64).tolist(),
                                        column["value"][chosen].tolist()):
            later = [first for other, first in starts if other > attempt]
            if later and step >= min(later):
                continue  # a later attempt replaced this step
            known = rows.get(step)
            if known is None or attempt >= known[0]:
                rows[step] = (attempt, value)
    if not rows:
        return None
    tail = [rows[step][1] for step in sorted(rows)[-wanted:]]
    return math.fsum(tail) / len(tail)


def shown_train_loss(summary: dict[str, Any]) -> float | None:
    """The training loss a table of runs shows (the Runs page, ``traindoctor runs``): the
    smoothed one, ``train_loss_tail``; NaN when the last logged loss is not finite (a
    diverged run is not summed up by its last finite values)."""
    last = ((summary.get("metrics") or {}).get("train") or {}).get("loss", {}).get("last")
    if isinstance(last, float) and last != last:
        return last
    return summary.get("train_loss_tail")


# ------------------------------------------------------------------ the catalog


class Catalog:
    """The summaries of a store's runs, kept current (module doc).

    Args:
        root: the store folder.
        stale_after_s: a running run whose heartbeat is older reads as crashed.
        store: the :class:`~traindoctor.store.reader.Store` to run the exact
            fallback query with.
        open_store: else, a function of the store folder that opens one, on
            first need. With neither, a run whose footers cannot give its
            summary is listed without steps or metrics, with a warning.
        write: keep the summaries it computes (False: compute only, as for a
            read-only store).
        remember: keep the summaries read in memory, each with its run's stamp
            and summary.json's own stat, so a long-lived reader (the
            dashboard) lists again with one more ``stat`` per run instead of
            a file read and a JSON parse. Off for one-shot commands, which
            would pay the extra ``stat`` for nothing.
        sync: called with the run ids about to be read (None: all) before
            each read; an object store's mirror brings ``root`` up to date
            there (``store.fs.Mirror.sync``).
    """

    def __init__(self, root: str | os.PathLike, *, stale_after_s: float = DEFAULT_STALE_AFTER_S,
                 store: Any = None, open_store: Callable[[Path], Any] | None = None, write: bool = True,
                 remember: bool = False, sync: Callable[[Sequence[str] | None], None] | None = None,
                 name: str | None = None) -> None:
        self.root = Path(root)
        # What messages call the store: the folder, or the URL of the bucket this folder mirrors.
        self.name = name if name is not None else str(self.root)
        self._sync = sync
        self.stale_after_s = float(stale_after_s)
        self.write = write
        self.remember = remember
        self._store = store
        self._open_store = open_store
        self._warnings = OnceWarnings()
        self._lock = threading.Lock()
        # run_id -> (stamp, summary.json (mtime_ns, size), summary), when remember.
        self._memory: dict[str, tuple[list[int], tuple[int, int], dict[str, Any]]] = {}
        # (the index file's (mtime_ns, size), its parsed runs), when remember: parsing 10,000
        # runs' index costs ~0.3 s of CPU, most of a listing, on every rerun of a page.
        self._index_memory: tuple[tuple[int, int], dict[str, list]] | None = None

    # ---------------------------------------------------------------- reading

    def summaries(self, run_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The current summary of each run (all runs when None), sorted by run id.

        Each has the keys of ``store.format.SUMMARY_KEYS``, with ``status`` as
        a reader shows it (a running run whose heartbeat stopped is crashed).
        Runs whose run.json cannot be read are skipped with a warning.
        """
        if self._sync is not None:
            self._sync(run_ids)
        now = time.time()
        missing: list[str] = []
        found = []
        for run_id, run_dir, key in self._folders(run_ids):
            try:
                summary = self._current(run_id, run_dir, key, missing)
            except UnknownRunError:
                continue
            summary = dict(summary)
            summary["status"] = effective_status(summary, self.stale_after_s, now)
            found.append(summary)
        self._warn_missing(missing)
        return found

    def listing(self, run_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The :data:`LISTING_KEYS` of each run's current summary (all runs when
        None), sorted by run id, ``status`` as a reader shows it: what a table
        of runs needs, read from one store-level index.

        The index (``store.format.INDEX_JSON``) keeps these fields of every
        run with the stamp and summary.json stat they were read under; a run
        whose stamp or summary changed is read (and summarised) again, and the
        index rewritten. One file parse instead of one per run: listing
        10,000 runs costs their stat calls and about 6 MB of JSON.
        """
        if self._sync is not None:
            self._sync(run_ids)
        now = time.time()
        index = self._index()
        changed = False
        missing: list[str] = []
        rows = []
        folders = self._run_dirs(run_ids)
        for run_id, run_dir in folders:
            meta_stat = list(_file_stat(os.path.join(run_dir, RUN_JSON)))
            if meta_stat[1] < 0:
                self._not_a_run(run_id, run_dir, named=run_ids is not None)
                continue
            summary_path = os.path.join(run_dir, SUMMARY_JSON)
            entry = index.get(run_id)
            key = None
            if entry is not None and entry[1] == list(_file_stat(summary_path)) and (
                    # A closed run's writers are done: what changes it later (a resumed attempt,
                    # a re-import) rewrites run.json, a compaction its summary. Two stats, not six.
                    (entry[2][_STATUS] in _CLOSED and entry[0][:2] == meta_stat)
                    or entry[0] == (key := stamp(run_dir))):
                row = dict(zip(LISTING_KEYS, entry[2]))
            else:
                key = key or stamp(run_dir)
                if key is None:
                    continue  # run.json went away meanwhile
                try:
                    summary = self._current(run_id, run_dir, key, missing)
                except UnknownRunError:
                    continue
                row = _listing_row(summary)
                if summary.get("checked") == key:
                    index[run_id] = [key, list(_file_stat(summary_path)), [row[field] for field in LISTING_KEYS]]
                    changed = True
            row["status"] = effective_status(row, self.stale_after_s, now)
            rows.append(row)
        if run_ids is None:
            present = {run_id for run_id, _ in folders}
            gone = [run_id for run_id in index if run_id not in present]
            for run_id in gone:
                del index[run_id]
            changed = changed or bool(gone)
        if changed and self.write and _write_index(self.root, index) and self.remember:
            with self._lock:
                self._index_memory = (_file_stat(os.path.join(self.root, INDEX_JSON)), index)
        self._warn_missing(missing)
        return rows

    def _index(self) -> dict[str, list]:
        """The store's index (``_read_index``), parsed once per version of the file when
        ``remember``; a copy the caller may change (its entries are replaced, never changed)."""
        if not self.remember:
            return _read_index(self.root)
        # Stat before reading: what is read is at least as new as the stat it is kept under.
        file_stat = _file_stat(os.path.join(self.root, INDEX_JSON))
        with self._lock:
            known = self._index_memory
        if known is None or known[0] != file_stat:
            known = (file_stat, _read_index(self.root))
            with self._lock:
                self._index_memory = known
        return dict(known[1])

    def _warn_missing(self, missing: list[str]) -> None:
        # An object store's writers leave summaries to readers (no DuckDB, no
        # other ranks' footers in a training process): not worth a warning.
        if missing and self._sync is None:
            named = ", ".join(missing[:_NAMED_IN_WARNING])
            more = f" and {len(missing) - _NAMED_IN_WARNING} more" if len(missing) > _NAMED_IN_WARNING else ""
            self._warn(f"{len(missing)} closed run(s) in {self.name} had no {SUMMARY_JSON} (written by an older "
                       f"traindoctor, or removed); rebuilt: {named}{more}")

    def summary(self, run_id: str) -> dict[str, Any]:
        """The current summary of one run.

        Raises:
            UnknownRunError: no such run, or its run.json cannot be read.
        """
        found = self.summaries([run_id])
        if not found:
            raise UnknownRunError(f"unknown run {run_id!r} in store {self.name}")
        return found[0]

    def resolve(self, run: str) -> str:
        """A run id for ``run``: a run id, or a name (the newest run with that name).

        Raises:
            UnknownRunError: no run has that id or name.
        """
        try:
            if check_run_id(run) and stamp(self.root / run) is not None:
                return run
        except StoreError:
            pass
        rows = self.listing()
        matches = [((row.get("created_at") or 0.0), row["run_id"]) for row in rows if row.get("name") == run]
        if not matches:
            raise UnknownRunError(f"unknown run {run!r} in store {self.name}{did_you_mean(run, rows)}")
        return max(matches)[1]

    def run_ids(self) -> list[str]:
        """Ids of the run folders (those with a run.json), sorted."""
        if self._sync is not None:
            self._sync(None)
        return [run_id for run_id, _, _ in self._folders(None)]

    def has_runs(self) -> bool:
        """Whether any folder of the store holds a run (stops at the first)."""
        return any(os.path.exists(os.path.join(run_dir, RUN_JSON)) for _, run_dir in self._run_dirs(None))

    def _folders(self, run_ids: Sequence[str] | None) -> list[tuple[str, str, list[int]]]:
        """(run_id, folder, stamp) of each run folder, sorted by run id."""
        found = []
        for run_id, run_dir in self._run_dirs(run_ids):
            key = stamp(run_dir)
            if key is None:
                self._not_a_run(run_id, run_dir, named=run_ids is not None)
                continue
            found.append((run_id, run_dir, key))
        return found

    def _run_dirs(self, run_ids: Sequence[str] | None) -> list[tuple[str, str]]:
        """(run_id, folder) of each folder that may hold a run (no ``stat`` yet), sorted by run id."""
        root = os.fspath(self.root)
        if run_ids is not None:
            return [(run_id, os.path.join(root, run_id)) for run_id in run_ids]
        try:
            entries = list(os.scandir(root))
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                found.append((check_run_id(entry.name), entry.path))
            except StoreError:
                # A name no writer makes (e.g. bytes that are not UTF-8,
                # which no later step can encode): never a run.
                self._warn(f"skipping {ascii(entry.path)}: not a run id")
        found.sort()
        return found

    def _not_a_run(self, run_id: str, run_dir: str, *, named: bool) -> None:
        """A folder without run.json: an error when asked for by id, else skipped (with a word unless a writer is creating it)."""
        if named:
            raise UnknownRunError(f"unknown run {run_id!r} in store {self.name}")
        if not any(os.path.isdir(os.path.join(run_dir, table)) for table in TABLES):
            # A folder with table folders but no run.json yet is a run a
            # writer is creating (rank 0 writes run.json): not worth a word.
            self._warn(f"skipping {run_dir}: not a run folder (no {RUN_JSON})")

    def _current(self, run_id: str, run_dir: str, key: list[int], missing: list[str]) -> dict[str, Any]:
        if self.remember:
            remembered = self._memory.get(run_id)
            file_stat = _file_stat(os.path.join(run_dir, SUMMARY_JSON))
            if remembered is not None and remembered[0] == key and remembered[1] == file_stat:
                return remembered[2]
        summary = self._read_or_refresh(run_id, run_dir, key, missing)
        if self.remember and summary.get("checked") == key:
            with self._lock:
                self._memory[run_id] = (key, _file_stat(os.path.join(run_dir, SUMMARY_JSON)), summary)
        return summary

    def _read_or_refresh(self, run_id: str, run_dir: str, key: list[int], missing: list[str]) -> dict[str, Any]:
        previous, problem = _read_summary(run_dir)
        # A summary written before train_loss_tail existed is brought up to date quietly.
        if (previous is not None and previous.get("checked") == key and previous.get("run_id") == run_id
                and "train_loss_tail" in previous):
            return previous
        summary = self.refresh(run_id, previous=previous)
        if problem == "missing":
            if summary.get("status") in ("finished", "crashed"):
                missing.append(run_id)
        elif problem is not None:
            self._warn(f"{os.path.join(run_dir, SUMMARY_JSON)} was {problem}; rebuilt it")
        return summary

    # ---------------------------------------------------------------- computing

    def refresh(self, run_id: str, *, previous: dict[str, Any] | None = None, exact: bool = True,
                write: bool | None = None) -> dict[str, Any]:
        """Bring one run's summary up to date (module doc), keep it, and return it.

        Args:
            previous: the summary on disk (read when None).
            exact: allow the DuckDB fallback. False (a closing writer in a
                training process) leaves a summary that footers cannot give
                exactly to the next reader, and returns it unsaved.
            write: keep it on disk (default: the catalog's ``write``).

        Raises:
            UnknownRunError: the run folder or its run.json is gone or unreadable.
        """
        run_dir = os.path.join(os.fspath(self.root), run_id)
        if previous is None:
            previous, _ = _read_summary(run_dir)
        key = stamp(run_dir)  # before listing: a change after it makes the next read look again
        meta = read_run_meta(run_dir, run_id, self.name, self._warn)
        listing = list_segments(run_dir)
        stats = self._stats(run_id, run_dir, previous, listing["scalars"], exact=exact)
        if stats is None:  # only a query could say, and none was allowed or possible: not kept
            return build_summary(run_id, meta, None, listing, key)
        summary = build_summary(run_id, meta, stats, listing, key)
        train_loss = (summary.get("metrics") or {}).get("train", {}).get("loss")
        if (previous is not None and "train_loss_tail" in previous
                and (previous.get("segments") or {}).get("scalars") == summary["segments"].get("scalars")
                and previous.get("attempt_starts") == summary["attempt_starts"]):
            summary["train_loss_tail"] = previous["train_loss_tail"]  # same files (a heartbeat): no rows read
        else:
            summary["train_loss_tail"] = None if not train_loss else train_loss_tail(
                run_dir, summary["segments"].get("scalars") or [], summary["attempt_starts"], train_loss["count"])
        if previous is not None:
            cached = previous.get("findings")
            if isinstance(cached, dict) and cached.get("fingerprint") == summary["fingerprint"]:
                summary["findings"] = cached
        if (self.write if write is None else write) and summary != previous:
            write_summary(run_dir, summary)
        return summary

    def _stats(self, run_id: str, run_dir: str, previous: dict[str, Any] | None, names: list[str], *,
               exact: bool) -> dict[str, Any] | None:
        """series, attempt_starts, covered and the scalars files they come
        from; None when only the exact query could say and it is not allowed."""
        usable = (previous is not None and previous.get("summary_format") == SUMMARY_FORMAT
                  and isinstance(previous.get("series"), list) and isinstance(previous.get("segments"), dict))
        if usable:
            counted = previous["segments"].get("scalars") or []
            if set(names) - set(previous.get("covered") or []) == set(counted):
                return {key: previous[key] for key in ("series", "attempt_starts", "covered")} | {"scalars": counted}
            appended = self._appended(run_dir, previous, names)
            if _resolvable(appended):
                return appended
        from_footers = self._from_footers(run_dir, names)
        if _resolvable(from_footers):
            return from_footers
        return self._exact(run_id) if exact else None

    def _appended(self, run_dir: str, previous: dict[str, Any], names: list[str]) -> dict[str, Any] | None:
        """``previous`` plus the footers of the files published since; None
        unless files were only added (a compaction or a resume recomputes)."""
        counted = set(previous["segments"].get("scalars") or [])
        covered = set(previous.get("covered") or [])
        present = set(names)
        if not counted <= present:
            return None
        new = sorted(present - counted - covered)
        footers = {}
        for name in new:
            try:
                footers[name] = _Footer(os.path.join(run_dir, "scalars", name))
            except FileNotFoundError:
                return None
            except Exception:
                return None  # unreadable or foreign: the exact query skips it with a warning
        newly_covered = {piece for footer in footers.values() for piece in footer.covers}
        if newly_covered & counted or any(footer.series is None for footer in footers.values()):
            return None
        starts = dict(previous.get("attempt_starts") or {})
        for footer in footers.values():
            note_attempt_starts(starts, footer.attempts)
        kept = [footer for name, footer in footers.items() if name not in newly_covered]
        old = [[0, *item] for item in previous["series"]]
        merged = _merge_entries([*old, *(entry for footer in kept for entry in footer.series)])
        if merged is None:
            return None
        return {"series": [merged[key] for key in sorted(merged, key=str)], "attempt_starts": starts,
                "covered": sorted((covered | newly_covered) & present),
                "scalars": sorted(counted | {name for name in new if name not in newly_covered})}

    def _from_footers(self, run_dir: str, names: list[str]) -> dict[str, Any] | None:
        """The aggregates summed from every scalars footer; None when a file has
        none or two files overlap."""
        footers = {}
        for name in names:
            try:
                footers[name] = _Footer(os.path.join(run_dir, "scalars", name))
            except Exception:
                return None  # gone (compaction) or unreadable: the exact query lists again and warns
        covered = {piece for footer in footers.values() for piece in footer.covers}
        kept = {name: footer for name, footer in footers.items() if name not in covered}
        if any(footer.series is None for footer in kept.values()):
            return None
        merged = _merge_entries(entry for footer in kept.values() for entry in footer.series)
        if merged is None:
            return None
        starts: dict[str, int | None] = {}
        for footer in kept.values():
            note_attempt_starts(starts, footer.attempts)
        return {"series": [merged[key] for key in sorted(merged, key=str)], "attempt_starts": starts,
                "covered": sorted(covered & set(names)), "scalars": sorted(kept)}

    def _exact(self, run_id: str) -> dict[str, Any] | None:
        """The aggregates of rank 0's resolved rows, by the reader's query; None without a Store."""
        if self._store is None and self._open_store is not None:
            self._store = self._open_store(self.root)
        if self._store is None:
            self._warn(f"run {run_id}: its summary needs a query (its files' footers cannot give it) and this "
                       f"catalog has no Store; listed without steps or metrics")
            return None
        return self._store.series_aggregates(run_id)

    def _warn(self, message: str) -> None:
        self._warnings.warn(message, stacklevel=4)


def _resolvable(stats: dict[str, Any] | None) -> bool:
    """Whether summed footer aggregates give the views' rows exactly (no later
    attempt overrides part of an earlier attempt's series)."""
    return stats is not None and _resolved_metrics(stats["series"], stats["attempt_starts"]) is not None


def note_attempt_starts(starts: dict[str, int | None], attempts: Iterable[tuple[int, int, int | None]]) -> None:
    """Fold rank 0's (rank, attempt, first_step) footer entries into attempt -> first step."""
    for rank, attempt, first in attempts:
        if rank != 0:
            continue
        known = starts.get(str(attempt))
        starts[str(attempt)] = first if known is None else known if first is None else min(known, first)


def build_summary(run_id: str, meta: dict[str, Any], stats: dict[str, Any] | None,
                  listing: dict[str, list[str]], key: list[int] | None) -> dict[str, Any]:
    """A run's summary from its checked run.json, its series aggregates and its files.

    ``stats`` None (footers could not say and the exact query was not
    allowed) gives a summary without step or metric fields.
    """
    import traindoctor  # its version; the package's __init__ imports nothing at import time

    task = meta.get("task") or {}
    num_classes = task.get("num_classes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or abs(num_classes) >= 2**63:
        num_classes = None
    covered = set(stats["covered"]) if stats else set()
    segments = {table: [name for name in names if name not in covered] for table, names in listing.items()}
    if stats:
        segments["scalars"] = stats["scalars"]
    summary: dict[str, Any] = {
        "summary_format": SUMMARY_FORMAT, "traindoctor_version": traindoctor.__version__,
        "run_id": run_id, "name": meta.get("name") or run_id, "project": meta.get("project"),
        "status": meta.get("status") or "running",
        "created_at": meta.get("created_at"), "heartbeat_at": meta.get("heartbeat_at"),
        "finished_at": meta.get("finished_at"), "num_classes": num_classes,
        "config": meta.get("config") or {}, "env": meta.get("env") or {}, "task": task,
        "source": meta.get("source"), "attempts": meta.get("attempts") or {},
        "hyperparameters": hyperparameters(meta),
        "last_step": None, "num_steps": 0, "first_wall_time": None, "last_wall_time": None, "wall_time_s": None,
        "metrics": {}, "series": [], "attempt_starts": {}, "covered": [],
        "segments": segments, "fingerprint": run_fingerprint(segments, meta), "checked": _settled(key),
    }
    if stats is not None:
        fields = _stats_fields(stats["series"], stats["attempt_starts"])
        if fields is None:
            raise StoreError(f"run {run_id}: inconsistent series aggregates")  # the exact query never overlaps
        summary.update(fields)
        summary.update(series=stats["series"], attempt_starts=stats["attempt_starts"], covered=stats["covered"])
    return summary


# ------------------------------------------------------------------ files


# The summary fields a table of runs needs (store.listing's fields and the
# findings counts): what the store-level index keeps of each summary.
LISTING_KEYS = ("run_id", "name", "project", "status", "created_at", "heartbeat_at", "finished_at", "num_classes",
                "last_step", "num_steps", "wall_time_s", "metrics", "hyperparameters", "fingerprint", "findings",
                "train_loss_tail")


_CLOSED = ("finished", "crashed")
_STATUS = LISTING_KEYS.index("status")


def _listing_row(summary: dict[str, Any]) -> dict[str, Any]:
    """The LISTING_KEYS of a summary, metrics cut to their last and best values."""
    row = {field: summary.get(field) for field in LISTING_KEYS}
    row["metrics"] = {split: {name: {"last": values.get("last"), "best": values.get("best")}
                              for name, values in names.items()}
                      for split, names in (summary.get("metrics") or {}).items()}
    return row


def _read_index(root: Path) -> dict[str, list]:
    """run_id -> [stamp, summary.json stat, listing values in LISTING_KEYS order] from the
    store's index; {} when absent, unreadable or of another layout."""
    try:
        with open(os.path.join(os.fspath(root), INDEX_JSON), "rb") as handle:
            index = json.loads(handle.read())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(index, dict) or index.get("summary_format") != SUMMARY_FORMAT:
        return {}
    runs = index.get("runs")
    if not isinstance(runs, dict) or index.get("fields") != list(LISTING_KEYS):
        return {}
    return runs


def _write_index(root: Path, runs: dict[str, list]) -> bool:
    text = json.dumps({"summary_format": SUMMARY_FORMAT, "fields": LISTING_KEYS, "runs": runs}, allow_nan=True,
                      default=str, ensure_ascii=False, separators=(",", ":"))
    return _atomic_write(os.path.join(os.fspath(root), INDEX_JSON), text.encode("utf-8", "surrogatepass"))


def _file_stat(path: str) -> tuple[int, int]:
    try:
        stat = os.stat(path)
    except OSError:
        return (0, -1)
    return (stat.st_mtime_ns, stat.st_size)


def _read_summary(run_dir: str) -> tuple[dict[str, Any] | None, str | None]:
    """(summary, None), or (None, why not: "missing" or what is wrong with it)."""
    try:
        with open(os.path.join(run_dir, SUMMARY_JSON), "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None, "missing"
    except OSError as error:
        return None, f"unreadable ({error.strerror or error})"
    try:
        summary = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        return None, f"corrupt ({type(error).__name__})"
    if not isinstance(summary, dict) or summary.get("summary_format") != SUMMARY_FORMAT:
        found = summary.get("summary_format") if isinstance(summary, dict) else type(summary).__name__
        return None, f"of another format ({found!r}, expected {SUMMARY_FORMAT})"
    return summary, None


def _atomic_write(path: str, data: bytes) -> bool:
    """Replace ``path`` with ``data`` (temporary file + rename; no fsync: a
    cache). False when the store cannot be written."""
    tmp = os.path.join(os.path.dirname(path), f"{TEMPORARY_PREFIX}{os.path.basename(path)}-{os.getpid()}-"
                                              f"{secrets.token_hex(6)}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False


def write_summary(run_dir: str | os.PathLike, summary: dict[str, Any]) -> bool:
    """Keep ``summary`` in the run folder; False when the store cannot be written."""
    text = json.dumps(summary, allow_nan=True, default=str, ensure_ascii=False)
    return _atomic_write(os.path.join(os.fspath(run_dir), SUMMARY_JSON), text.encode("utf-8", "surrogatepass"))


def read_findings(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's findings cache (``store.format.FINDINGS_KEYS``); None when absent or unreadable."""
    try:
        with open(os.path.join(os.fspath(run_dir), FINDINGS_JSON), "rb") as handle:
            cached = json.loads(handle.read())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return cached if isinstance(cached, dict) else None


def write_findings(run_dir: str | os.PathLike, cached: dict[str, Any]) -> bool:
    """Keep a run's findings cache; False when the store cannot be written."""
    text = json.dumps(cached, allow_nan=True, default=str, ensure_ascii=False)
    return _atomic_write(os.path.join(os.fspath(run_dir), FINDINGS_JSON), text.encode("utf-8", "surrogatepass"))


def attach_findings(run_dir: str | os.PathLike, fingerprint: str, findings: dict[str, Any]) -> bool:
    """Put a findings entry (engine, fingerprint, counts, rules) into the run's
    summary, if the summary still describes ``fingerprint``; False otherwise
    (the run changed meanwhile: the next listing shows it undiagnosed)."""
    summary, _ = _read_summary(os.fspath(run_dir))
    if summary is None or summary.get("fingerprint") != fingerprint:
        return False
    summary["findings"] = findings
    return write_summary(run_dir, summary)


def summarise_closed_run(run_dir: str | os.PathLike) -> None:
    """Write the summary of a run its writer just closed, from footers alone.

    For ``RunWriter.close``: no DuckDB in a training process. When the
    footers cannot give it exactly (a resumed run over recorded steps), or
    the store cannot be written, nothing is kept and the first reader
    computes it.
    """
    run_dir = Path(run_dir)
    Catalog(run_dir.parent).refresh(run_dir.name, exact=False)
