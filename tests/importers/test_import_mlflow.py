"""`import mlflow`: runs written by the real MLflow client to a local file store and to SQLite."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from traindoctor.store.importers import import_source
from traindoctor.store.importers import mlflow as mlflow_importer
from traindoctor.store.reader import Store
from traindoctor.store.segments import StoreError
from tests.importers.conftest import imported_series, listing

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric  # noqa: E402

STORES = ["file", "sqlite"]


@pytest.fixture
def tracking(tmp_path, monkeypatch, request) -> tuple[str, str]:
    """(what the user passes as TRACKING_URI, the URI the test writes through) for one store kind."""
    # MLflow 3 refuses to write a file store without this; the import reads without it.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if request.param == "file":
        folder = tmp_path / "mlruns"
        return str(folder), folder.as_uri()
    database = tmp_path / "mlflow.db"
    return str(database), f"sqlite:///{database}"


def writer(uri: str, monkeypatch) -> MlflowClient:
    if uri.startswith("file:"):
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=uri)


def log_run(client: MlflowClient, experiment: str, name: str, steps: int, *, params: dict | None = None,
            tags: dict | None = None) -> tuple[str, dict[str, list[tuple[int, float]]]]:
    """A run with loss (NaN and ±Inf included), lr every step and val_loss every 10 steps; its metric oracle."""
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run_id = client.create_run(experiment_id, run_name=name, tags=tags or {}).info.run_id
    for key, value in (params or {}).items():
        client.log_param(run_id, key, value)
    logged: dict[str, list[tuple[int, float]]] = {"loss": [], "lr": [], "val_loss": []}
    start = int(time.time() * 1000)
    batch = []
    for step in range(1, steps + 1):
        loss = {5: math.nan, 6: math.inf, 7: -math.inf}.get(step, 2.0 / step)
        batch += [Metric("loss", loss, start + step, step), Metric("lr", 1e-3, start + step, step)]
        logged["loss"].append((step, loss))
        logged["lr"].append((step, 1e-3))
        if step % 10 == 0:
            batch.append(Metric("val_loss", 1.0 / step, start + step, step))
            logged["val_loss"].append((step, 1.0 / step))
        if len(batch) >= 900:  # MLflow takes at most 1,000 metrics per batch
            client.log_batch(run_id, metrics=batch)
            batch = []
    if batch:
        client.log_batch(run_id, metrics=batch)
    client.set_terminated(run_id)
    return run_id, logged


def points(store_root: Path, run_id: str, split: str, name: str, layer: str | None = None) -> list:
    frame = imported_series(store_root, run_id, split, name, layer)
    return list(zip(frame["step"].tolist(), frame["value"].tolist()))


def same(actual, expected) -> bool:
    return len(actual) == len(expected) and all(
        a[0] == e[0] and (a[1] == e[1] or (math.isnan(a[1]) and math.isnan(e[1]))) for a, e in zip(actual, expected))


HF_PARAMS = {"learning_rate": "0.001", "optim": "adamw_torch", "weight_decay": "0.0", "adam_beta1": "0.9",
             "adam_beta2": "0.999", "adam_epsilon": "1e-08", "architectures": "['BertForSequenceClassification']",
             "id2label": "{0: 'neg', 1: 'pos', 2: 'neutral'}", "fp16": "True", "run_label": "baseline"}


@pytest.mark.parametrize("tracking", STORES, indirect=True)
def test_every_point_params_and_tags_of_a_run(tracking, store_root, monkeypatch):
    path, uri = tracking
    client = writer(uri, monkeypatch)
    run_id, logged = log_run(client, "exp", "bert-run", 30, params=HF_PARAMS,
                             tags={"mlflow.source.git.commit": "abc123", "team": "nlp"})
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # a reader need not opt in
    [result] = import_source("mlflow", store_root, path)
    assert result.name == "bert-run"
    assert same(points(store_root, result.run_id, "train", "loss"), logged["loss"])
    assert same(points(store_root, result.run_id, "train", "lr", "group0"), logged["lr"])
    assert same(points(store_root, result.run_id, "val", "loss"), logged["val_loss"])
    # The oracle is MLflow's own reading of the same history.
    for key in ("loss", "val_loss"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert same(sorted(logged[key]), history) or key == "loss"  # the SQL store writes ±Inf as ±DBL_MAX
    meta = Store(store_root).run_meta(result.run_id)
    assert meta["config"]["learning_rate"] == 0.001 and meta["config"]["fp16"] is True
    assert meta["config"]["run_label"] == "baseline"
    assert meta["task"] == {"kind": "classification", "num_classes": 3, "class_names": ["neg", "pos", "neutral"]}
    assert meta["env"]["git_commit"] == "abc123" and meta["env"]["optimizer"]["type"] == "AdamW"
    assert meta["source"]["tags"]["team"] == "nlp"
    assert meta["source"]["mlflow"]["run_id"] == run_id
    assert meta["source"]["path"] == f"{mlflow_importer.tracking_uri(path)}#{run_id}"
    wall = imported_series(store_root, result.run_id, "train", "loss")["wall_time"]
    assert wall.between(time.time() - 600, time.time() + 600).all()
    info = client.get_run(run_id).info  # started and ended when MLflow says, not at the import
    assert meta["created_at"] == info.start_time / 1000 and meta["finished_at"] == info.end_time / 1000


@pytest.mark.parametrize("tracking", ["sqlite"], indirect=True)
def test_sql_fast_path_equals_get_metric_history(tracking, monkeypatch):
    _, uri = tracking
    client = writer(uri, monkeypatch)
    run_id, _ = log_run(client, "exp", "r", 25)
    run = client.get_run(run_id)
    fast = mlflow_importer._sql_histories(client, run_id)
    for key in run.data.metrics:
        history = client.get_metric_history(run_id, key)
        steps, values, walls = fast[key]
        expected = np.array([m.value for m in history])
        # MLflow's entity keeps the ±DBL_MAX the SQL store wrote for ±Inf; the importer restores ±Inf.
        expected[expected == sys.float_info.max] = np.inf
        expected[expected == -sys.float_info.max] = -np.inf
        assert steps.tolist() == [m.step for m in history]
        np.testing.assert_array_equal(values, expected)
        assert walls.tolist() == [m.timestamp / 1000 for m in history]


@pytest.mark.parametrize("tracking", STORES, indirect=True)
def test_experiment_and_run_id_select_runs_across_pages(tracking, store_root, monkeypatch):
    path, uri = tracking
    client = writer(uri, monkeypatch)
    ids = [log_run(client, "sweep", f"trial-{i}", 3)[0] for i in range(5)]
    log_run(client, "other", "elsewhere", 3)
    monkeypatch.setattr(mlflow_importer, "_PAGE", 2)  # five runs come in three pages
    results = import_source("mlflow", store_root, path, experiment="sweep", run_name="sweep")
    assert sorted(r.name for r in results) == [f"sweep/trial-{i}" for i in range(5)]
    [one] = import_source("mlflow", store_root, path, run_id=ids[2])
    assert one.skipped and one.name == "sweep/trial-2"
    assert len(import_source("mlflow", store_root, path)) == 6
    with pytest.raises(StoreError, match="no MLflow experiment 'nope'.*experiments: .*sweep"):
        import_source("mlflow", store_root, path, experiment="nope")
    with pytest.raises(StoreError, match="no MLflow run 0123"):
        import_source("mlflow", store_root, path, run_id="0123")


@pytest.mark.parametrize("tracking", STORES, indirect=True)
def test_same_run_is_skipped_and_a_grown_run_replaces_its_import(tracking, store_root, monkeypatch):
    path, uri = tracking
    client = writer(uri, monkeypatch)
    run_id, _ = log_run(client, "exp", "r", 10)
    [first] = import_source("mlflow", store_root, path)
    [again] = import_source("mlflow", store_root, path)
    assert again.skipped and again.run_id == first.run_id
    client.log_metric(run_id, "loss", 0.1, step=11)
    [grown] = import_source("mlflow", store_root, path)
    assert not grown.skipped and grown.run_id == first.run_id
    assert points(store_root, grown.run_id, "train", "loss")[-1] == (11, 0.1)


@pytest.mark.parametrize("tracking", ["sqlite"], indirect=True)
def test_without_a_tracking_uri_mlflows_default_applies(tracking, store_root, monkeypatch):
    _, uri = tracking
    log_run(writer(uri, monkeypatch), "exp", "from-env", 3)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    [result] = import_source("mlflow", store_root, None)
    assert result.name == "from-env" and result.rows == 6


@pytest.mark.parametrize("given, message", [
    ("{tmp}/absent", "no MLflow tracking store at .*absent"),
    ("sqlite:///{tmp}/absent.db", "no MLflow tracking store at sqlite"),
    ("{tmp}/empty.db", "cannot open MLflow tracking store|no MLflow runs"),
], ids=["missing-folder", "missing-database", "not-a-database"])
def test_bad_tracking_uri_is_a_one_line_error_and_creates_nothing(tmp_path, store_root, given, message):
    (tmp_path / "empty.db").write_bytes(b"not sqlite")
    with pytest.raises(StoreError, match=message) as raised:
        import_source("mlflow", store_root, given.format(tmp=tmp_path))
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "absent").exists() and not (tmp_path / "absent.db").exists()
    assert listing(store_root) == []


def test_a_folder_that_is_not_an_mlflow_store_is_one_line_without_mlflows_tracebacks(tmp_path, store_root, caplog):
    # MLflow's file store logs a full traceback (logging.warning(..., exc_info=True)) for each
    # subfolder without a meta.yaml: `import mlflow ./outputs` printed one per folder before the error.
    for name in ("checkpoints", "logs", "runs"):
        (tmp_path / "outputs" / name).mkdir(parents=True)
    with pytest.raises(StoreError, match="no MLflow runs in .*3 folder.*not MLflow experiments") as raised:
        import_source("mlflow", store_root, tmp_path / "outputs")
    assert "\n" not in str(raised.value)
    assert [record.getMessage() for record in caplog.records if record.exc_info] == []


def test_without_the_mlflow_package_the_error_says_what_to_install(tmp_path, store_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(StoreError, match=r"pip install 'traindoctor\[mlflow\]'"):
        import_source("mlflow", store_root, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("tracking", STORES, indirect=True)
def test_50000_step_history_arrives_whole(tracking, store_root, monkeypatch):
    path, uri = tracking
    client = writer(uri, monkeypatch)
    _, logged = log_run(client, "exp", "long", 50_000)
    [result] = import_source("mlflow", store_root, path)
    assert same(points(store_root, result.run_id, "train", "loss"), logged["loss"])
    assert result.rows == 50_000 * 2 + 5_000
