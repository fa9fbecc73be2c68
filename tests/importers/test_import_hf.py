"""`import hf`: trainer_state.json written by a real HF Trainer on a tiny random model."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from traindoctor.store.errors import StoreError
from traindoctor.store.importers import import_source
from traindoctor.store.reader import Store
from tests.importers.conftest import findings_of, imported_series, listing

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

STEPS_PER_EPOCH = 8
NUM_LABELS = 3


class ToyTokens(torch.utils.data.Dataset):
    """Random token ids; the label is the first token mod 3 (learnable, nothing downloaded)."""

    def __init__(self, size: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 100, (size, 8), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.ids[index], "labels": self.ids[index, 0] % NUM_LABELS}


def accuracy(prediction) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def train(output_dir: Path, *, save_state: bool = False, **arguments) -> "transformers.Trainer":
    """Two epochs of a 1-layer BERT (vocab 100) with eval and a checkpoint at each epoch end."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=NUM_LABELS,
    )
    args = transformers.TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=8, eval_strategy="epoch", save_strategy="epoch",
        save_only_model=True, report_to=[], use_cpu=True, disable_tqdm=True,
        **{"learning_rate": 1e-3, "num_train_epochs": 2, "logging_steps": 2, **arguments},
    )
    trainer = transformers.Trainer(
        model=transformers.BertForSequenceClassification(config), args=args,
        train_dataset=ToyTokens(8 * STEPS_PER_EPOCH, seed=1), eval_dataset=ToyTokens(32, seed=2), compute_metrics=accuracy,
    )
    trainer.train()
    if save_state:
        trainer.save_state()
    return trainer


