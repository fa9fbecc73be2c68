"""The reader half of the run store: DuckDB views over the published segments.

Every query lists the segment files afresh, opens an in-memory DuckDB
connection over them and closes it, so it takes no lock, sees whatever
training has published so far, and is safe to call from any thread. This is
the only module (with ``store.compact``) that speaks SQL; every value is a
bound parameter and file lists go in through DuckDB's Python API.

Example:
    >>> store = Store("runs")                                  # doctest: +SKIP
    >>> store.runs()[["name", "status", "last_step"]]           # doctest: +SKIP
    >>> with store.connect() as con:                            # doctest: +SKIP
    ...     con.sql("SELECT name, max(step) FROM scalars GROUP BY name").show()
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from store.segments import SCHEMAS, TABLES, StoreError, iter_segment_names, read_run_json

# A run whose writer has not refreshed its heartbeat (every 5 s) for this long
# is reported as crashed: twelve missed beats rules out a slow disk or a long
# checkpoint save.
DEFAULT_STALE_AFTER_S = 60.0
# A query that meets a file removed under it (compaction published a merged
# file and deleted the pieces) lists the folder again; compaction finishes in
# well under this many retries.
_MAX_QUERY_RETRIES = 8

RUN_COLUMNS = [
    "run_id", "name", "project", "status", "created_at", "heartbeat_at", "finished_at",
    "config", "env", "task", "num_classes", "source", "attempts",
]

_COVERS_SUFFIX = ".covers.json"


class UnknownRunError(StoreError):
    """No run with that id or name."""


@dataclass(frozen=True)
class _FileKey:
    path: str
    size: int
    mtime_ns: int


class Store:
    """A folder of runs, read through DuckDB.

    Args:
        root: the store folder (it need not exist yet: it then holds no runs).
        stale_after_s: seconds without a heartbeat after which a running run
            is reported as crashed.
    """

    def __init__(self, root: str | os.PathLike, *, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> None:
        self.root = Path(root)
        self.stale_after_s = float(stale_after_s)
        # Files already checked (footer and schema), keyed by path, size and
        # mtime so a replaced file is checked again.
        self._checked: dict[_FileKey, bool] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------- runs

    def run_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name for entry in os.scandir(self.root)
            if entry.is_dir() and not entry.name.startswith(".") and (Path(entry.path) / "run.json").exists()
        )

    def run_meta(self, run_id: str) -> dict[str, Any]:
        run_dir = self.root / run_id
        try:
            meta = read_run_json(run_dir)
        except FileNotFoundError:
            raise UnknownRunError(f"unknown run {run_id!r} in store {self.root}") from None
        except (OSError, ValueError) as error:
            self._warn(f"skipping run folder {run_dir}: unreadable run.json ({error})")
            raise UnknownRunError(f"run {run_id!r} has an unreadable run.json") from None
        meta["run_id"] = run_id
        meta["status"] = self._effective_status(meta)
        return meta

    def _effective_status(self, meta: dict[str, Any]) -> str:
        status = meta.get("status", "running")
        if status == "running":
            heartbeat = meta.get("heartbeat_at") or meta.get("created_at") or 0
            if time.time() - float(heartbeat) > self.stale_after_s:
                return "crashed"
        return status

    def runs(self, *, with_stats: bool = True) -> pd.DataFrame:
        """One row per run: metadata from run.json plus, with ``with_stats``,
        last_step, num_steps and final train/val loss and accuracy."""
        rows = []
        for run_id in self.run_ids():
            try:
                meta = self.run_meta(run_id)
            except UnknownRunError:
                continue
            task = meta.get("task") or {}
            rows.append({
                "run_id": run_id,
                "name": meta.get("name") or run_id,
                "project": meta.get("project"),
                "status": meta["status"],
                "created_at": meta.get("created_at"),
                "heartbeat_at": meta.get("heartbeat_at"),
                "finished_at": meta.get("finished_at"),
                "config": meta.get("config") or {},
                "env": meta.get("env") or {},
                "task": task,
                "num_classes": task.get("num_classes"),
                "source": meta.get("source"),
                "attempts": meta.get("attempts") or {},
            })
        frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
        if with_stats and len(frame):
            stats = self._run_stats(list(frame["run_id"]))
            frame = frame.merge(stats, on="run_id", how="left")
        elif with_stats:
            for column in ("last_step", "num_steps", "final_train_loss", "final_val_loss", "final_val_accuracy"):
                frame[column] = pd.Series(dtype="float64")
        return frame.sort_values("created_at", ascending=False, kind="stable").reset_index(drop=True)

    def _run_stats(self, run_ids: list[str]) -> pd.DataFrame:
        sql = """
            SELECT run_id,
                   max(step) AS last_step,
                   count(DISTINCT step) FILTER (WHERE split = 'train' AND name = 'loss') AS num_steps,
                   arg_max(value, step) FILTER (WHERE split = 'train' AND name = 'loss' AND layer IS NULL) AS final_train_loss,
                   arg_max(value, step) FILTER (WHERE split = 'val' AND name = 'loss' AND layer IS NULL) AS final_val_loss,
                   arg_max(value, step) FILTER (WHERE split = 'val' AND name = 'accuracy' AND layer IS NULL) AS final_val_accuracy
            FROM scalars WHERE layer IS NULL GROUP BY run_id
        """
        return self.query(sql, runs=run_ids)

    def resolve(self, run: str) -> str:
        """A run id for ``run``: a run id, or a name (the newest run with it)."""
        ids = self.run_ids()
        if run in ids:
            return run
        matches = []
        for run_id in ids:
            try:
                meta = read_run_json(self.root / run_id)
            except (OSError, ValueError):
                continue
            if meta.get("name") == run:
                matches.append((float(meta.get("created_at") or 0), run_id))
        if not matches:
            raise UnknownRunError(f"unknown run {run!r} in store {self.root}")
        return max(matches)[1]

    # ------------------------------------------------------------------ files

    def _warn(self, message: str) -> None:
        with self._lock:
            if message in self._warned:
                return
            self._warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _file_ok(self, path: Path, table: str) -> bool:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        key = _FileKey(str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            known = self._checked.get(key)
        if known is not None:
            return known
        try:
            schema = pq.read_schema(path)
            missing = {"step"} - set(schema.names)
            ok = not missing and bool(set(schema.names) & set(SCHEMAS[table].names))
            if not ok:
                self._warn(f"skipping {path}: not a traindoctor {table} segment")
        except FileNotFoundError:
            return False
        except Exception as error:  # truncated, garbage, permissions
            self._warn(f"skipping unreadable segment {path}: {type(error).__name__}: {error}")
            ok = False
        with self._lock:
            self._checked[key] = ok
        return ok

    def mark_bad(self, path: str, reason: str) -> None:
        """Exclude a file that failed inside a query (its footer was fine)."""
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return
        self._warn(f"skipping unreadable segment {path}: {reason}")
        with self._lock:
            self._checked[_FileKey(path, stat.st_size, stat.st_mtime_ns)] = False

    def segment_files(self, run_id: str, table: str) -> list[Path]:
        """The published files of one table of one run, minus those a
        compacted file already covers."""
        folder = self.root / run_id / table
        try:
            names = [e.name for e in os.scandir(folder)]
        except FileNotFoundError:
            return []
        covered: set[str] = set()
        for name in names:
            if name.endswith(_COVERS_SUFFIX):
                merged = name[: -len(_COVERS_SUFFIX)] + ".parquet"
                if merged in names:
                    try:
                        covered.update(json.loads((folder / name).read_text()))
                    except (OSError, ValueError):
                        continue  # deleted under us, or mid-write: the retry loop sees it settle
        return [
            folder / name for name in iter_segment_names(names)
            if name not in covered and self._file_ok(folder / name, table)
        ]

    # ------------------------------------------------------------- connection

    def connect(self, runs: Sequence[str] | None = None) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with the views ``runs``, ``scalars``,
        ``confusion`` and ``events`` over ``runs`` (run ids; all when None).

        The caller owns the connection: close it (it is a context manager).
        The views are fixed at the file list seen now; call again for fresh data.
        """
        run_ids = self.run_ids() if runs is None else [self._checked_id(r) for r in runs]
        con = duckdb.connect(":memory:")
        try:
            con.execute("SET threads TO 2")
            runs_frame = self.runs(with_stats=False) if runs is None else pd.DataFrame(
                [self._run_row(r) for r in run_ids], columns=RUN_COLUMNS)
            runs_frame = runs_frame[runs_frame["run_id"].isin(run_ids)].copy()
            for column in ("config", "env", "task", "source", "attempts"):
                runs_frame[column] = runs_frame[column].map(lambda v: json.dumps(v, default=str))
            con.register("runs_frame", runs_frame)
            con.execute("CREATE TEMP VIEW runs AS SELECT * FROM runs_frame")
            for table in TABLES:
                files = [str(p) for r in run_ids for p in self.segment_files(r, table)]
                self._create_table_view(con, table, files)
            return con
        except BaseException:
            con.close()
            raise

    def _checked_id(self, run_id: str) -> str:
        if not (self.root / run_id / "run.json").exists():
            raise UnknownRunError(f"unknown run {run_id!r} in store {self.root}")
        return run_id

    def _run_row(self, run_id: str) -> dict[str, Any]:
        meta = self.run_meta(run_id)
        task = meta.get("task") or {}
        return {
            "run_id": run_id, "name": meta.get("name") or run_id, "project": meta.get("project"),
            "status": meta["status"], "created_at": meta.get("created_at"),
            "heartbeat_at": meta.get("heartbeat_at"), "finished_at": meta.get("finished_at"),
            "config": meta.get("config") or {}, "env": meta.get("env") or {}, "task": task,
            "num_classes": task.get("num_classes"), "source": meta.get("source"),
            "attempts": meta.get("attempts") or {},
        }

    @staticmethod
    def _create_table_view(con: duckdb.DuckDBPyConnection, table: str, files: list[str]) -> None:
        raw = f"{table}_raw"
        if files:
            relation = con.read_parquet(files, union_by_name=True)
            relation.create_view(raw, replace=True)
        else:
            columns = ", ".join(f'"{f.name}" {_duck_type(f.type)}' for f in SCHEMAS[table])
            con.execute(f"CREATE TEMP TABLE {raw} ({columns})")
        # Newest attempt wins: rows of attempt a are kept only below the first
        # step of any later attempt of the same run and rank. The bounds come
        # from the scalars, the table that every attempt writes.
        if table == "scalars":
            con.execute(f"""
                CREATE TEMP TABLE attempt_starts AS
                SELECT run_id, rank, attempt, min(step) AS first_step
                FROM {raw} WHERE step >= 0 GROUP BY ALL
            """)
            con.execute("""
                CREATE TEMP TABLE attempt_bounds AS
                SELECT a.run_id, a.rank, a.attempt, min(b.first_step) AS next_start
                FROM attempt_starts a JOIN attempt_starts b
                  ON a.run_id = b.run_id AND a.rank = b.rank AND b.attempt > a.attempt
                GROUP BY ALL
            """)
        columns = ", ".join(f'r."{f.name}"' for f in SCHEMAS[table])
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
        last_error: Exception | None = None
        for _ in range(_MAX_QUERY_RETRIES):
            con = self.connect(runs)
            try:
                return con.execute(sql, params or []).df()
            except (duckdb.IOException, duckdb.InvalidInputException, duckdb.Error) as error:
                last_error = error
                bad = _file_in_error(str(error))
                if bad is None:
                    raise
                if os.path.exists(bad):
                    self.mark_bad(bad, str(error).splitlines()[0])
                time.sleep(0.01)
            finally:
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
        return self.query(sql, params, runs=runs)

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
        sql = """
            WITH selected AS (
                SELECT run_id, split, name, layer, step, epoch, wall_time, value
                FROM scalars
                WHERE list_contains($names, name)
                  AND ($splits IS NULL OR list_contains($splits, split))
                  AND ($layers IS NULL OR list_contains($layers, layer))
                  AND (NOT $global_only OR layer IS NULL)
                  AND ($rank IS NULL OR rank = $rank)
            ), framed AS (
                SELECT *,
                       min(step) OVER w AS lo, max(step) OVER w AS hi, count(*) OVER w AS n
                FROM selected
                WINDOW w AS (PARTITION BY run_id, split, name, layer)
            ), bucketed AS (
                SELECT *, CASE WHEN n <= $max_points THEN step
                               ELSE floor((step - lo) * $buckets / (hi - lo + 1)) END AS bucket
                FROM framed
            )
            SELECT run_id, split, name, layer, bucket,
                   arg_min({'step': step, 'epoch': epoch, 'wall_time': wall_time, 'value': value}, value) AS low,
                   arg_max({'step': step, 'epoch': epoch, 'wall_time': wall_time, 'value': value}, value) AS high,
                   arg_max({'step': step, 'epoch': epoch, 'wall_time': wall_time, 'value': value}, step) AS last
            FROM bucketed GROUP BY ALL
        """
        params = {"names": list(names), "splits": _list(splits), "layers": _list(layers),
                  "global_only": bool(global_only), "rank": rank,
                  "max_points": int(max_points), "buckets": buckets}
        grouped = self.query(sql, params, runs=runs)
        return _explode_buckets(grouped)

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
        bucket holds none): the layers × steps grid of a heatmap.
        """
        sql = """
            WITH selected AS (
                SELECT layer, step, value FROM scalars
                WHERE name = $name AND split = $split AND layer IS NOT NULL AND rank = $rank
            ), framed AS (
                SELECT *, min(step) OVER () AS lo, max(step) OVER () AS hi,
                       count(DISTINCT step) OVER () AS n
                FROM selected
            )
            SELECT layer,
                   max(step) AS step,
                   median(value) FILTER (WHERE isfinite(value)) AS value
            FROM framed
            GROUP BY layer, CASE WHEN n <= $max_steps THEN step
                                 ELSE floor((step - lo) * $max_steps / (hi - lo + 1)) END
            ORDER BY layer, step
        """
        params = {"name": name, "split": split, "rank": rank, "max_steps": int(max_steps)}
        return self.query(sql, params, runs=[run])

    def confusion(self, runs: Sequence[str], *, split: str | None = None, step: int | None = None) -> pd.DataFrame:
        sql = """
            SELECT run_id, rank, step, epoch, split, true_class, pred_class, sum(count)::BIGINT AS count
            FROM confusion
            WHERE ($split IS NULL OR split = $split) AND ($step IS NULL OR step = $step)
            GROUP BY ALL ORDER BY run_id, split, step, true_class, pred_class
        """
        return self.query(sql, {"split": split, "step": step}, runs=runs)

    def events(self, runs: Sequence[str], *, kinds: Sequence[str] | None = None) -> pd.DataFrame:
        sql = """
            SELECT run_id, rank, step, wall_time, kind, detail FROM events
            WHERE ($kinds IS NULL OR list_contains($kinds, kind))
            ORDER BY run_id, wall_time, step
        """
        return self.query(sql, {"kinds": _list(kinds)}, runs=runs)

    def names(self, runs: Sequence[str]) -> pd.DataFrame:
        """Which (split, name) series exist, with whether they have layers."""
        sql = """
            SELECT split, name, count(DISTINCT layer) AS layers, count(*) AS points
            FROM scalars GROUP BY ALL ORDER BY split, name
        """
        return self.query(sql, runs=runs)


def _list(values: Iterable[str] | None) -> list[str] | None:
    return None if values is None else [str(v) for v in values]


def _duck_type(arrow_type: Any) -> str:
    import pyarrow as pa

    return {
        pa.string(): "VARCHAR", pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.float64(): "DOUBLE",
    }[arrow_type]


_FILE_IN_ERROR = re.compile(r"""(?:file|File)\s*['"]?([^'"\s]+\.parquet)""")


def _file_in_error(message: str) -> str | None:
    found = _FILE_IN_ERROR.search(message)
    return found.group(1) if found else None


def _explode_buckets(grouped: pd.DataFrame) -> pd.DataFrame:
    """Turn (low, high, last) structs per bucket into distinct points, by step."""
    columns = ["run_id", "split", "name", "layer", "step", "epoch", "wall_time", "value"]
    if grouped.empty:
        return pd.DataFrame(columns=columns)
    keys = grouped[["run_id", "split", "name", "layer"]]
    parts = []
    for column in ("low", "high", "last"):
        points = pd.DataFrame(list(grouped[column]), index=grouped.index)
        parts.append(pd.concat([keys, points], axis=1))
    points = pd.concat(parts, ignore_index=True)
    points["layer"] = points["layer"].astype(object).where(points["layer"].notna(), None)
    points = points.drop_duplicates(subset=["run_id", "split", "name", "layer", "step"])
    points["step"] = points["step"].astype(np.int64)
    points = points.sort_values(["run_id", "split", "name", "layer", "step"], na_position="first", kind="stable")
    return points[columns].reset_index(drop=True)
