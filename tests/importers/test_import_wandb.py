"""`import wandb`: run folders written by the real wandb library in offline mode (no network)."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from traindoctor.store.importers import import_source
from traindoctor.store.importers.wandb import NORM_BOUND_FACTOR, histogram_norm
from traindoctor.store.reader import Store
from traindoctor.store.segments import StoreError
from tests.importers.conftest import imported_series, listing

wandb = pytest.importorskip("wandb")


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """W&B offline, silent, with its config and caches inside tmp_path."""
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
                        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "WANDB_DATA_DIR": str(tmp_path / "wandb-data")}.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module", autouse=True)
def stop_wandb_service():
    yield
    wandb.teardown()


def offline_run(folder: Path, log: Callable, config: dict | None = None, name: str | None = None) -> Path:
    """Run ``log(run)`` in a fresh offline W&B run under ``folder``; the run folder it wrote."""
    run = wandb.init(project="traindoctor-test", dir=str(folder), mode="offline", config=config or {}, name=name,
                     settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, disable_git=True,
                                             disable_code=True))
    log(run)
    run.finish()
    # finish() can return before wandb-core has flushed the run's .wandb file; stopping the
    # service waits for it (the next run starts a new one, about 0.5 s).
    wandb.teardown()
    [run_folder] = (folder / "wandb").glob("offline-run-*")
    return run_folder


def hf_style(steps: int, eval_every: int) -> tuple[Callable, dict]:
    """Log as HF Trainer's WandbCallback does: train/global_step as the step metric, eval in calls of its own.

    Returns the logging function and the oracle: (split, name, layer) → [(step, value)].
    """
    oracle: dict[tuple, list] = {("train", "loss", None): [], ("train", "lr", "group0"): [],
                                 ("train", "grad_norm", None): [], ("val", "loss", None): []}

    def log(run) -> None:
        run.define_metric("train/global_step")
        run.define_metric("*", step_metric="train/global_step", step_sync=True)
        for step in range(1, steps + 1):
            loss = {5: math.nan, 6: math.inf}.get(step, 2.0 / step)
            row = {"train/loss": loss, "train/learning_rate": 1e-3 * step, "train/grad_norm": 0.5 + step,
                   "train/epoch": step / 10, "train/global_step": step}
            run.log(row)
            oracle[("train", "loss", None)].append((step, loss))
            oracle[("train", "lr", "group0")].append((step, 1e-3 * step))
            oracle[("train", "grad_norm", None)].append((step, 0.5 + step))
            if step % eval_every == 0:
                run.log({"eval/loss": 1.0 / step, "train/global_step": step})
                oracle[("val", "loss", None)].append((step, 1.0 / step))
        run.summary["eval/best_accuracy"] = 0.875

    return log, oracle


def same(actual, expected) -> bool:
    return len(actual) == len(expected) and all(
        a[0] == e[0] and (a[1] == e[1] or (math.isnan(a[1]) and math.isnan(e[1]))) for a, e in zip(actual, expected))


def series_points(store_root: Path, run_id: str, split: str, name: str, layer: str | None = None) -> list:
    frame = imported_series(store_root, run_id, split, name, layer)
    return list(zip(frame["step"].tolist(), frame["value"].tolist()))


HF_MODEL_CONFIG = {"architectures": ["BertForSequenceClassification"], "model_type": "bert", "num_hidden_layers": 2,
                   "num_attention_heads": 2, "id2label": {"0": "neg", "1": "pos"},
                   "learning_rate": 1e-3, "optim": "adamw_torch", "weight_decay": 0.0, "adam_beta1": 0.9,
                   "adam_beta2": 0.999, "adam_epsilon": 1e-8}


def test_every_point_of_an_hf_style_run_with_its_step_metric_config_and_task(tmp_path, store_root):
    log, oracle = hf_style(steps=30, eval_every=10)
    run_folder = offline_run(tmp_path, log, config=HF_MODEL_CONFIG)
    [result] = import_source("wandb", store_root, run_folder)
    for key, expected in oracle.items():
        assert same(series_points(store_root, result.run_id, *key), expected), key
    epochs = imported_series(store_root, result.run_id, "train", "loss")["epoch"].tolist()
    assert epochs == [step / 10 for step in range(1, 31)]
    # A value only in the summary is kept at the last step, out of the curves.
    assert series_points(store_root, result.run_id, "user", "eval/best_accuracy") == [(30, 0.875)]
    assert result.rows == 30 * 3 + 3 + 1  # train/global_step is the step, train/epoch the epoch column
    meta = Store(store_root).run_meta(result.run_id)
    assert meta["config"]["id2label"] == {"0": "neg", "1": "pos"} and meta["config"]["optim"] == "adamw_torch"
    assert meta["task"] == {"kind": "classification", "num_classes": 2, "class_names": ["neg", "pos"]}
    assert meta["env"]["optimizer"]["type"] == "AdamW"
    assert meta["source"]["step_metric"] == "train/global_step"
    assert meta["source"]["wandb"]["project"] == "traindoctor-test"
    nan_loss = Store(store_root).events([result.run_id])
    assert nan_loss["kind"].tolist() == ["nan_loss"] and nan_loss["step"].tolist() == [5]


def test_watch_histograms_become_per_layer_norms_close_to_the_true_norms(tmp_path, store_root):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    true_grad: dict[str, list] = {}
    true_weight: dict[str, list] = {}

    def log(run) -> None:
        # wandb.watch's hooks add histograms to the row being built; run.log() without step= commits
        # that row (W&B's _step 0, 1, …), the usual loop.
        run.watch(model, log="all", log_freq=1, idx=0)
        for _ in range(5):
            optimizer.zero_grad()
            loss = model(torch.randn(32, 8)).pow(2).mean()
            loss.backward()
            for name, parameter in model.named_parameters():  # the oracle: each tensor's own 2-norm
                true_grad.setdefault(name, []).append(parameter.grad.norm().item())
                true_weight.setdefault(name, []).append(parameter.detach().norm().item())
            optimizer.step()
            run.log({"loss": loss.item()})
        run.unwatch(model)

    [result] = import_source("wandb", store_root, offline_run(tmp_path, log))
    for name in true_grad:
        grads = imported_series(store_root, result.run_id, "train", "grad_norm", name)
        assert grads["step"].tolist() == [0, 1, 2, 3, 4]
        # Bin midpoints: within the bound the importer checks, and in practice within a few per cent.
        np.testing.assert_allclose(grads["value"], true_grad[name], rtol=0.05)
        weights = imported_series(store_root, result.run_id, "train", "weight_norm", name)
        assert len(weights) == 5 and np.all(np.isfinite(weights["value"]))
    assert any("per-layer norms from W&B histograms" in note
               for note in Store(store_root).run_meta(result.run_id)["source"]["notes"])


@pytest.mark.parametrize("counts, edges, expected", [
    ([4], [0.5, 0.5], 1.0),  # W&B's one-bin form for a constant tensor: exact
    ([0, 0], [-1.0, 0.0, 1.0], 0.0),
    ([1, 1], [-1.0, 0.0, 1.0], None),  # a value anywhere in [-1, 1]: no norm can be claimed
    ([2], [0.0], None),  # malformed: edges must be one more than counts
], ids=["constant", "empty", "too-coarse", "malformed"])
def test_histogram_norm(counts, edges, expected):
    assert histogram_norm(counts, edges) == expected


def test_histogram_norm_is_within_its_bounds_for_a_gaussian():
    values = np.random.default_rng(0).normal(size=10_000)
    counts, edges = np.histogram(values, bins=64)
    norm = histogram_norm(counts.tolist(), edges.tolist())
    assert norm == pytest.approx(np.linalg.norm(values), rel=0.02)
    assert NORM_BOUND_FACTOR >= 1.0


def test_coarse_and_foreign_histograms_are_skipped_with_a_note(tmp_path, store_root):
    def log(run) -> None:
        coarse = wandb.Histogram(np_histogram=([5, 5], [-4.0, 0.0, 4.0]))
        run.log({"loss": 1.0, "gradients/fc.weight": coarse, "activations/fc": wandb.Histogram([0.1, 0.2, 0.3])}, step=1)
        run.log({"loss": 0.5}, step=2)

    [result] = import_source("wandb", store_root, offline_run(tmp_path, log))
    assert set(Store(store_root).scalars([result.run_id])["name"]) == {"loss"}
    notes = Store(store_root).run_meta(result.run_id)["source"]["notes"]
    assert "skipped 1 histogram too coarse for a norm: gradients" in notes
    assert "skipped 1 histogram: activations" in notes


def test_a_wandb_folder_of_runs_imports_each_once_and_a_corrupt_block_is_skipped(tmp_path, store_root):
    def plain(run) -> None:  # no step metric: W&B's own _step, from 0
        for index in range(40):
            run.log({"loss": 1.0 / (index + 1), "nested": {"acc": index / 40}})

    def lightning(run) -> None:  # Lightning's WandbLogger: trainer/global_step counts steps before the batch
        run.define_metric("trainer/global_step")
        run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
        for index in range(3):
            run.log({"train_loss": 3.0 - index, "epoch": 0, "trainer/global_step": index})

    project = tmp_path / "project"
    offline_run(project / "a", plain)
    offline_run(project / "b", lightning)
    for child in (project / "b" / "wandb").iterdir():
        if child.name.startswith("offline-run-"):
            shutil.move(str(child), project / "a" / "wandb" / child.name)
    results = import_source("wandb", store_root, project / "a")  # the project folder holding wandb/
    assert len(results) == 2  # latest-run is a link, not a third run
    by_logger = {Store(store_root).run_meta(r.run_id)["source"]["step_metric"]: r for r in results}
    plain_run, lightning_run = by_logger["_step"], by_logger["trainer/global_step"]
    assert series_points(store_root, plain_run.run_id, "train", "loss") == [(i, 1.0 / (i + 1)) for i in range(40)]
    assert series_points(store_root, plain_run.run_id, "user", "nested/acc") == [(i, i / 40) for i in range(40)]
    assert series_points(store_root, lightning_run.run_id, "train", "loss") == [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert all(r.skipped for r in import_source("wandb", store_root, project / "a" / "wandb"))

    log = Path(Store(store_root).run_meta(plain_run.run_id)["source"]["files"][0])
    broken = tmp_path / "broken" / "offline-run-x"
    broken.mkdir(parents=True)
    data = bytearray(Path(log).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "run-x.wandb").write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="corrupt or incomplete"):
        [damaged] = import_source("wandb", tmp_path / "store2", broken)
    assert 0 < damaged.rows


def test_config_yaml_and_summary_json_of_an_online_run_are_read(tmp_path, store_root):
    run_folder = offline_run(tmp_path, lambda run: run.log({"loss": 1.0}, step=1), config={"lr": 0.1},
                             name="résumé lr=0.1 ✓")
    # An online run keeps these next to its log (written by W&B's uploader; written here in its format).
    (run_folder / "files").mkdir(exist_ok=True)
    (run_folder / "files" / "config.yaml").write_text(
        "_wandb:\n  value:\n    cli_version: 0.31.0\nlr:\n  value: 0.2\nbatch_size:\n  desc: null\n  value: 64\n")
    (run_folder / "files" / "wandb-summary.json").write_text('{"loss": 1.0, "best_f1": 0.5, "_runtime": 3}')
    [result] = import_source("wandb", store_root, run_folder)
    meta = Store(store_root).run_meta(result.run_id)
    assert meta["config"] == {"lr": 0.2, "batch_size": 64}
    assert series_points(store_root, result.run_id, "user", "best_f1") == [(1, 0.5)]
    # Named as wandb.init(name=...) named it, unless --run is given; it was named after its folder
    # (offline-run-20261130_084106-b9gtil7b), while the W&B UI and `import mlflow` show the run's own name.
    assert result.name == "résumé lr=0.1 ✓" == meta["name"]
    [given] = import_source("wandb", tmp_path / "store2", run_folder, run_name="mine")
    assert given.name == "mine" == Store(tmp_path / "store2").run_meta(given.run_id)["name"]


@pytest.mark.parametrize("file, content, message", [
    (None, b"", "no W&B run folders"),
    ("run-x.wandb", b"not a log", "is not a W&B transaction log"),
    ("notes.txt", b"x", "is not a W&B transaction log"),
], ids=["empty-folder", "not-a-log", "not-a-wandb-file"])
def test_bad_input_is_a_one_line_error_and_writes_nothing(tmp_path, store_root, file, content, message):
    folder = tmp_path / "in"
    folder.mkdir()
    if file is not None:
        (folder / file).write_bytes(content)
    with pytest.raises(StoreError, match=message):
        import_source("wandb", store_root, folder if file is None else folder / file)
    assert listing(store_root) == []


def test_without_the_wandb_package_the_error_says_what_to_install(tmp_path, store_root, monkeypatch):
    run_folder = offline_run(tmp_path, lambda run: run.log({"loss": 1.0}, step=1))
    monkeypatch.setitem(sys.modules, "wandb.proto", None)
    monkeypatch.setitem(sys.modules, "wandb.proto.wandb_internal_pb2", None)
    with pytest.raises(StoreError, match=r"pip install 'traindoctor\[wandb\]'"):
        import_source("wandb", store_root, run_folder)
    assert listing(store_root) == []


@pytest.mark.slow
def test_50000_step_history_arrives_whole(tmp_path, store_root):
    steps = 50_000

    def log(run) -> None:
        for step in range(1, steps + 1):
            run.log({"train/loss": 1.0 / step}, step=step)

    [result] = import_source("wandb", store_root, offline_run(tmp_path, log))
    loss = imported_series(store_root, result.run_id, "train", "loss")
    assert loss["step"].tolist() == list(range(1, steps + 1))
    assert loss["value"].tolist() == [1.0 / step for step in range(1, steps + 1)]
