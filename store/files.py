"""The file half of the run store's reader: which segment files a read may use, without SQL or pandas.

:class:`StoreFiles` lists a run's published segments, reads each file's
footer once (cached by path, size and mtime: which attempts it holds, which
segments a compacted file replaces), skips with one warning a file that is not
a readable segment of its table (:meth:`StoreFiles.mark_bad` for one that
failed inside a read), and lists again when compaction removed a file under a
read. :class:`~traindoctor.store.reader.Store` adds the DuckDB views on top;
:mod:`traindoctor.store.run_tables` reads one run's rows straight from the
files with pyarrow, so a command-line diagnosis imports neither DuckDB nor
pandas.

Example:
    >>> files = StoreFiles("traindoctor_runs")            # doctest: +SKIP
    >>> [path.name for path in files.segment_files(files.resolve("resnet18"), "scalars")]  # doctest: +SKIP
    ['c-0123.parquet', '0-1-00000007.parquet']
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from traindoctor.store.catalog import DEFAULT_STALE_AFTER_S, Catalog, effective_status, read_run_meta
from traindoctor.store.arrow_numpy import read_segment
from traindoctor.store.errors import OnceWarnings, StoreError, UnknownRunError
from traindoctor.store.fs import MIN_SYNC_INTERVAL_S, Mirror, parse_store
from traindoctor.store.format import COLUMNS, RUN_JSON, STRING, decode_attempts, decode_covers, segment_names

# A query or read that meets a file removed under it (compaction published a
# merged file and deleted the pieces) lists the folder again; compaction
# finishes in well under this many retries.
MAX_READ_RETRIES = 8
# Footer facts of this many file versions are cached before the cache is
# pruned of deleted files (~200 bytes each).
_MAX_CHECKED_FILES = 50_000


@dataclass(frozen=True)
class _FileKey:
    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class SegmentInfo:
    """What a segment's footer says, read once per file version.

    Attributes:
        ok: the file is a readable segment of its table (else it is skipped).
        columns: its column names (a foreign file may lack some).
        attempts: (rank, attempt, first_step) per attempt in the file; None
            when the footer does not say (a foreign file).
        covers: segment names a compacted file replaces.
    """

    ok: bool
    columns: tuple[str, ...] = ()
    attempts: tuple[tuple[int, int, int | None], ...] | None = None
    covers: tuple[str, ...] = ()


# Columns without which a file is not a segment of that table.
_REQUIRED_COLUMNS = {
    "scalars": {"run_id", "step", "name", "value"},
    "confusion": {"run_id", "step", "true_class", "pred_class", "count"},
    "events": {"run_id", "kind"},
}


class VanishedFile(Exception):
    """A listed segment was removed before it could be read (compaction replaced it): list again."""


class StoreFiles:
    """A folder of runs, as files: listing, footer facts and bad-file skipping (module doc).

    Args:
        root: the store folder (it need not exist yet: it then holds no runs),
            or an object-store URL (``s3://bucket/prefix``, ``gs://``,
            ``az://``): the store then reads a local mirror of the bucket
            (``store.fs.Mirror``, a read cache of its immutable segments)
            brought up to date before each read, at most once a second per
            run; ``root`` is the mirror's folder and ``location`` the URL.
        stale_after_s: seconds without a heartbeat after which a running run
            is reported as crashed.

    Raises:
        StoreError: an object store that cannot be reached, or whose extra is
            not installed (one line).
    """

    def __init__(self, root: str | os.PathLike, *, stale_after_s: float = DEFAULT_STALE_AFTER_S,
                 open_query_store: Callable[[Path], Any] | None = None) -> None:
        self.location = parse_store(root)
        self._open_query_store_at = open_query_store
        self.mirror: Mirror | None = Mirror(self.location) if self.location.remote else None
        self.root = self.mirror.root if self.mirror is not None else Path(self.location.path)
        # What messages call the store: its URL, not the mirror's folder in the cache.
        self.name = self.location.url if self.mirror is not None else str(self.root)
        self.stale_after_s = float(stale_after_s)
        # Files already checked (footer and schema), keyed by path, size and
        # mtime so a replaced file is checked again.
        self._checked: dict[_FileKey, SegmentInfo] = {}
        self._warnings = OnceWarnings()
        # Files read through end to end while hunting an unreadable one.
        self._verified: set[_FileKey] = set()
        self._lock = threading.Lock()
        # A Store lives long (the dashboard keeps one per store): its catalog
        # remembers summaries between listings. A summary that needs the
        # exact query (a resumed run's overlapping attempts) gets it from
        # query_store().
        self.catalog = Catalog(self.root, stale_after_s=self.stale_after_s, store=self.query_store(),
                               open_store=self._open_query_store, remember=True,
                               sync=None if self.mirror is None else self.sync, name=self.name)

    def query_store(self) -> Any:
        """The store that answers SQL for this one, when it is one (a
        :class:`~traindoctor.store.reader.Store`); None here: one is opened on first need."""
        return None

    def _open_query_store(self, root: Path) -> Any:
        """The SQL store for a summary the footers cannot give (a resumed run's overlapping attempts), from the
        ``open_query_store`` this was made with (the CLI passes ``reader.Store``: DuckDB, only then); None
        without one: such a run is listed without steps or metrics, with a warning."""
        return None if self._open_query_store_at is None else self._open_query_store_at(root)

    def sync(self, run_ids: Sequence[str] | None = None) -> None:
        """Bring an object store's mirror up to date (all runs, or these), at
        most once per ``MIN_SYNC_INTERVAL_S`` each; a no-op on a local store.

        Raises:
            StoreError: the bucket cannot be reached (one line).
        """
        if self.mirror is not None:
            self.mirror.sync(run_ids, max_age_s=MIN_SYNC_INTERVAL_S)

    # ------------------------------------------------------------------- runs

    def run_ids(self) -> list[str]:
        """Ids of the run folders (those with a run.json), sorted."""
        return self.catalog.run_ids()

    def run_meta(self, run_id: str) -> dict[str, Any]:
        """The run's run.json, its known keys checked (a value of the wrong
        type reads as absent), with ``status`` as readers should show it."""
        self.sync([run_id])
        meta = read_run_meta(self.root / run_id, run_id, self.name, self._warn)
        meta["run_id"] = run_id
        meta["status"] = effective_status(meta, self.stale_after_s)
        return meta

    def summaries(self, run_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The run catalog: one summary per run (``store.catalog``), read without opening a segment."""
        return self.catalog.summaries(run_ids)

    def resolve(self, run: str) -> str:
        """A run id for ``run``: a run id, or a name (the newest run with it)."""
        return self.catalog.resolve(run)

    # ------------------------------------------------------------------ files

    def _warn(self, message: str) -> None:
        self._warnings.warn(message, stacklevel=3)

    def _file_info(self, path: Path, table: str) -> SegmentInfo:
        """The footer facts of one file, checked once per (path, size, mtime).

        A file joins queries only if its columns have the contract's types
        and its rows the run id of its folder: a stray file (another tool's,
        or copied from another run) is skipped with one warning naming it,
        never blamed on the good files it would fail the query with.

        Raises VanishedFile when the file is gone (compaction removed it).
        """
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise VanishedFile(str(path)) from None
        key = _FileKey(str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            known = self._checked.get(key)
        if known is not None:
            return known
        try:
            metadata = pq.read_metadata(path)
            schema = metadata.schema.to_arrow_schema()
        except FileNotFoundError:
            raise VanishedFile(str(path)) from None
        except Exception as error:  # truncated, garbage, permissions
            self._warn(f"skipping unreadable segment {path}: {type(error).__name__}: {error}")
            info = SegmentInfo(ok=False)
        else:
            problem = schema_problem(schema, table)
            info = _footer_info(schema, table) if problem is None else SegmentInfo(ok=False)
            if problem is None and not info.ok:
                problem = "its footer metadata is not the store's"
            if problem is None:
                try:
                    problem = _run_id_problem(path, metadata, path.parent.parent.name)
                except FileNotFoundError:
                    raise VanishedFile(str(path)) from None
                except Exception as error:
                    problem = f"its run_id column cannot be read ({type(error).__name__}: {error})"
                if problem is not None:
                    info = SegmentInfo(ok=False, columns=info.columns)
            if problem is not None:
                self._warn(f"skipping {path}: not a traindoctor {table} segment: {problem}")
        with self._lock:
            self._checked[key] = info
            if len(self._checked) > _MAX_CHECKED_FILES:
                # A live run publishes a segment every few seconds and
                # compaction deletes them: forget files that are gone.
                self._checked = {k: v for k, v in self._checked.items() if os.path.exists(k.path)}
        return info

    def mark_bad(self, path: str, reason: str) -> None:
        """Exclude a file that failed inside a query (its footer was fine)."""
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return
        self._warn(f"skipping unreadable segment {path}: {reason}")
        with self._lock:
            self._checked[_FileKey(path, stat.st_size, stat.st_mtime_ns)] = SegmentInfo(ok=False)

    def _reads_cleanly(self, path: str) -> bool:
        """Whether pyarrow reads ``path`` end to end (False when it is gone)."""
        try:
            stat = os.stat(path)
        except OSError:
            return False
        key = _FileKey(path, stat.st_size, stat.st_mtime_ns)
        if key in self._verified:
            return True
        try:
            read_segment(path)
        except Exception:
            return False
        with self._lock:
            self._verified.add(key)
        return True

    def _find_unreadable(self, runs: Sequence[str] | None, tables: Sequence[str]) -> str | None:
        """The first segment in scope that pyarrow cannot read end to end.

        Only called after a query failed without naming its file; files read
        cleanly once are not read again.
        """
        for run_id in (self.run_ids() if runs is None else runs):
            for table in tables:
                for path in self.segment_files(run_id, table):
                    try:
                        stat = path.stat()
                    except FileNotFoundError:
                        continue
                    key = _FileKey(str(path), stat.st_size, stat.st_mtime_ns)
                    if key in self._verified:
                        continue
                    try:
                        read_segment(path)
                    except FileNotFoundError:
                        continue
                    except Exception:
                        return str(path)
                    with self._lock:
                        self._verified.add(key)
        return None

    def segment_files(self, run_id: str, table: str) -> list[Path]:
        """The published files of one table of one run, minus those a
        compacted file already covers."""
        return [path for path, _ in self.segments(run_id, table)]

    def segments(self, run_id: str, table: str) -> list[tuple[Path, SegmentInfo]]:
        """The published files of one table of one run with their footer
        facts, minus those a compacted file already covers."""
        folder = self.root / run_id / table
        for _ in range(MAX_READ_RETRIES):
            try:
                names = segment_names(e.name for e in os.scandir(folder))
            except FileNotFoundError:
                return []
            try:
                infos = [(folder / name, self._file_info(folder / name, table)) for name in names]
            except VanishedFile:
                # Compaction replaced pieces since the listing: list again, or
                # the merged file (published before the pieces went) is missed.
                continue
            covered = {piece for _, info in infos for piece in info.covers}
            return [(path, info) for path, info in infos if info.ok and path.name not in covered]
        raise StoreError(f"segments of {folder} kept vanishing while listed")

    def checked_id(self, run_id: str) -> str:
        """``run_id``, once its folder is known to hold a run.json.

        Raises:
            UnknownRunError: no run folder has that id.
        """
        if not (self.root / run_id / RUN_JSON).exists():
            raise UnknownRunError(f"unknown run {run_id!r} in store {self.name}")
        return run_id


def _arrow_type_is(arrow_type: pa.DataType, logical: str) -> bool:
    """Whether a column of ``arrow_type`` holds the contract's ``logical`` type."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type  # the writer dictionary-encodes strings
    if logical == STRING:
        return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
    # Exact widths: DuckDB unifies a file list by the first file's types, so
    # an int64 rank beside int32 ones is a cast that can fail mid-query.
    return arrow_type == getattr(pa, logical)()


def schema_problem(schema: pa.Schema, table: str) -> str | None:
    """Why a file with ``schema`` cannot join ``table``'s queries; None when it can.

    Its columns must include the table's required ones, each column it has
    of the contract's must have the contract's type, and no name may repeat.
    Columns the contract does not know are ignored; missing optional ones
    read as NULL.
    """
    names = schema.names
    if len(set(names)) != len(names):
        return "a column name repeats"
    missing = _REQUIRED_COLUMNS[table] - set(names)
    if missing:
        return f"no {', '.join(sorted(missing))} column"
    for column in COLUMNS[table]:
        if column.name in names:
            arrow_type = schema.field(column.name).type
            if not _arrow_type_is(arrow_type, column.type):
                return f"column {column.name} is {arrow_type}, not {column.type}"
    return None


def _run_id_problem(path: Path, metadata: Any, run_id: str) -> str | None:
    """Why the rows of ``path`` are not all of run ``run_id``; None when they are.

    Read from the row groups' min/max statistics (every file the store
    writes has them); a file without them has its run_id column scanned.
    """
    if metadata.num_rows == 0:
        return None
    position = [metadata.schema.column(i).path for i in range(metadata.num_columns)].index("run_id")
    found: set[str] = set()
    for group in range(metadata.num_row_groups):
        statistics = metadata.row_group(group).column(position).statistics
        if statistics is None or not statistics.has_min_max or statistics.null_count != 0:
            found = set(read_segment(path, ["run_id"]).column(0).unique().to_pylist())
            break
        found |= {statistics.min, statistics.max}
    if found == {run_id}:
        return None
    others = sorted(repr(value) for value in found - {run_id})
    return f"it holds rows of run {', '.join(others[:3])}, not of its folder's run {run_id!r}"


def _footer_info(schema: Any, table: str) -> SegmentInfo:
    columns = tuple(schema.names)
    if not _REQUIRED_COLUMNS[table] <= set(columns):
        return SegmentInfo(ok=False, columns=columns)
    metadata = schema.metadata or {}
    try:
        attempts = decode_attempts(metadata)
        covers = decode_covers(metadata)
    except (ValueError, TypeError):
        return SegmentInfo(ok=False, columns=columns)
    return SegmentInfo(ok=True, columns=columns, attempts=attempts, covers=covers)
