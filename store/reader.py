"""The reader half of the run store: DuckDB views over the published segments.

Every query lists the segment files afresh, opens its own DuckDB connection
(a cursor of the Store's in-memory database) with views over them and closes
it, so it takes no lock, sees whatever training has published so far, and is
safe to call from any thread. A file's footer is read once (cached by path,
size and mtime): it says which attempts the file holds and which segments a
compacted file replaces, so no query scans rows for bookkeeping. This is
the only module (with ``store.compact``) that speaks SQL; every value is a
bound parameter and file lists go in through DuckDB's Python API. What the
files hold (tables, columns, footer keys) is stated in
:mod:`traindoctor.store.format`; the views have exactly those columns. The
listing, the footer cache and the skipping of bad files are
:class:`~traindoctor.store.files.StoreFiles`' (this ``Store`` extends it);
:func:`~traindoctor.store.run_data.load_run` reads a run through them with
pyarrow alone (``store.run_tables``), giving the views' rows.

Example:
    >>> store = Store("traindoctor_runs")  # doctest: +SKIP
    >>> store.runs()[["name", "status", "last_step"]]           # doctest: +SKIP
    >>> with store.connect() as con:                            # doctest: +SKIP
    ...     con.sql("SELECT name, max(step) FROM scalars GROUP BY name").show()
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Callable, Iterable, Sequence

import duckdb
import pandas as pd

from traindoctor.store.catalog import (  # noqa: F401 (default_store_path: its old home)
    DEFAULT_STALE_AFTER_S, default_store_path, list_segments, note_attempt_starts,
)
from traindoctor.store.errors import StoreError, UnknownRunError  # noqa: F401 (UnknownRunError: its old home)
from traindoctor.store.files import (  # noqa: F401 (SegmentInfo, schema_problem: their old home)
    MAX_READ_RETRIES, SegmentInfo, StoreFiles, schema_problem,
)
from traindoctor.store.format import COLUMNS, FLOAT64, INT32, INT64, STRING, TABLES, column_names


RUN_COLUMNS = [
    "run_id", "name", "project", "status", "created_at", "heartbeat_at", "finished_at",
    "config", "env", "task", "num_classes", "source", "attempts",
]
# SQL types of the contract's logical column types.
_SQL_TYPES = {STRING: "VARCHAR", INT32: "INTEGER", INT64: "BIGINT", FLOAT64: "DOUBLE"}
# SQL types of the runs view; config, env, task, source and attempts are JSON text.
_RUN_TYPES = {
    "run_id": "VARCHAR", "name": "VARCHAR", "project": "VARCHAR", "status": "VARCHAR",
    "created_at": "DOUBLE", "heartbeat_at": "DOUBLE", "finished_at": "DOUBLE",
    "config": "VARCHAR", "env": "VARCHAR", "task": "VARCHAR", "num_classes": "BIGINT",
    "source": "VARCHAR", "attempts": "VARCHAR",
}


# The SERIES_FIELDS aggregates (store.format) of the global rows of a scalars
# source, per (rank, attempt, split, name): compaction writes them into the
# merged file's footer, and the run catalog computes them over the resolved
# view when footers cannot be summed (a resumed run's overlapping attempts).
SERIES_SQL = """
    SELECT rank, attempt, split, name,
           count(DISTINCT step), min(step), max(step),
           arg_max(value, step),
           min(value) FILTER (WHERE isfinite(value)), arg_min(step, value) FILTER (WHERE isfinite(value)),
           max(value) FILTER (WHERE isfinite(value)), arg_max(step, value) FILTER (WHERE isfinite(value)),
           min(wall_time) FILTER (WHERE isfinite(wall_time)), max(wall_time) FILTER (WHERE isfinite(wall_time))
    FROM {source}
    WHERE layer IS NULL AND rank IS NOT NULL AND attempt IS NOT NULL AND split IS NOT NULL AND name IS NOT NULL
      AND step IS NOT NULL
    GROUP BY ALL ORDER BY ALL
