"""Where a store lives: a local folder, or a prefix of an object store addressed by URL.

A store location is a plain path or ``file://`` URL (a local folder, written
exactly as before: temporary name, fsync, rename), or an object-store URL
read and written through fsspec with the field's implementations:

=====================================  ==========  ==================================
URL                                    fsspec      extra
=====================================  ==========  ==================================
``s3://bucket/prefix`` (``s3a://``)    s3fs        ``pip install 'traindoctor[s3]'``
``gs://bucket/prefix`` (``gcs://``)    gcsfs       ``pip install 'traindoctor[gcs]'``
``az://container/prefix`` (``abfs://``)  adlfs     ``pip install 'traindoctor[azure]'``
=====================================  ==========  ==================================

Credentials and endpoints come the standard way: the AWS, Google Cloud and
Azure environment variables and config files. ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``) points ``s3://`` at any S3-compatible server
(MinIO, Ceph, R2, a test server).

On an object store (:class:`ObjectStore`):

- a segment is one object written by one PUT, create-only where the store
  supports it (S3 ``If-None-Match: *``, s3fs' ``mode="create"``): a retried
  or duplicated upload never replaces a published segment;
- uploads that fail go to a bounded local **spool** (:class:`Spool`, under
  the user cache folder) and are retried; a process that ends with segments
  still spooled leaves them for the next traindoctor process on this machine
  that opens the same store;
- readers keep a **mirror** (:class:`Mirror`): a local read cache of the
  bucket's runs. Segments are immutable, so each is downloaded once (by name
  and size); run.json, summary.json and .findings.json again when their ETag
  changes. A sync is one LIST per run prefix (one LIST of the whole store
  prefix for all runs), never one request per object to find what changed.
  The reader (DuckDB) and the run catalog then work on the mirror as on any
  local store, and the catalog's summaries and findings written there are
  uploaded back, so the catalog lives in the bucket too.
- liveness comes from the store's own object timestamps (``LastModified``),
  never from the writers' clocks: the mirror sets a running run's
  ``heartbeat_at`` to the newest timestamp of the objects its writers put.

This module imports only the standard library; fsspec and its backends are
imported when a URL is first opened.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import secrets
import shutil
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import unquote, urlsplit

from traindoctor.store.errors import StoreError
from traindoctor.store.format import (
    FINDINGS_JSON, RUN_JSON, SUMMARY_JSON, TABLES, check_run_id, segment_names,
)

# URL scheme -> (fsspec protocol, the package that implements it, the extra that installs it).
_SCHEMES = {
    "s3": ("s3", "s3fs", "s3"), "s3a": ("s3", "s3fs", "s3"),
    "gs": ("gcs", "gcsfs", "gcs"), "gcs": ("gcs", "gcsfs", "gcs"),
    "az": ("abfs", "adlfs", "azure"), "abfs": ("abfs", "adlfs", "azure"), "abfss": ("abfs", "adlfs", "azure"),
}
# Requests to an object store are retried this many times by the client
# (botocore's "standard" mode: exponential back-off with jitter) before a
# flush counts as failed: the writer's own retries (doubling delays, the
# spool) take over from there, so one flush never holds its thread for long.
_CLIENT_ATTEMPTS = 2
_CONNECT_TIMEOUT_S = 5
_READ_TIMEOUT_S = 20
# Objects fetched concurrently by one mirror sync (fsspec's async batching).
_DOWNLOAD_BATCH = 64
# Files of a run folder that readers write (caches): uploaded back, never a sign of a writer's life.
_READER_FILES = (SUMMARY_JSON, FINDINGS_JSON)
# Keys of a summary that differ between two readers computing it from the
# same files (their own clock and file stamps): not a reason to upload.
_LOCAL_SUMMARY_KEYS = ("checked", "status", "heartbeat_at")
# A mirror syncs one run at most this often (the dashboard asks at every rerun).
MIN_SYNC_INTERVAL_S = 1.0
# Spooled bytes kept per store on this machine; beyond it the writer drops
# (and records) the oldest segments. Minutes to hours of a probe run's rows
# (~2 bytes a value).
DEFAULT_MAX_SPOOL_BYTES = 1 << 30
_MIRROR_STATE = ".mirror.json"


def cache_dir() -> Path:
    """traindoctor's local cache folder: ``$TRAINDOCTOR_CACHE_DIR``, else the
    user cache folder (``platformdirs.user_cache_dir("traindoctor")``,
    ``~/.cache/traindoctor`` on Linux)."""
    named = os.environ.get("TRAINDOCTOR_CACHE_DIR")
    if named:
        return Path(named)
    try:
        import platformdirs
    except ImportError:  # installed with every object-store extra; a plain install only needs a fallback
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "traindoctor"
    return Path(platformdirs.user_cache_dir("traindoctor", appauthor=False))


@dataclass(frozen=True)
class StoreLocation:
    """A parsed store location.

    Attributes:
        text: the location as given.
        protocol: fsspec's protocol (``s3``, ``gcs``, ``abfs``); None for a local folder.
        path: the local folder, or ``bucket/prefix`` without the scheme (no trailing ``/``).
    """

    text: str
    protocol: str | None
    path: str

    @property
    def remote(self) -> bool:
        return self.protocol is not None

    @property
    def url(self) -> str:
        """The canonical URL (``s3://bucket/prefix``), or the local folder."""
        if self.protocol is None:
            return self.path
        scheme = {"s3": "s3", "gcs": "gs", "abfs": "az"}[self.protocol]
        return f"{scheme}://{self.path}"

    def __str__(self) -> str:
        return self.url


def parse_store(store: str | os.PathLike | StoreLocation) -> StoreLocation:
    """The location ``store`` names: a path, ``file://``, ``s3://``, ``gs://``, ``az://``/``abfs://``.

    Raises:
        StoreError: a URL scheme traindoctor cannot write, or a URL without a bucket.

    Example:
        >>> parse_store("s3://team-runs/cifar/").url
        's3://team-runs/cifar'
        >>> parse_store("file:///tmp/runs").remote
        False
    """
    if isinstance(store, StoreLocation):
        return store
    text = os.fspath(store)
    if "://" not in str(text):
        # "~/runs" from Python or a quoted $TRAINDOCTOR_STORE: no shell expanded it.
        path = os.path.expanduser(str(text))
        return StoreLocation(str(text), None, path)
    parts = urlsplit(str(text))
    scheme = parts.scheme.lower()
    if scheme == "file":
        return StoreLocation(str(text), None, unquote(parts.path) or "/")
    if scheme not in _SCHEMES:
        raise StoreError(f"unsupported store URL {text!r}: use a folder, file://, s3://, gs:// or az://")
    bucket = parts.netloc
    if scheme in ("abfs", "abfss") and "@" in bucket:
        bucket = bucket.split("@", 1)[0]  # abfs://container@account.dfs.core.windows.net/prefix
    if not bucket:
        raise StoreError(f"store URL {text!r} names no bucket")
    prefix = parts.path.strip("/")
    return StoreLocation(str(text), _SCHEMES[scheme][0], f"{bucket}/{prefix}" if prefix else bucket)


def is_remote(store: str | os.PathLike | StoreLocation | None) -> bool:
    """Whether ``store`` names an object store (a URL other than ``file://``)."""
    return store is not None and parse_store(store).remote


def display_location(store: str | os.PathLike) -> str:
    """How to name ``store`` to the user and to a child process: a URL as
    it is, a local folder made absolute."""
    location = parse_store(store)
    return location.url if location.remote else str(Path(location.path).resolve())


def store_unavailable(location: StoreLocation, error: BaseException) -> StoreError:
    """A one-line StoreError for an object store that refused or could not be reached."""
    reason = " ".join((str(error) or type(error).__name__).split())
    if isinstance(error, FileNotFoundError):
        reason = f"no such bucket or prefix ({reason})"
    elif isinstance(error, PermissionError):
        reason = f"access denied ({reason}); check the credentials"
    return StoreError(f"store {location.url} is unreachable: {reason}")


def open_filesystem(location: StoreLocation) -> Any:
    """The fsspec filesystem of an object-store location.

    Listing caches are off: a reader must see what writers publish.

    Raises:
        StoreError: the package that implements the scheme is not installed
            (naming the extra to install).
    """
    package, extra = next((package, extra) for protocol, package, extra in _SCHEMES.values()
                          if protocol == location.protocol)
    try:
        import fsspec

        fsspec.get_filesystem_class(location.protocol)
    except ImportError:
        raise StoreError(f"{location.url}: {location.protocol} stores need {package}: "
                         f"pip install 'traindoctor[{extra}]'") from None
    options: dict[str, Any] = {"use_listings_cache": False, "skip_instance_cache": True}
    if location.protocol == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["endpoint_url"] = endpoint
        # One GET per object: with more, s3fs first HEADs each object to split big ones into ranges.
        options["max_concurrency"] = 1
        options["config_kwargs"] = {"retries": {"max_attempts": _CLIENT_ATTEMPTS, "mode": "standard"},
                                    "connect_timeout": _CONNECT_TIMEOUT_S, "read_timeout": _READ_TIMEOUT_S}
    filesystem = fsspec.filesystem(location.protocol, **options)
    if location.protocol == "s3":
        filesystem.retries = _CLIENT_ATTEMPTS  # s3fs' own retries around botocore's (a class attribute)
    return filesystem


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: its size in bytes, its ETag (or another version
    token) and when the store last modified it (Unix seconds, the store's clock)."""

    size: int
    etag: str
    modified: float


def _modified(info: dict[str, Any]) -> float:
    for key in ("LastModified", "last_modified", "updated", "mtime", "timeCreated", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0


def _etag(info: dict[str, Any]) -> str:
    for key in ("ETag", "etag", "md5Hash", "generation", "content_settings"):
        value = info.get(key)
        if value:
            return str(value).strip('"')
    return f"{info.get('size')}-{_modified(info)}"


class ObjectStore:
    """A store on an object store: keys relative to the store prefix.

    Args:
        location: an object-store location (:func:`parse_store`).

    Every method raises the filesystem's own errors (``FileNotFoundError``,
    ``FileExistsError``, ``PermissionError``, other ``OSError``s, or the
    client's connection errors); callers decide what an error means.
    """

    def __init__(self, location: StoreLocation) -> None:
        self.location = location
        self.fs = open_filesystem(location)

    def full(self, key: str) -> str:
        return f"{self.location.path}/{key}"

    def _relative(self, full: str) -> str:
        full = full.split("://", 1)[-1]
        prefix = self.location.path + "/"
        return full[len(prefix):] if full.startswith(prefix) else full

    def check(self) -> None:
        """Raise a one-line StoreError when the bucket cannot be reached or read."""
        try:
            self.fs.ls(self.location.path.split("/", 1)[0], detail=False)
        except Exception as error:  # connection refused, DNS, no such bucket, denied
            raise store_unavailable(self.location, error) from None

    def list(self, prefix: str = "") -> dict[str, ObjectInfo]:
        """Every object under ``prefix`` (a run id, or "" for the whole store):
        key -> info, by one paginated LIST without a delimiter."""
        base = self.full(prefix).rstrip("/") + "/"
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        return {self._relative(path): ObjectInfo(int(info.get("size") or 0), _etag(info), _modified(info))
                for path, info in found.items() if info.get("type", "file") != "directory"}

    def put_new(self, key: str, data: bytes) -> bool:
        """Create ``key`` with ``data`` by one PUT, only if it does not exist
        (create-only where the store supports it). False when it existed."""
        try:
            self.fs.pipe_file(self.full(key), data, mode="create")
        except FileExistsError:
            return False
        except (TypeError, NotImplementedError):  # a backend without create-only writes
            if self.fs.exists(self.full(key)):
                return False
            self.fs.pipe_file(self.full(key), data)
        return True

    def put(self, key: str, data: bytes) -> None:
        """Write ``key`` by one PUT, replacing it (run.json, heartbeats, caches)."""
        self.fs.pipe_file(self.full(key), data)

    def get(self, key: str) -> bytes:
        return self.fs.cat_file(self.full(key))

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes | BaseException]:
        """Fetch ``keys`` concurrently: key -> bytes, or the error for that key."""
        if not keys:
            return {}
        full = [self.full(key) for key in keys]
        # cat_ranges with no ranges: one GET per object, concurrently, and no
        # HEAD per path (cat() checks each path exists first).
        found = self.fs.cat_ranges(full, [None] * len(full), [None] * len(full), on_error="return")
        return dict(zip(keys, found))

    def delete(self, keys: Iterable[str]) -> None:
        keys = [self.full(key) for key in keys]
        if keys:
            try:
                self.fs.rm(keys)
            except FileNotFoundError:
                pass

    def open_input(self, key: str) -> Any:
        """A seekable binary file of ``key`` (pyarrow reads a footer with range GETs)."""
        return self.fs.open(self.full(key), "rb")


# ------------------------------------------------------------------ spool


class Spool:
    """Segments a writer could not upload, kept on local disk until they are.

    One folder per writer under ``<cache>/spool/<store hash>/<writer token>/``
    with an ``owner.json`` (pid, host); files keep their object key
    (``<run_id>/<table>/<segment>``). A writer drains its own spool; a spool
    whose owner process is gone is drained by the next writer or reader of
    the same store on this machine. Uploads are create-only, so a segment
    uploaded twice (the owner and a drainer, or a lost response) is never
    replaced.
    """

    def __init__(self, location: StoreLocation, token: str, *, max_bytes: int = DEFAULT_MAX_SPOOL_BYTES) -> None:
        self.location = location
        self.folder = spool_root(location) / token
        self.max_bytes = int(max_bytes)
        self._owned = False

    def _claim(self) -> None:
        if not self._owned:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / "owner.json").write_text(json.dumps(
                {"pid": os.getpid(), "host": socket.gethostname(), "store": self.location.url}))
            self._owned = True

    def keys(self) -> list[str]:
        """Spooled object keys, oldest first."""
        return _spooled_keys(self.folder)

    def add(self, key: str, data: bytes) -> None:
        """Keep ``data`` for ``key`` (written atomically).

        Raises:
            OSError: the local disk refuses it too.
        """
        self._claim()
        path = self.folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}-{secrets.token_hex(4)}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def drain(self, objects: ObjectStore, deadline: float | None = None) -> int:
        """Upload spooled segments oldest first (create-only); returns how many
        are left. Stops at the first failure (raised) or at ``deadline``
        (``time.monotonic()``)."""
        return _drain_folder(self.folder, objects, deadline)

    def remove_if_empty(self) -> None:
        if self._owned and not self.keys():
            shutil.rmtree(self.folder, ignore_errors=True)
            self._owned = False


