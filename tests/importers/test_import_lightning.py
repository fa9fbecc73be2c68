"""`import lightning`: a CSVLogger folder written by a real Lightning Trainer."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traindoctor.store.errors import StoreError
from traindoctor.store.importers import import_source
from traindoctor.store.reader import Store
from tests.importers.conftest import findings_of, imported_series, listing

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning")
from lightning.pytorch.callbacks import LearningRateMonitor  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

BATCHES_PER_EPOCH = 8
EPOCHS = 2


class TinyClassifier(L.LightningModule):
    def __init__(self, lr: float = 0.01, hidden: int = 16, optimizer: str = "Adam") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 4))

    def training_step(self, batch, batch_index):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_index):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", torch.nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return getattr(torch.optim, self.hparams.optimizer)(self.parameters(), lr=self.hparams.lr)


def train(save_dir: Path, **hparams) -> Path:
    """Fit TinyClassifier on a 4-class toy task with a CSVLogger; returns the version folder."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16 * BATCHES_PER_EPOCH, 8, generator=generator)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    logger = CSVLogger(str(save_dir))
    trainer = L.Trainer(
        max_epochs=EPOCHS, logger=logger, callbacks=[LearningRateMonitor()], log_every_n_steps=1,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )
    trainer.fit(TinyClassifier(**hparams), loader, loader)
    return Path(logger.log_dir)


def test_metrics_csv_becomes_contract_series(tmp_path, store_root):
    version = train(tmp_path / "logs", lr=0.01, hidden=16)
    [result] = import_source("lightning", store_root, version, num_classes=4)
    assert result.name == "lightning_logs/version_0"
    metrics = pd.read_csv(version / "metrics.csv")

    # Oracle: the CSV itself; Lightning's 0-based step + 1 is the store's optimizer step.
    logged = metrics.dropna(subset=["train_loss_step"])
    loss = imported_series(store_root, result.run_id, "train", "loss")
    assert loss["step"].tolist() == (logged["step"] + 1).tolist() == list(range(1, EPOCHS * BATCHES_PER_EPOCH + 1))
    np.testing.assert_array_equal(loss["value"], logged["train_loss_step"])
    assert loss["epoch"].tolist() == logged["epoch"].tolist()

    # Validation lands on the step that ended each epoch, like the probe's evaluate().
    val = imported_series(store_root, result.run_id, "val", "loss")
    assert val["step"].tolist() == [BATCHES_PER_EPOCH * (e + 1) for e in range(EPOCHS)]
    np.testing.assert_array_equal(val["value"], metrics["val_loss"].dropna())
    accuracy = imported_series(store_root, result.run_id, "val", "accuracy")
    np.testing.assert_array_equal(accuracy["value"], metrics["val_acc"].dropna())
    assert len(imported_series(store_root, result.run_id, "train", "loss_epoch")) == EPOCHS
    lr = imported_series(store_root, result.run_id, "train", "lr", "group0")
    assert set(lr["value"]) == {0.01} and lr["step"].is_unique

    meta = Store(store_root).run_meta(result.run_id)
    assert meta["config"] == {"lr": 0.01, "hidden": 16, "optimizer": "Adam"}
    assert meta["env"]["optimizer"] == {"type": "Adam"}
    assert meta["task"] == {"kind": "classification", "num_classes": 4}


@pytest.mark.parametrize("given", ["version", "metrics", "save_dir"])
def test_version_folder_metrics_file_or_save_dir_name_one_source(tmp_path, store_root, given):
    version = train(tmp_path / "logs")
    path = {"version": version, "metrics": version / "metrics.csv", "save_dir": tmp_path / "logs"}[given]
    [result] = import_source("lightning", store_root, path)
    assert (result.name, result.skipped) == ("lightning_logs/version_0", False)
    [again] = import_source("lightning", store_root, version)
    assert (again.run_id, again.skipped) == (result.run_id, True)


def test_a_csvlogger_name_folder_names_its_versions_as_each_alone(tmp_path, store_root):
    # `import lightning lightning_logs/` named its runs 'version_0', 'version_1': every experiment's
    # first run is a version_0, and the version folder imported alone is 'lightning_logs/version_0'.
    for version in ("version_0", "version_1"):
        (tmp_path / "lightning_logs" / version).mkdir(parents=True)
        (tmp_path / "lightning_logs" / version / "metrics.csv").write_text("epoch,step,train_loss\n0,0,2.3\n0,1,2.1\n")
    results = import_source("lightning", store_root, tmp_path / "lightning_logs")
    assert sorted(r.name for r in results) == ["lightning_logs/version_0", "lightning_logs/version_1"]
    named = import_source("lightning", tmp_path / "store2", tmp_path / "lightning_logs", run_name="sweep")
    assert sorted(r.name for r in named) == ["sweep/version_0", "sweep/version_1"]


