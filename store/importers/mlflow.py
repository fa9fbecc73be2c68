"""Import MLflow runs through MLflow's own client: file stores, SQLite (any SQL) stores and tracking servers.

``TRACKING_URI`` is what ``MlflowClient`` takes (``http://host:5000``,
``sqlite:///mlflow.db``, ``file:///…/mlruns``), or a local path: a folder
is a file store, a file a SQLite database. Without one, MLflow's own default
applies (``$MLFLOW_TRACKING_URI``, else ``./mlruns`` if it holds runs, else
``sqlite:///mlflow.db``). Every run of every experiment is imported, or those
of ``experiment`` (a name), or the one ``run_id``.

Per run: every metric's full history (``MlflowClient.get_metric_history``,
which pages through a tracking server's answers), with MLflow's step as the
step and its timestamp (ms) as the wall time; params as the config (MLflow
keeps them as text: ``"0.001"``, ``"True"`` and ``"[0.9, 0.999]"`` come back
as the numbers, booleans and lists they were); tags in ``source.tags`` and
the git commit (``mlflow.source.git.commit``) in ``env``. An HF Trainer's
MLflowCallback logs the model config and TrainingArguments as params, which
give the task and optimizer as in :mod:`store.importers.hf`. A metric
logged more than once at one step keeps the value logged last (MLflow keeps
them all), and a model config whose ``id2label`` is not ``0..n-1`` stops the
import: the import rules of :mod:`traindoctor.store.importers.common`.

Speed: on a SQL store, ``get_metric_history`` builds an ORM object per point
(about 22,000 points/s); there the points are read with one query of the
store's own engine and ``SqlMetric`` model (about 200,000/s), checked
against ``get_metric_history`` in the tests. MLflow's SQL store writes NaN
as ``is_nan`` and ±Inf as ±``sys.float_info.max``; both are read back as
NaN and ±Inf.

Reading opens the store as MLflow does: a file store needs MLflow's opt-in
(``MLFLOW_ALLOW_FILE_STORE``, set for the duration of the import only, since
MLflow 3 deprecates file stores for writing), and opening an older SQLite
database lets MLflow upgrade its schema, as ``mlflow ui`` would.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from traindoctor.store.errors import StoreError
from traindoctor.store.importers.common import Columns, ParsedRun, Progress, RunSource, series_from_columns
from traindoctor.store.importers.hf import model_meta, optimizer_meta

# The kind's PATH is a tracking URI, checked here rather than as a local path.
PATH_IS_URI = True
# The progress bar counts metrics read, not bytes.
PROGRESS_UNIT = "metric"
# Runs and experiments asked for per page (MLflow's own maximum for search_runs is 50,000).
_PAGE = 1000
_GIT_COMMIT_TAG = "mlflow.source.git.commit"
_RUN_NAME_TAG = "mlflow.runName"
_FILE_STORE_OPT_IN = "MLFLOW_ALLOW_FILE_STORE"


def _mlflow():
    try:
        import mlflow
        from mlflow import MlflowClient
    except ImportError:
        raise StoreError("importing MLflow runs needs the mlflow package: pip install 'traindoctor[mlflow]'") from None
    return mlflow, MlflowClient


def tracking_uri(path: str | os.PathLike | None) -> str:
    """The tracking URI for ``path``; a local path must exist (MLflow would create an empty store there)."""
    mlflow, _ = _mlflow()
    default = path is None
    # MLflow's default (sqlite:///mlflow.db) is checked like a URI the user gave: opening a missing
    # one would create an empty database in the current folder, a side effect of a read.
    text = mlflow.get_tracking_uri() if default else os.fspath(path)
    if "://" in text:
        for scheme in ("sqlite:///", "file://"):
            if text.startswith(scheme):
                local = Path(text[len(scheme):] if scheme == "sqlite:///" else text[len(scheme):])
                if not local.exists():
                    hint = " (MLflow's default tracking URI: give TRACKING_URI)" if default else ""
                    raise StoreError(f"no MLflow tracking store at {text}: {local} does not exist{hint}")
        return text
    local = Path(text).expanduser()
    if local.is_dir():
        return local.resolve().as_uri()
    if local.is_file():
        return f"sqlite:///{local.resolve()}"
    raise StoreError(f"no MLflow tracking store at {text}: no such folder or database file")


@contextlib.contextmanager
def _file_store_allowed(uri: str) -> Iterator[None]:
    """MLflow 3 refuses to open a file store unless opted in; reading an existing one is fine."""
    if not uri.startswith("file:") or os.environ.get(_FILE_STORE_OPT_IN) is not None:
        yield
        return
    os.environ[_FILE_STORE_OPT_IN] = "true"
    try:
        yield
    finally:
        os.environ.pop(_FILE_STORE_OPT_IN, None)


def _client(uri: str):
    _, client_class = _mlflow()
    try:
        client = client_class(tracking_uri=uri)
        client.search_experiments(max_results=1)  # opens the store now, so a bad URI fails here
    except Exception as error:  # MlflowException, or the database driver's own (a file that is not SQLite)
        raise StoreError(f"cannot open MLflow tracking store {uri}: {_first_line(error)}") from None
    return client


def _first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return " ".join(text.strip().splitlines()[0].split()) if text.strip() else type(error).__name__


def _pages(fetch) -> Iterator[Any]:
    """Every item of a paged MLflow listing (search_runs, search_experiments)."""
    token = None
    while True:
        page = fetch(token)
        yield from page
        token = page.token
        if not token:
            return


def _runs(client, uri: str, experiment: str | None, run_id: str | None) -> list:
    from mlflow.exceptions import MlflowException

    try:
        if run_id is not None:
            try:
                return [client.get_run(run_id)]
            except MlflowException:
                raise StoreError(f"no MLflow run {run_id} in {uri}") from None
        if experiment is not None:
            found = client.get_experiment_by_name(experiment)
            if found is None:
                names = sorted(e.name for e in _pages(lambda token: client.search_experiments(max_results=_PAGE, page_token=token)))
                raise StoreError(f"no MLflow experiment {experiment!r} in {uri} (experiments: {', '.join(names) or 'none'})")
            experiment_ids = [found.experiment_id]
        else:
            experiment_ids = [e.experiment_id for e in _pages(lambda token: client.search_experiments(max_results=_PAGE, page_token=token))]
        runs = []
        for start in range(0, len(experiment_ids), 100):  # a server takes a bounded list of experiments
            ids = experiment_ids[start:start + 100]
            runs += list(_pages(lambda token: client.search_runs(ids, max_results=_PAGE, page_token=token)))
        return runs
    except MlflowException as error:
        raise StoreError(f"cannot list MLflow runs in {uri}: {_first_line(error)}") from None


def _digest(run) -> str:
    """What a run holds now, to skip an unchanged run: its status, end time, newest value
    (and its step and time) of each metric, params and tags."""
    latest = sorted((m.key, m.value, m.step, m.timestamp) for m in run.data.to_proto().metrics)
    state = {"status": run.info.status, "end_time": run.info.end_time, "metrics": latest,
             "params": sorted(run.data.params.items()), "tags": sorted(run.data.tags.items())}
    return hashlib.sha256(json.dumps(state, default=str).encode("utf-8")).hexdigest()


class _MalformedExperiments(logging.Filter):
    """Drops MLflow's file-store warning about a folder without a meta.yaml, keeping its name.

    MLflow logs it on the root logger with a full traceback, once per such
    folder (``Malformed experiment 'logs'. Detailed error ...``): pointed at a
    training output folder, the import printed a traceback per subfolder.
    """

    _PATTERN = re.compile(r"Malformed experiment '([^']*)'")

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        found = self._PATTERN.match(str(record.msg))
        if found is None:
            return True
        self.names.append(found.group(1))
        return False


@contextlib.contextmanager
def _quiet_malformed_experiments() -> Iterator[_MalformedExperiments]:
    malformed = _MalformedExperiments()
    root = logging.getLogger()
    root.addFilter(malformed)
    try:
        yield malformed
    finally:
        root.removeFilter(malformed)


def discover(path: str | os.PathLike | None, run_name: str | None, experiment: str | None = None,
             run_id: str | None = None) -> list[RunSource]:
    uri = tracking_uri(path)
    with _file_store_allowed(uri), _quiet_malformed_experiments() as malformed:
        client = _client(uri)
        runs = _runs(client, uri, experiment, run_id)
    skipped = sorted(set(malformed.names))
    not_experiments = (f"{len(skipped)} folder(s) that are not MLflow experiments (no meta.yaml): "
                       f"{', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''}") if skipped else ""
    if not runs:
        where = f"experiment {experiment!r} of {uri}" if experiment else uri
        raise StoreError(f"no MLflow runs in {where}" + (f"; it holds {not_experiments}" if skipped else ""))
    if skipped:
        warnings.warn(f"{uri}: left out {not_experiments}", stacklevel=2)
    local = Path(uri[len("file://"):]) if uri.startswith("file://") else Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else Path(".")
    sources = []
    for run in runs:
        name = run.info.run_name or run.data.tags.get(_RUN_NAME_TAG) or run.info.run_id
        if run_name:
            name = run_name if len(runs) == 1 else f"{run_name}/{name}"
        sources.append(RunSource(
            name=name, path=local, files=[], identity=f"{uri}#{run.info.run_id}", digest=_digest(run),
            handle=(client, run), size=max(1, len(run.data.metrics)),
        ))
    return sources


def _param(text: str) -> Any:
    """A param as the value it was logged from (MLflow stores ``str(value)``)."""
    try:
        return ast.literal_eval(text)  # literals only: numbers, strings, lists, dicts, True/None; never code
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _sql_histories(client, run_id: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
    """Every metric point of a run on a SQL store in one query; None on any other store."""
    # MlflowClient does not expose its store; a client without one (a newer
    # MLflow) falls back to get_metric_history.
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    engine = getattr(store, "engine", None)
    if engine is None:
        return None
    try:
        import sqlalchemy
        from mlflow.store.tracking.dbmodels.models import SqlMetric
    except ImportError:
        return None
    query = (sqlalchemy.select(SqlMetric.key, SqlMetric.step, SqlMetric.value, SqlMetric.timestamp, SqlMetric.is_nan)
             .where(SqlMetric.run_uuid == run_id)
             .order_by(SqlMetric.key, SqlMetric.timestamp, SqlMetric.step, SqlMetric.value))
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    if not rows:
        return {}
    keys = np.array([row[0] for row in rows], dtype=object)
    steps = np.array([row[1] for row in rows], dtype=np.int64)
    values = np.array([row[2] for row in rows], dtype=np.float64)
    times = np.array([row[3] for row in rows], dtype=np.float64) / 1000.0  # ms → Unix seconds
    is_nan = np.array([bool(row[4]) for row in rows])
    values[is_nan] = np.nan
    # MLflow's SQL store clamps ±Inf to ±DBL_MAX when logging; put them back.
    values[values == sys.float_info.max] = np.inf
    values[values == -sys.float_info.max] = -np.inf
    bounds = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    return {str(keys[part[0]]): (steps[part], values[part], times[part])
            for part in np.split(np.arange(len(rows)), bounds)}


def metric_histories(client, run, progress: Progress | None = None) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """metric key → (steps, values, wall times in Unix seconds), every logged point."""
    run_id = run.info.run_id
    histories = _sql_histories(client, run_id)
    if histories is not None:
        if progress is not None:
            progress.update(max(1, len(run.data.metrics)))
        return histories
    columns = Columns()
    for key in sorted(run.data.metrics):
        steps, values, walls = columns.lists(key)
        for metric in client.get_metric_history(run_id, key):
            steps.append(metric.step)
            values.append(metric.value)
            walls.append(metric.timestamp / 1000.0)
        if progress is not None:
            progress.update(1)
    return columns.arrays()


def parse(source: RunSource, progress: Progress) -> ParsedRun:
    from mlflow.exceptions import MlflowException

    client, run = source.handle
    try:
        with _file_store_allowed(source.identity or ""):
            histories = metric_histories(client, run, progress)
    except MlflowException as error:
        raise StoreError(f"cannot read MLflow run {run.info.run_id}: {_first_line(error)}") from None
    config = {key: _param(value) for key, value in run.data.params.items()}
    tags = dict(run.data.tags)
    env: dict[str, Any] = {"logger": "mlflow"}
    if tags.get(_GIT_COMMIT_TAG):
        env["git_commit"] = tags[_GIT_COMMIT_TAG]
    task: dict[str, Any] = {}
    if isinstance(config.get("architectures"), list):  # HF Trainer's MLflowCallback logs the model config
        env["model"], task = model_meta(config, f"{source.where} (params)")
    if "optim" in config and "learning_rate" in config:  # ... and its TrainingArguments
        env["optimizer"] = optimizer_meta(config)
    experiment = run.info.experiment_id
    columns = {key: (steps, values, None if not np.isfinite(walls).any() else walls) for key, (steps, values, walls) in histories.items()}
    return ParsedRun(
        source=source, series=series_from_columns(columns), config=config, env=env, task=task,
        extra_source={"mlflow": {"run_id": run.info.run_id, "experiment_id": experiment, "status": run.info.status,
                                 "start_time": None if run.info.start_time is None else run.info.start_time / 1000.0,
                                 "end_time": None if run.info.end_time is None else run.info.end_time / 1000.0},
                      "tags": tags},
    )