def spool_root(location: StoreLocation) -> Path:
    return cache_dir() / "spool" / hashlib.sha256(location.url.encode()).hexdigest()[:20]


def _spooled_keys(folder: Path) -> list[str]:
    found = []
    for table in TABLES:
        for path in folder.glob(f"*/{table}/*.parquet"):
            if not path.name.startswith("."):
                found.append((path.stat().st_mtime_ns, path.relative_to(folder).as_posix()))
    return [key for _, key in sorted(found)]


def _drain_folder(folder: Path, objects: ObjectStore, deadline: float | None) -> int:
    keys = _spooled_keys(folder)
    for index, key in enumerate(keys):
        if deadline is not None and time.monotonic() > deadline:
            return len(keys) - index
        path = folder / key
        objects.put_new(key, path.read_bytes())  # False: uploaded before (a lost response): done too
        path.unlink(missing_ok=True)
    return 0


def drain_orphaned_spools(objects: ObjectStore) -> int:
    """Upload the spooled segments of writers of this store that are gone
    (their process on this machine has ended); returns segments uploaded.
    Best effort: an upload that fails leaves the rest for the next try."""
    root = spool_root(objects.location)
    uploaded = 0
    try:
        folders = [entry for entry in root.iterdir() if entry.is_dir()]
    except FileNotFoundError:
        return 0
    for folder in folders:
        try:
            owner = json.loads((folder / "owner.json").read_text())
            if owner.get("host") == socket.gethostname() and _alive(int(owner["pid"])):
                continue
            before = len(_spooled_keys(folder))
            left = _drain_folder(folder, objects, None)
            uploaded += before - left
            if not left:
                shutil.rmtree(folder, ignore_errors=True)
        except Exception:  # another process draining it, or the store still down: next time
            continue
    return uploaded


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------ mirror