def test_newest_checkpoint_of_an_output_dir_is_imported(tmp_path, store_root):
    train(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["checkpoint-16", "checkpoint-8"]
    [result] = import_source("hf", store_root, tmp_path / "out")
    assert result.name == "out"
    history = json.loads((tmp_path / "out" / "checkpoint-16" / "trainer_state.json").read_text())["log_history"]
    training = [entry for entry in history if "loss" in entry]
    evaluation = [entry for entry in history if "eval_loss" in entry]

    loss = imported_series(store_root, result.run_id, "train", "loss")
    assert loss["step"].tolist() == [e["step"] for e in training] == list(range(2, 17, 2))
    assert loss["value"].tolist() == [e["loss"] for e in training]
    assert loss["epoch"].tolist() == [e["epoch"] for e in training]
    lr = imported_series(store_root, result.run_id, "train", "lr", "group0")
    assert lr["value"].tolist() == [e["learning_rate"] for e in training]
    grad_norm = imported_series(store_root, result.run_id, "train", "grad_norm")
    assert grad_norm["value"].tolist() == [e["grad_norm"] for e in training]
    val_loss = imported_series(store_root, result.run_id, "val", "loss")
    assert val_loss["step"].tolist() == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert val_loss["value"].tolist() == [e["eval_loss"] for e in evaluation]
    val_accuracy = imported_series(store_root, result.run_id, "val", "accuracy")
    assert val_accuracy["value"].tolist() == [e["eval_accuracy"] for e in evaluation]

    meta = Store(store_root).run_meta(result.run_id)
    assert meta["task"] == {"kind": "classification", "num_classes": NUM_LABELS, "class_names": ["LABEL_0", "LABEL_1", "LABEL_2"]}
    assert meta["env"]["model"] == {"type": "BertForSequenceClassification", "num_layers": 1, "has_attention": True}
    assert meta["config"]["train_batch_size"] == 8 and meta["config"]["max_steps"] == 16
    assert meta["source"]["state_file"].endswith("checkpoint-16/trainer_state.json")


def test_top_level_state_summary_stays_off_the_loss_curve(tmp_path, store_root):
    train(tmp_path / "out", save_state=True)
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    [summary] = [entry for entry in state["log_history"] if "train_runtime" in entry]
    [result] = import_source("hf", store_root, tmp_path / "out")
    loss = imported_series(store_root, result.run_id, "train", "loss")
    assert len(loss) == 8 and summary["train_loss"] not in loss["value"].tolist()
    mean = imported_series(store_root, result.run_id, "user", "train_loss")
    assert mean["value"].tolist() == [summary["train_loss"]]
    assert mean["step"].tolist() == [summary["step"]]


def test_training_args_come_from_json_and_the_pickle_is_never_loaded(tmp_path, store_root):
    trainer = train(tmp_path / "out")
    checkpoint = tmp_path / "out" / "checkpoint-16"
    (checkpoint / "training_args.json").write_text(trainer.args.to_json_string())
    marker = tmp_path / "unpickled"

    class Trap:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (checkpoint / "training_args.bin").write_bytes(pickle.dumps(Trap()))
    [result] = import_source("hf", store_root, checkpoint)
    assert not marker.exists()
    meta = Store(store_root).run_meta(result.run_id)
    assert meta["config"]["learning_rate"] == 1e-3 and meta["config"]["per_device_train_batch_size"] == 8
    assert meta["env"]["optimizer"]["type"] == "AdamW"
    assert meta["env"]["optimizer"]["param_groups"][0]["lr"] == 1e-3
    assert "training_args.bin not read: it is a pickle" in meta["source"]["notes"]


@pytest.mark.parametrize(("text", "reason"), [
    ('[{"loss": 1.0}]', "(no log_history)"),
    ('{"global_step": 3}', "(no log_history)"),
    ('{"log_history": [{"loss": 1.0}]}', "(log_history entry 0 has no step)"),
    ('{"log_history": [', "(invalid JSON: "),
], ids=["a-list", "no-log-history", "entry-without-step", "truncated-json"])
def test_json_that_is_not_a_trainer_state_is_a_one_line_error(tmp_path, store_root, text, reason):
    (tmp_path / "good.csv").write_text("step,split,name,value\n1,train,loss,1\n")
    import_source("csv", store_root, tmp_path / "good.csv")
    before = listing(store_root)
    state = tmp_path / "trainer_state.json"
    state.write_text(text)
    with pytest.raises(StoreError) as error:
        import_source("hf", store_root, state)
    assert str(error.value).startswith(f"{state} is not a trainer_state.json {reason}")
    assert "\n" not in str(error.value)
    assert listing(store_root) == before


def test_folder_without_a_state_is_an_error(tmp_path, store_root):
    (tmp_path / "out" / "checkpoint-3").mkdir(parents=True)
    with pytest.raises(StoreError, match="^no trainer_state.json in .*out or its checkpoint-\\* folders$"):
        import_source("hf", store_root, tmp_path / "out")


def test_too_high_lr_run_is_diagnosed_as_divergence(tmp_path, store_root):
    # Warmup to a far too high lr: a normal start, then the loss climbs and stays up.
    train(tmp_path / "out", learning_rate=50.0, optim="sgd", lr_scheduler_type="constant_with_warmup",
          warmup_steps=10, max_grad_norm=0.0, num_train_epochs=5, logging_steps=1)
    [result] = import_source("hf", store_root, tmp_path / "out", num_classes=NUM_LABELS)
    loss = imported_series(store_root, result.run_id, "train", "loss")
    final = loss["value"].iloc[-1]
    assert not np.isfinite(final) or final > 10 * math.log(NUM_LABELS)  # the run really diverged
    assert "divergence" in {finding.rule for finding in findings_of(store_root, result.run_id)}


def test_a_broken_side_file_stops_the_import_and_says_how_to_go_without_it(tmp_path, store_root):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "trainer_state.json").write_text('{"log_history": [{"loss": 2.0, "step": 1, "epoch": 0.5}]}')
    (tmp_path / "out" / "config.json").write_text("{not json")
    with pytest.raises(StoreError, match="config.json is not a config.json .*; move config.json aside to import without it$"):
        import_source("hf", store_root, tmp_path / "out")
    assert listing(store_root) == []
    (tmp_path / "out" / "config.json").rename(tmp_path / "config.json.broken")
    [result] = import_source("hf", store_root, tmp_path / "out")
    assert result.rows == 1
    meta = Store(store_root).run_meta(result.run_id)
    assert "model" not in meta["env"] and meta["source"]["notes"] == []