"""


STAT_COLUMNS = ["last_step", "num_steps", "final_train_loss", "final_val_loss", "final_val_accuracy"]


def _last(summary: dict[str, Any], split: str, name: str) -> float:
    value = ((summary.get("metrics") or {}).get(split) or {}).get(name, {}).get("last")
    return float("nan") if value is None else float(value)


def runs_frame(summaries: Sequence[dict[str, Any]], *, with_stats: bool = True) -> pd.DataFrame:
    """The runs table (RUN_COLUMNS, plus STAT_COLUMNS with ``with_stats``) of
    catalog summaries, newest first."""
    rows = []
    for summary in summaries:
        row = {column: summary.get(column) for column in RUN_COLUMNS}
        for column in ("config", "env", "task", "attempts"):
            row[column] = row[column] or {}
        if with_stats:
            row.update(last_step=summary.get("last_step"), num_steps=summary.get("num_steps"),
                       final_train_loss=_last(summary, "train", "loss"), final_val_loss=_last(summary, "val", "loss"),
                       final_val_accuracy=_last(summary, "val", "accuracy"))
        rows.append(row)
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS + (STAT_COLUMNS if with_stats else []))
    for column in ("created_at", "heartbeat_at", "finished_at"):
        frame[column] = frame[column].astype("float64")
    if with_stats:
        frame["last_step"] = frame["last_step"].astype("Float64").astype("float64")
    return frame.sort_values("created_at", ascending=False, kind="stable").reset_index(drop=True)


def open_store(path: str | os.PathLike | None = None) -> "Store":
    """A :class:`Store` on ``path`` (a folder or an object-store URL), else on
    ``$TRAINDOCTOR_STORE`` when that is a URL, else on :func:`default_store_path`."""
    if path is None and "://" in os.environ.get("TRAINDOCTOR_STORE", ""):
        path = os.environ["TRAINDOCTOR_STORE"]
    return Store(path if path is not None else default_store_path())


class Store(StoreFiles):
    """A folder of runs, read through DuckDB views over the files :class:`StoreFiles` lists.

    Takes the arguments of :class:`StoreFiles` (``root``: a folder or an
    object-store URL; ``stale_after_s``) and raises what it raises; it is its
    own SQL store for the run catalog's exact summaries.
    """

    def __init__(self, root: str | os.PathLike, *, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> None:
        # One in-memory DuckDB database per Store; every call gets its own
        # connection to it (a cursor: ~0.01 ms, against ~15 ms for a new
        # database), whose temporary views no other connection sees.
        self._database: duckdb.DuckDBPyConnection | None = None
        super().__init__(root, stale_after_s=stale_after_s)

    def query_store(self) -> "Store":
        return self

    # ------------------------------------------------------------------- runs


    def runs(self, *, with_stats: bool = True) -> pd.DataFrame:
        """One row per run, newest first, from the run catalog: metadata from
        run.json plus, with ``with_stats``, last_step, num_steps and final
        train/val loss and accuracy."""
        return runs_frame(self.catalog.summaries(), with_stats=with_stats)

    def series_aggregates(self, run_id: str) -> dict[str, Any]:
        """The run catalog's series aggregates (``store.format.SERIES_FIELDS``
        without the rank) of rank 0's rows as the views resolve them, by one
        query over exactly the files listed before and after it; with the
        attempts' first steps and the files they cover, as
        :class:`~traindoctor.store.catalog.Catalog` keeps them."""
        sql = SERIES_SQL.format(source="(SELECT * FROM scalars WHERE rank = 0)")
        for _ in range(MAX_READ_RETRIES):
            before = self.segments(run_id, "scalars")
            rows = self.fetch(sql, runs=[run_id], tables=("scalars",))
            after = self.segments(run_id, "scalars")
            if [path for path, _ in before] == [path for path, _ in after]:
                break
        starts: dict[str, int | None] = {}
        for _, info in after:
            note_attempt_starts(starts, info.attempts or ())
        present = set(list_segments(self.root / run_id)["scalars"])
        covered = {piece for _, info in after for piece in info.covers} & present
        return {"series": [list(row[1:]) for row in rows], "attempt_starts": starts, "covered": sorted(covered),
                "scalars": sorted(path.name for path, _ in after)}

    # ------------------------------------------------------------- connection

    def connect(self, runs: Sequence[str] | None = None) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with the views ``runs``, ``scalars``,
        ``confusion`` and ``events`` over ``runs`` (run ids; all when None).

        The caller owns the connection: close it (it is a context manager).
        The views are fixed at the file list seen now; call again for fresh data.
        In ``scalars``, ``confusion`` and ``events`` a resumed run's newest
        attempt wins for overlapping steps; ``*_raw`` views keep every attempt.
        """
        return self._connect(_one_or_many(runs), TABLES, with_runs=True)

    def _connect(
        self, runs: Sequence[str] | None, tables: Sequence[str], *, with_runs: bool
    ) -> duckdb.DuckDBPyConnection:
        """connect() with only the views a query needs: each view costs a
        file listing, a registration and, for runs, every run.json."""
        if runs is not None:
            self.sync(runs)
        run_ids = self.run_ids() if runs is None else [self.checked_id(r) for r in runs]
        con = self._new_connection()
        try:
            if with_runs:
                self._create_runs_view(con, runs, run_ids)
            segments = {table: [(r, path, info) for r in run_ids for path, info in self.segments(r, table)]
                        for table in {"scalars", *tables}}
            for table in tables:
                self._create_raw_view(con, table, segments[table])
            bounds = self._attempt_bounds(con, segments["scalars"])
            if bounds:
                con.register("attempt_bounds_frame", pd.DataFrame(
                    bounds, columns=["run_id", "rank", "attempt", "next_start"]))
                con.execute("CREATE TEMP TABLE attempt_bounds AS SELECT * FROM attempt_bounds_frame")
                con.unregister("attempt_bounds_frame")
            for table in tables:
                self._create_table_view(con, table, resolve_attempts=bool(bounds))
            return con
        except BaseException:
            con.close()
            raise

    def _create_runs_view(self, con: duckdb.DuckDBPyConnection, runs: Sequence[str] | None,
                          run_ids: list[str]) -> None:
        frame = runs_frame(self.catalog.summaries(None if runs is None else run_ids), with_stats=False)
        frame = frame[frame["run_id"].isin(run_ids)].copy()
        for column in ("config", "env", "task", "source", "attempts"):
            frame[column] = frame[column].map(lambda v: json.dumps(v, default=str))
        con.register("runs_frame", frame)
        # Fixed types: a column that is None in every run would otherwise
        # come out typed NULL (and break exports and unions).
        columns = ", ".join(f'CAST("{name}" AS {kind}) AS "{name}"' for name, kind in _RUN_TYPES.items())
        con.execute(f"CREATE TEMP VIEW runs AS SELECT {columns} FROM runs_frame")

    def _new_connection(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._database is None:
                database = duckdb.connect(":memory:")
                # Dashboards and training share small machines: two threads
                # answer these queries without starving the training loop.
                database.execute("SET threads TO 2")
                self._database = database
            con = self._database.cursor()
        con.execute("SET enable_progress_bar = false")
        return con

    @staticmethod
    def _create_raw_view(con: duckdb.DuckDBPyConnection, table: str, segments: list) -> None:
        """``<table>_raw``: every row of the files, in the table's columns
        (NULL where a foreign file lacks one)."""
        raw = f"{table}_raw"
        present = {column for _, _, info in segments for column in info.columns}
        if segments:
            files = [duckdb_path(path) for _, path, _ in segments]
            # Reading the schema of every file (union_by_name) costs one open
            # per file at bind time: only when the files' columns differ.
            mixed = len({info.columns for _, _, info in segments}) > 1
            # register(): a view only this connection sees (create_view would
            # put it in the catalog that all cursors of the database share).
            con.register(f"{table}_files", con.read_parquet(files, union_by_name=mixed))
        columns = table_select_list(table, present)
        source = f"{table}_files" if segments else "(SELECT 1) AS nothing WHERE false"
        con.execute(f"CREATE TEMP VIEW {raw} AS SELECT {columns} FROM {source}")

    @staticmethod
    def _attempt_bounds(con: duckdb.DuckDBPyConnection, segments: list) -> list[tuple[str, int, int, int]]:
        """(run_id, rank, attempt, next_start) for every attempt that a later
        attempt of the same run and rank overrides from step next_start on.

        Rows of attempt a are kept only below the first step of any later
        attempt. The first steps come from the scalars (the table every
        attempt writes), read from the files' footers; files without that
        metadata (foreign ones) are scanned.
        """
        first_steps: dict[tuple[str, int, int], int | None] = {}

        def note(run_id: str, rank: int, attempt: int, first: int | None) -> None:
            key = (run_id, int(rank), int(attempt))
            known = first_steps.get(key)
            first_steps[key] = first if known is None else known if first is None else min(known, first)

        unknown = []
        for run_id, path, info in segments:
            if info.attempts is None:
                if {"rank", "attempt"} <= set(info.columns):
                    unknown.append(duckdb_path(path))
                continue  # without those columns its rows belong to no attempt: always kept
            for rank, attempt, first in info.attempts:
                note(run_id, rank, attempt, first)
        if unknown:
            rows = con.read_parquet(unknown, union_by_name=True).aggregate(
                "run_id, rank, attempt, min(step) FILTER (WHERE step >= 0)").fetchall()
            for run_id, rank, attempt, first in rows:
                if run_id is not None and rank is not None and attempt is not None:
                    note(run_id, rank, attempt, first)
        bounds = []
        for (run_id, rank, attempt) in first_steps:
            later = [first for (r, k, a), first in first_steps.items()
                     if r == run_id and k == rank and a > attempt and first is not None]
            if later:
                bounds.append((run_id, rank, attempt, min(later)))
        return bounds

    @staticmethod
    def _create_table_view(con: duckdb.DuckDBPyConnection, table: str, *, resolve_attempts: bool) -> None:
        raw = f"{table}_raw"
        if not resolve_attempts:
            # No run here was resumed over steps it had recorded: no join, so
            # filters reach the Parquet scan (row-group pruning by name).
            columns = ", ".join(f'"{name}"' for name in column_names(table))
            con.execute(f"CREATE TEMP VIEW {table} AS SELECT {columns} FROM {raw}")
            return
        columns = ", ".join(f'r."{name}"' for name in column_names(table))
        step_filter = "r.step IS NULL OR b.next_start IS NULL OR r.step < b.next_start"
        con.execute(f"""
            CREATE TEMP VIEW {table} AS
            SELECT {columns} FROM {raw} r
            LEFT JOIN attempt_bounds b ON r.run_id = b.run_id AND r.rank = b.rank AND r.attempt = b.attempt
            WHERE {step_filter}
        """)

    def query(self, sql: str, params: Sequence[Any] | dict | None = None, *, runs: Sequence[str] | None = None) -> pd.DataFrame:
        """Run one SQL query (values bound as parameters) over fresh views.

        Retries when a file vanished under the query (compaction) and skips,
        with a warning, a file that turns out to be unreadable.
        """
        return self._query(sql, params, runs=runs)

    def fetch(self, sql: str, params: Sequence[Any] | dict | None = None, *, runs: Sequence[str] | None = None,
              tables: Sequence[str] = TABLES) -> list[tuple]:
        """Like :meth:`query` (without the ``runs`` view), as plain Python rows:
        NULL stays None and integers stay integers."""
        return self._with_connection(lambda con: con.execute(sql, params or []).fetchall(),
                                     runs=runs, tables=tables, with_runs=False)

    def _query(
        self,
        sql: str,
        params: Sequence[Any] | dict | None = None,
        *,
        runs: Sequence[str] | None = None,
        tables: Sequence[str] = TABLES,
        with_runs: bool = True,
    ) -> pd.DataFrame:
        return self._with_connection(
            lambda con: con.execute(sql, params or []).df(), runs=runs, tables=tables, with_runs=with_runs)

    def _with_connection(
        self,
        work: Callable[[duckdb.DuckDBPyConnection], Any],
        *,
        runs: Sequence[str] | None,
        tables: Sequence[str],
        with_runs: bool,
    ) -> Any:
        """``work(con)`` over fresh views, again over a fresh listing when a
        file vanished (compaction) or turned out unreadable (skipped)."""
        runs = _one_or_many(runs)
        last_error: Exception | None = None
        for _ in range(MAX_READ_RETRIES):
            con = None
            try:
                con = self._connect(runs, tables, with_runs=with_runs)
                return work(con)
            except duckdb.Error as error:
                last_error = error
                reason = str(error).splitlines()[0]
                bad = _file_in_error(str(error))
                if bad is not None and self._reads_cleanly(bad):
                    # DuckDB names the file it was reading when another
                    # file's rows failed it: never skip a good file for that.
                    bad = None
                if bad is None and not isinstance(error, _QUERY_ERRORS):
                    # Corrupt pages behind an intact footer fail with a
                    # message naming no file ("Variable-length int over 10 bytes").
                    bad = self._find_unreadable(runs, tables)
                if bad is None:
                    raise
                if os.path.exists(bad):
                    self.mark_bad(bad, reason)
                # else: compaction removed it after the listing; list again.
                time.sleep(0.01)
            finally:
                if con is not None:
                    con.close()
        raise StoreError(f"query kept failing while files changed: {last_error}")

    # ---------------------------------------------------------------- queries

    def scalars(
        self,
        runs: Sequence[str],
        *,
        names: Sequence[str] | None = None,
        splits: Sequence[str] | None = None,
        layers: Sequence[str] | None = None,
        global_only: bool = False,
        rank: int | None = 0,
    ) -> pd.DataFrame:
        """Every matching row, ordered by run, split, name, layer, step."""
        sql = """
            SELECT run_id, rank, attempt, step, epoch, wall_time, split, name, layer, value
            FROM scalars
            WHERE ($names IS NULL OR list_contains($names, name))
              AND ($splits IS NULL OR list_contains($splits, split))
              AND ($layers IS NULL OR list_contains($layers, layer))
              AND (NOT $global_only OR layer IS NULL)
              AND ($rank IS NULL OR rank = $rank)
            ORDER BY run_id, split, name, layer NULLS FIRST, step
        """
        params = {"names": _list(names), "splits": _list(splits), "layers": _list(layers),
                  "global_only": bool(global_only), "rank": rank}
        return self._query(sql, params, runs=runs, tables=("scalars",), with_runs=False)

    def series(
        self,
        runs: Sequence[str],
        *,
        names: Sequence[str],
        splits: Sequence[str] | None = None,
        layers: Sequence[str] | None = None,
        global_only: bool = False,
        max_points: int = 2000,
        rank: int | None = 0,
    ) -> pd.DataFrame:
        """At most ``max_points`` points per series (run, split, name, layer).

        A series with more points is cut into ``max_points // 3`` step buckets;
        each keeps its minimum, its maximum and its last point (with their own
        steps), so a one-step spike in a million-step run stays visible.
        NaN counts as the largest value, so a NaN is never hidden either.
        Steps of different runs need not match.
        """
        buckets = max(1, int(max_points) // 3)
        # Bounds per series first (a GROUP BY over the selected rows), then a
        # join of that small table: window functions partitioned by series
        # cost a sort of every row.
        sql = """
            WITH selected AS (
                SELECT run_id, split, name, layer, step, epoch, wall_time, value
                FROM scalars
                WHERE list_contains($names, name)
                  AND ($splits IS NULL OR list_contains($splits, split))
                  AND ($layers IS NULL OR list_contains($layers, layer))
                  AND (NOT $global_only OR layer IS NULL)
                  AND ($rank IS NULL OR rank = $rank)
            ), bounds AS (
                SELECT run_id, split, name, layer, min(step) AS lo, max(step) AS hi, count(*) AS n
                FROM selected GROUP BY ALL
            ), bucketed AS (
                SELECT s.*, CASE WHEN b.n <= $max_points THEN s.step
                                 ELSE (s.step - b.lo) * $buckets // (b.hi - b.lo + 1) END AS bucket
                FROM selected s JOIN bounds b
                  ON s.run_id = b.run_id AND s.split = b.split AND s.name = b.name
                 AND s.layer IS NOT DISTINCT FROM b.layer
            ), grouped AS (
                SELECT run_id, split, name, layer,
                       arg_min({'step': step, 'epoch': epoch, 'wall_time': wall_time, 'value': value}, value) AS low,
                       arg_max({'step': step, 'epoch': epoch, 'wall_time': wall_time, 'value': value}, value) AS high,
                       arg_max({'step': step, 'epoch': epoch, 'wall_time': wall_time, 'value': value}, step) AS last
                FROM bucketed GROUP BY run_id, split, name, layer, bucket
            ), points AS (
                SELECT run_id, split, name, layer, unnest([low, high, last]) AS point FROM grouped
            )
            SELECT DISTINCT ON (run_id, split, name, layer, point.step)
                   run_id, split, name, layer, point.step AS step, point.epoch AS epoch,
                   point.wall_time AS wall_time, point.value AS value
            FROM points
            ORDER BY run_id, split, name, layer NULLS FIRST, step
        """
        params = {"names": list(names), "splits": _list(splits), "layers": _list(layers),
                  "global_only": bool(global_only), "rank": rank,
                  "max_points": int(max_points), "buckets": buckets}
        points = self._query(sql, params, runs=runs, tables=("scalars",), with_runs=False)
        points["layer"] = points["layer"].astype(object).where(points["layer"].notna(), None)
        return points

    def heatmap(
        self,
        run: str,
        *,
        name: str,
        split: str = "train",
        max_steps: int = 2000,
        rank: int = 0,
    ) -> pd.DataFrame:
        """Per-layer values of ``name`` in at most ``max_steps`` step buckets.

        Returns a long frame (layer, step, value) where step is each bucket's
        last step and value the bucket's median of finite values (NaN when a
        bucket holds none): the layers × steps grid of a heatmap. Buckets are
        equal step ranges over the run's first..last step, the same for
        every layer; when that range is at most ``max_steps`` wide, every
        step is its own bucket.
        """
        where = "name = $name AND split = $split AND layer IS NOT NULL AND rank = $rank"
        # The bounds first, then bound as parameters: a CTE read twice would
        # be materialised (all the selected rows copied once more).
        bounds_sql = f"SELECT min(step) AS lo, max(step) AS hi FROM scalars WHERE {where}"
        sql = f"""
            SELECT layer,
                   max(step) AS step,
                   median(value) FILTER (WHERE isfinite(value)) AS value
            FROM scalars WHERE {where}
            GROUP BY layer, CASE WHEN $hi - $lo < $max_steps THEN step
                                 ELSE (step - $lo) * $max_steps // ($hi - $lo + 1) END
            ORDER BY layer, step
        """
        params = {"name": name, "split": split, "rank": rank}

        def grid(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
            lo, hi = con.execute(bounds_sql, params).fetchall()[0]
            if lo is None:
                lo = hi = 0  # no rows: the query below returns an empty frame
            return con.execute(sql, {**params, "lo": lo, "hi": hi, "max_steps": int(max_steps)}).df()

        return self._with_connection(grid, runs=[run], tables=("scalars",), with_runs=False)

    def confusion(self, runs: Sequence[str], *, split: str | None = None, step: int | None = None) -> pd.DataFrame:
        sql = """
            SELECT run_id, rank, step, epoch, split, true_class, pred_class, sum(count)::BIGINT AS count
            FROM confusion
            WHERE ($split IS NULL OR split = $split) AND ($step IS NULL OR step = $step)
            GROUP BY ALL ORDER BY run_id, split, step, true_class, pred_class
        """
        return self._query(sql, {"split": split, "step": step}, runs=runs, tables=("confusion",), with_runs=False)

    def events(self, runs: Sequence[str], *, kinds: Sequence[str] | None = None) -> pd.DataFrame:
        sql = """
            SELECT run_id, rank, step, wall_time, kind, detail FROM events
            WHERE ($kinds IS NULL OR list_contains($kinds, kind))
            ORDER BY run_id, wall_time, step
        """
        return self._query(sql, {"kinds": _list(kinds)}, runs=runs, tables=("events",), with_runs=False)

    def names(self, runs: Sequence[str]) -> pd.DataFrame:
        """Which (split, name) series exist, with whether they have layers."""
        sql = """
            SELECT split, name, count(DISTINCT layer) AS layers, count(*) AS points
            FROM scalars GROUP BY ALL ORDER BY split, name
        """
        return self._query(sql, runs=runs, tables=("scalars",), with_runs=False)


def _one_or_many(runs: Sequence[str] | str | None) -> Sequence[str] | None:
    """``runs`` as given, or a single run id given as a string as a list of it (not its characters)."""
    return [runs] if isinstance(runs, str) else runs


def _list(values: Iterable[str] | None) -> list[str] | None:
    return None if values is None else [str(v) for v in values]


def table_select_list(table: str, present: set[str]) -> str:
    """The SELECT list of ``table``'s columns in file order, for files that
    hold only the columns in ``present``: a missing one (a foreign file's gap)
    comes out as a NULL of its contract type, so every view and every
    compacted file has the same columns."""
    return ", ".join(
        f'"{column.name}"' if column.name in present else f'CAST(NULL AS {_SQL_TYPES[column.type]}) AS "{column.name}"'
        for column in COLUMNS[table]
    )


# DuckDB quotes the file it failed on: 'No magic bytes found at end of file
# "/x/0-0-00000001.parquet"', 'No files found that match the pattern "…"'.
_FILE_IN_ERROR = re.compile(r"""["']([^"'\n]+\.parquet)["']""")
# DuckDB expands *, ? and [...] in every path it is given, even in a list of
# files: a store at runs-[1] would read runs-1's files. Each such character
# goes in as a one-character class.
_GLOB_CHARACTERS = re.compile(r"([*?\[])")
_ESCAPED_GLOB_CHARACTER = re.compile(r"\[([*?\[])\]")


def duckdb_path(path: str | os.PathLike) -> str:
    """``path`` as DuckDB's file readers take it: glob characters escaped.

    Example:
        >>> duckdb_path("/runs-[1]/a*.parquet")
        '/runs-[[]1]/a[*].parquet'
    """
    return _GLOB_CHARACTERS.sub(r"[\1]", str(path))


def _unescaped_path(text: str) -> str:
    return _ESCAPED_GLOB_CHARACTER.sub(r"\1", text)


# Mistakes in the SQL itself (a user's query through Store.query): never
# blamed on a file.
_QUERY_ERRORS = (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException,
                 duckdb.ProgrammingError)


def _file_in_error(message: str) -> str | None:
    found = _FILE_IN_ERROR.search(message)
    return _unescaped_path(found.group(1)) if found else None