def _wanted(key: str) -> bool:
    """Whether a run folder's object belongs in a reader's mirror."""
    parts = key.split("/")
    if len(parts) == 2:
        return parts[1] in (RUN_JSON, *_READER_FILES)
    return (len(parts) == 3 and parts[1] in TABLES and bool(segment_names([parts[2]])))


def _closed(summary: bytes) -> bool:
    try:
        return json.loads(summary).get("status") in ("finished", "crashed")
    except (ValueError, AttributeError):
        return False


def _summary_key(data: bytes) -> str:
    """What two readers' summaries (or findings) of the same files agree on."""
    try:
        value = json.loads(data)
    except ValueError:
        return hashlib.sha256(data).hexdigest()
    if isinstance(value, dict):
        value = {key: item for key, item in value.items() if key not in _LOCAL_SUMMARY_KEYS}
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8", "surrogatepass")).hexdigest()


class Mirror:
    """A local read cache of an object store's runs (module doc).

    Args:
        location: the object-store location.
        root: the local folder (default: ``<cache>/stores/<hash of the URL>``).

    The folder is a store like any other: hand ``mirror.root`` to a Store or
    a Catalog after :meth:`sync`. Several processes may share it: files are
    written under temporary names and renamed into place.
    """

    def __init__(self, location: StoreLocation, root: str | os.PathLike | None = None,
                 objects: ObjectStore | None = None) -> None:
        self.location = location
        self.objects = objects or ObjectStore(location)
        self.root = Path(root) if root is not None else (
            cache_dir() / "stores" / hashlib.sha256(location.url.encode()).hexdigest()[:20])
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ".location").write_text(location.url + "\n")
        self._lock = threading.Lock()
        self._synced: dict[str | None, float] = {}
        self._checked = False
        self._bucket_checked = False
        # Caches written here after the last sync (a CLI command's summaries
        # and findings) still reach the bucket when the process ends: from
        # threading's exit hooks, which run before concurrent.futures shuts
        # its executors (an atexit hook runs after, and fsspec's event loop
        # then hangs resolving the endpoint's address).
        reference = weakref.ref(self)
        _at_exit(lambda: (mirror := reference()) is not None and mirror.push_quietly())

    # ------------------------------------------------------------ syncing

    def sync(self, run_ids: Sequence[str] | None = None, *, max_age_s: float = 0.0) -> None:
        """Bring the mirror up to date with the bucket: all runs (one LIST of
        the store prefix) or the given ones (one LIST each). Caches written
        locally since (summaries, findings) are uploaded first.

        ``max_age_s``: skip runs synced less than this long ago.

        Raises:
            StoreError: the bucket cannot be reached (one line).
        """
        now = time.monotonic()
        with self._lock:
            scopes: list[str | None] = [None] if run_ids is None else list(dict.fromkeys(run_ids))
            scopes = [scope for scope in scopes
                      if max_age_s <= 0 or now - self._synced.get(scope, self._synced.get(None, -1e9)) >= max_age_s]
            if not scopes:
                return
            try:
                if not self._checked:
                    drain_orphaned_spools(self.objects)
                    self._checked = True
                for scope in scopes:
                    self._sync_scope(scope)
                    self._synced[scope] = now
            except StoreError:
                raise
            except Exception as error:
                raise store_unavailable(self.location, error) from None

    def _sync_scope(self, run_id: str | None) -> None:
        for attempt in range(8):
            if run_id is None:
                listing = self.objects.list("")
                if not listing and not self._bucket_checked:
                    self.objects.check()
                    self._bucket_checked = True  # no object at all: is there a bucket? (one line if not)
            else:
                check_run_id(run_id)
                listing = {key: info for key, info in self.objects.list(run_id).items()}
            runs: dict[str, dict[str, ObjectInfo]] = {}
            for key, info in listing.items():
                run, _, rest = key.partition("/")
                if rest and not run.startswith("."):
                    runs.setdefault(run, {})[key] = info
            if run_id is None:
                self._remove_gone(set(runs))
            elif run_id not in runs:
                self._remove_gone(set(), only=[run_id])
            if all(self._sync_run(run, objects) for run, objects in sorted(runs.items())):
                return
            # A listed object was deleted before it could be fetched (a
            # compaction removed its pieces): list again.
        raise StoreError(f"store {self.location.url}: objects kept vanishing while listed")

    def _remove_gone(self, present: set[str], only: Sequence[str] | None = None) -> None:
        candidates = only if only is not None else [entry.name for entry in self.root.iterdir()
                                                    if entry.is_dir() and not entry.name.startswith(".")]
        for name in candidates:
            if name not in present and (self.root / name).is_dir():
                shutil.rmtree(self.root / name, ignore_errors=True)

    def _state(self, run_dir: Path) -> dict[str, Any]:
        try:
            return json.loads((run_dir / _MIRROR_STATE).read_text())
        except (OSError, ValueError):
            return {}

    def _sync_run(self, run_id: str, listing: dict[str, ObjectInfo]) -> bool:
        """Fetch what changed of one run; False when a listed object vanished."""
        if f"{run_id}/{RUN_JSON}" not in listing:
            return True  # a writer creating it (run.json comes first from rank 0) or not a run
        try:
            check_run_id(run_id)
        except StoreError:
            return True
        run_dir = self.root / run_id
        for table in TABLES:
            (run_dir / table).mkdir(parents=True, exist_ok=True)
        state = self._state(run_dir)
        self._push_caches(run_id, run_dir, listing, state)
        fetch = []
        for key, info in listing.items():
            if not _wanted(key):
                continue
            relative = key.split("/", 1)[1]
            path = run_dir / relative
            if "/" in relative:  # a segment: immutable, named uniquely
                if not (path.exists() and path.stat().st_size == info.size):
                    fetch.append(key)
            else:
                known = state.get(relative) or {}
                if known.get("etag") is None and relative in _READER_FILES and known.get("stat") \
                        and known["stat"][1] == info.size:
                    known["etag"] = info.etag  # this mirror's own upload, now listed
                elif known.get("etag") != info.etag:
                    fetch.append(key)
        fetched: dict[str, bytes | BaseException] = {}
        for start in range(0, len(fetch), _DOWNLOAD_BATCH):
            fetched.update(self.objects.get_many(fetch[start:start + _DOWNLOAD_BATCH]))
        vanished = False
        for key, data in fetched.items():
            relative = key.split("/", 1)[1]
            if isinstance(data, FileNotFoundError):
                vanished = True
                continue
            if isinstance(data, BaseException):
                raise data
            if relative in _READER_FILES:
                state[relative] = {"etag": listing[key].etag, "key": _summary_key(data)}
                _write_atomic(run_dir / relative, data)
                state[relative]["stat"] = _stat(run_dir / relative)
            elif relative == RUN_JSON:
                state[relative] = {"etag": listing[key].etag, "text": data.decode("utf-8", "replace")}
            else:
                _write_atomic(run_dir / relative, data)
        self._write_run_json(run_dir, listing, state)
        # Pieces a compaction deleted (the merged object was fetched above, before these go).
        present = {key.split("/", 1)[1] for key in listing}
        for table in TABLES:
            for name in segment_names(entry.name for entry in os.scandir(run_dir / table)):
                if f"{table}/{name}" not in present:
                    (run_dir / table / name).unlink(missing_ok=True)
        text = json.dumps(state).encode()
        if text != _read_bytes(run_dir / _MIRROR_STATE):
            _write_atomic(run_dir / _MIRROR_STATE, text)
        return not vanished

    def _write_run_json(self, run_dir: Path, listing: dict[str, ObjectInfo], state: dict[str, Any]) -> None:
        """The local run.json: the bucket's, with a running run's heartbeat_at
        set to the newest LastModified of its writers' objects (the store's
        clock, not the writers')."""
        text = (state.get(RUN_JSON) or {}).get("text")
        if text is None:
            return
        try:
            meta = json.loads(text)
        except ValueError:
            meta = None
        if isinstance(meta, dict) and meta.get("status", "running") == "running":
            written = [info.modified for key, info in listing.items()
                       if key.split("/", 1)[1] not in _READER_FILES and info.modified]
            if written:
                meta["heartbeat_at"] = max(written)
            text = json.dumps(meta, indent=2, sort_keys=True)
        data = text.encode("utf-8")
        path = run_dir / RUN_JSON
        try:
            if path.read_bytes() == data:
                return
        except OSError:
            pass
        _write_atomic(path, data)

    # ------------------------------------------------------------ pushing

    def _push_caches(self, run_id: str, run_dir: Path, listing: dict[str, ObjectInfo], state: dict[str, Any]) -> None:
        """Upload summary.json and .findings.json written here since the last
        sync, unless the bucket's copy says the same (another reader's)."""
        for name in _READER_FILES:
            path = run_dir / name
            stat = _stat(path)
            known = state.get(name) or {}
            if stat is None or stat == known.get("stat"):
                continue
            data = path.read_bytes()
            if name == SUMMARY_JSON and not _closed(data):
                continue  # a running run's summary is stale within seconds: not worth a PUT per read
            key = _summary_key(data)
            remote = listing.get(f"{run_id}/{name}")
            if key == known.get("key") and (remote is None or known.get("etag") in (None, remote.etag)):
                # The same content as the bucket's (only this reader's stamps moved): no PUT.
                state[name] = {**known, "stat": stat}
                continue
            if remote is not None and remote.etag != known.get("etag") and known.get("etag") is not None:
                continue  # another reader uploaded a newer one: fetched below instead
            self.objects.put(f"{run_id}/{name}", data)
            state[name] = {"etag": None, "key": key, "stat": stat}
            listing.pop(f"{run_id}/{name}", None)  # what was just uploaded needs no download

    def push_quietly(self) -> None:
        """Upload the caches written since the last sync; errors are ignored (a cache)."""
        try:
            for entry in self.root.iterdir():
                if entry.is_dir() and not entry.name.startswith("."):
                    state = self._state(entry)
                    if any(_stat(entry / name) not in (None, (state.get(name) or {}).get("stat"))
                           for name in _READER_FILES):
                        self._push_caches(entry.name, entry, {}, state)
                        _write_atomic(entry / _MIRROR_STATE, json.dumps(state).encode())
        except Exception:
            pass

    def push_run(self, run_id: str) -> int:
        """Upload a run built in the mirror (an import): its segments
        create-only, then summary and findings, run.json last (a reader lists
        a run only once its run.json is there). Returns objects uploaded.

        Raises:
            StoreError: the bucket refused an upload (one line).
        """
        run_dir = self.root / run_id
        try:
            listing = self.objects.list(run_id)
            uploaded = 0
            for table in TABLES:
                for name in segment_names(entry.name for entry in os.scandir(run_dir / table)):
                    key = f"{run_id}/{table}/{name}"
                    if key not in listing:
                        self.objects.put_new(key, (run_dir / table / name).read_bytes())
                        uploaded += 1
            gone = [key for key in listing if key.count("/") == 2 and _wanted(key)
                    and not (run_dir / key.split("/", 1)[1]).exists()]
            for name in (*_READER_FILES, RUN_JSON):
                if (run_dir / name).exists():
                    self.objects.put(f"{run_id}/{name}", (run_dir / name).read_bytes())
                    uploaded += 1
            # A re-import replaced the run's files: the old ones go last.
            self.objects.delete(gone)
        except StoreError:
            raise
        except Exception as error:
            raise store_unavailable(self.location, error) from None
        self._synced.clear()
        return uploaded


def _at_exit(function: Any) -> None:
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is None:
            raise RuntimeError
        register(function)
    except RuntimeError:  # no such hook in this Python, or the interpreter is already exiting
        atexit.register(function)


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _stat(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_mtime_ns, stat.st_size]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