def test_csv_without_step_column_is_a_one_line_error_and_store_unchanged(tmp_path, store_root):
    version = train(tmp_path / "logs")
    import_source("lightning", store_root, version)
    before = listing(store_root)
    broken = tmp_path / "broken" / "version_0"
    broken.mkdir(parents=True)
    pd.read_csv(version / "metrics.csv").drop(columns=["step"]).to_csv(broken / "metrics.csv", index=False)
    with pytest.raises(StoreError) as error:
        import_source("lightning", store_root, broken)
    assert str(error.value) == f"missing column 'step' in {broken / 'metrics.csv'}"
    assert listing(store_root) == before


@pytest.mark.parametrize(("text", "message"), [
    ("epoch,step,train_loss\n0,0,1.0\n0,1,oops\n", "column 'train_loss' in {path} has a non-numeric value 'oops'"),
    ("epoch,step,train_loss\n0,0.5,1.0\n", "column 'step' in {path}: step 0.5 is not a whole number"),
    ("epoch,step,train_loss\n0,,1.0\n", "column 'step' in {path}: step nan is not a whole number"),
], ids=["text-metric", "fractional-step", "empty-step"])
def test_malformed_metrics_csv_is_a_one_line_error(tmp_path, store_root, text, message):
    version = tmp_path / "logs" / "version_0"
    version.mkdir(parents=True)
    (version / "metrics.csv").write_text(text)
    with pytest.raises(StoreError) as error:
        import_source("lightning", store_root, version)
    assert str(error.value) == message.format(path=version / "metrics.csv")
    assert listing(store_root) == []


def test_python_tagged_hparams_are_read_without_running_code(tmp_path, store_root):
    version = train(tmp_path / "logs")
    marker = tmp_path / "pwned"
    (version / "hparams.yaml").write_text(f"lr: 0.01\nloss: !!python/object/apply:os.system ['touch {marker}']\n")
    [result] = import_source("lightning", store_root, version)
    assert Store(store_root).run_meta(result.run_id)["config"] == {"lr": 0.01, "loss": [f"touch {marker}"]}
    assert not marker.exists()


def test_too_high_lr_run_is_diagnosed_as_divergence(tmp_path, store_root):
    version = train(tmp_path / "logs", lr=30.0, optimizer="SGD")
    [result] = import_source("lightning", store_root, version, num_classes=4)
    loss = imported_series(store_root, result.run_id, "train", "loss")
    final = loss["value"].iloc[-1]
    assert not np.isfinite(final) or final > 1000 * loss["value"].iloc[0]  # the run really diverged
    assert "divergence" in {finding.rule for finding in findings_of(store_root, result.run_id)}


def test_tensorboard_logger_run_gets_the_same_steps_and_config(tmp_path, store_root):
    from lightning.pytorch.loggers import TensorBoardLogger

    csv_version = train(tmp_path / "csv", lr=0.01)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16 * BATCHES_PER_EPOCH, 8, generator=generator)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    logger = TensorBoardLogger(str(tmp_path / "tb"))
    L.Trainer(max_epochs=EPOCHS, logger=logger, callbacks=[LearningRateMonitor()], log_every_n_steps=1,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              accelerator="cpu").fit(TinyClassifier(lr=0.01), loader, loader)

    [from_csv] = import_source("lightning", store_root, csv_version)
    [from_tb] = import_source("tensorboard", store_root, tmp_path / "tb")
    for split, name, layer in [("train", "loss", None), ("val", "loss", None), ("val", "accuracy", None), ("train", "lr", "group0")]:
        csv_series = imported_series(store_root, from_csv.run_id, split, name, layer)
        tb_series = imported_series(store_root, from_tb.run_id, split, name, layer)
        assert tb_series["step"].tolist() == csv_series["step"].tolist(), (split, name)
        # TensorBoard stores float32; the CSV keeps the float64 repr.
        np.testing.assert_allclose(tb_series["value"], csv_series["value"], rtol=1e-6)
        assert tb_series["epoch"].tolist() == csv_series["epoch"].tolist(), (split, name)
    meta = Store(store_root).run_meta(from_tb.run_id)
    assert meta["config"] == {"lr": 0.01, "hidden": 16, "optimizer": "Adam"}
    assert meta["env"]["optimizer"] == {"type": "Adam"}
