"""The Lightning and Hugging Face callbacks, each training a tiny model for real on the CPU."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

from tests.probe.conftest import make_batches, make_model, read_run, series


def _loader(batches):
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=len(batches[0][1]))


@pytest.mark.slow
def test_lightning_callback_records_a_real_fit(tmp_path):
    lightning = pytest.importorskip("lightning.pytorch")
    from traindoctor.probe.integrations.lightning import ProbeCallback

    class Classifier(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.save_hyperparameters({"lr": 0.05})
            self.net = make_model()
            self.micro_losses = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.micro_losses.append(loss.item())
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self.net(x)
            return {"loss": torch.nn.functional.cross_entropy(logits, y), "logits": logits, "targets": y}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    module = Classifier()
    trainer = lightning.Trainer(
        max_steps=4, accumulate_grad_batches=2, limit_val_batches=2, val_check_interval=4, num_sanity_val_steps=1,
        accelerator="cpu", precision="bf16-mixed", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[ProbeCallback(run="lit", store=tmp_path, num_classes=3, layer_every=2)],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, train_dataloaders=_loader(make_batches(8)), val_dataloaders=_loader(make_batches(2, seed=5)))
    meta, scalars, events, confusion = read_run(tmp_path, "lit")
    assert meta["status"] == "finished" and meta["config"] == {"lr": 0.05}
    assert meta["env"]["amp"] == {"dtype": "bfloat16", "scaler": False}  # seen inside training_step
    pairs = [module.micro_losses[i:i + 2] for i in range(0, 8, 2)]
    assert series(scalars, "loss") == pytest.approx({s + 1: sum(p) / 2 for s, p in enumerate(pairs)}, rel=1e-5)
    assert sorted(series(scalars, "grad_norm")) == [1, 2, 3, 4]
    assert sorted(series(scalars, "lr", layer="group0")) == [1, 2, 3, 4]
    assert set(scalars.loc[scalars["name"] == "update_ratio", "step"]) == {1, 2, 4}
    # val_check_interval counts micro-batches: after batches 4 and 8 = steps 2 and 4; the sanity check is not recorded.
    assert set(series(scalars, "accuracy", split="val")) == {2, 4}
    assert confusion.groupby("step")["count"].sum().to_dict() == {2: 16, 4: 16}
    assert "crash" not in set(events["kind"])


def test_lightning_callback_keeps_the_val_loss_of_outputs_that_are_not_class_scores(tmp_path):
    """A regression module returning {"loss", "logits", "targets"} with float targets: the logits are not
    recorded (one warning) and the validation loss still is, at every validation."""
    lightning = pytest.importorskip("lightning.pytorch")
    from traindoctor.probe.integrations.lightning import ProbeCallback

    class Regressor(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(6, 3)

        def training_step(self, batch, batch_idx):
            return self.net(batch[0]).sum(dim=-1).sub(batch[1].float()).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            outputs = self.net(batch[0])
            targets = batch[1].float() + 0.5
            return {"loss": (outputs.sum(dim=-1) - targets).pow(2).mean(), "logits": outputs, "targets": targets}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    trainer = lightning.Trainer(
        max_steps=4, limit_val_batches=2, val_check_interval=2, num_sanity_val_steps=0, accelerator="cpu",
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ProbeCallback(run="reg", store=tmp_path, task="regression")],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Regressor(), train_dataloaders=_loader(make_batches(4)), val_dataloaders=_loader(make_batches(2, seed=5)))
    ours = [w for w in caught if "validation outputs' logits and targets not recorded" in str(w.message)]
    assert len(ours) == 1
    _, scalars, _, _ = read_run(tmp_path, "reg")
    assert set(series(scalars, "loss", split="val")) == {2, 4}
    assert not set(series(scalars, "accuracy", split="val"))


@pytest.mark.slow
def test_lightning_callback_loss_of_an_epochs_last_partial_accumulation_group(tmp_path):
    # 5 batches an epoch, accumulate_grad_batches=2: steps [b0, b1], [b2, b3] and [b4] alone. Lightning divides
    # every micro-batch loss by 2, even b4's, so its step read half its loss (with 3, a third: a 3x drop every epoch).
    lightning = pytest.importorskip("lightning.pytorch")
    from traindoctor.probe.integrations.lightning import ProbeCallback

    class Classifier(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = make_model()
            self.micro_losses = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.micro_losses.append(loss.item())
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    module = Classifier()
    trainer = lightning.Trainer(
        max_epochs=2, accumulate_grad_batches=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ProbeCallback(run="lit", store=tmp_path, num_classes=3)],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, train_dataloaders=_loader(make_batches(5)))
    _, scalars, _, _ = read_run(tmp_path, "lit")
    groups = [[0, 1], [2, 3], [4], [5, 6], [7, 8], [9]]
    expected = {step + 1: sum(module.micro_losses[i] for i in group) / len(group) for step, group in enumerate(groups)}
    assert series(scalars, "loss") == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_transformers_callback_records_a_real_trainer_run(tmp_path):
    transformers = pytest.importorskip("transformers")
    from traindoctor.probe.integrations.transformers import ProbeCallback

    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    generator = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(0, 40, (8,), generator=generator), "labels": int(i % 3)} for i in range(24)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4, gradient_accumulation_steps=2,
        learning_rate=1e-3, eval_strategy="steps", eval_steps=2, logging_steps=1, report_to=[], save_strategy="no",
        use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )
    callback = ProbeCallback(run="hf", store=tmp_path / "runs", num_classes=3)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows, eval_dataset=rows[:8],
                                   callbacks=[callback])
    micro_losses = []
    model.register_forward_hook(lambda m, a, out: micro_losses.append(out.loss.item()) if m.training else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    meta, scalars, _, _ = read_run(tmp_path / "runs", "hf")
    assert meta["status"] == "finished"
    assert meta["env"]["model"]["has_attention"] is True
    # The arguments set above and the always-kept few, not all ~110 TrainingArguments (#17).
    assert {"max_steps": 4, "gradient_accumulation_steps": 2, "learning_rate": 1e-3, "eval_steps": 2}.items() \
        <= meta["config"].items()
    assert "adam_beta2" not in meta["config"] and "output_dir" not in meta["config"] and len(meta["config"]) < 25
    assert sorted(series(scalars, "loss")) == [1, 2, 3, 4]
    assert sorted(series(scalars, "grad_norm")) == [1, 2, 3, 4]
    assert sorted(series(scalars, "loss", split="val")) == [2, 4]
    # Oracle: the model's own micro-batch losses, averaged per optimizer step (2 micro-batches each).
    pairs = [micro_losses[i:i + 2] for i in range(0, 8, 2)]
    assert series(scalars, "loss") == pytest.approx({s + 1: sum(p) / 2 for s, p in enumerate(pairs)}, rel=1e-5)
    # The lr recorded is the one the optimizer step used, as the Trainer logs it.
    logged_lr = {entry["step"]: entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry}
    assert series(scalars, "lr", layer="group0") == pytest.approx(logged_lr)


@pytest.mark.parametrize("module, extra", [("traindoctor.probe.integrations.lightning", "lightning"),
                                           ("traindoctor.probe.integrations.transformers", "transformers")],
                         ids=["lightning", "transformers"])
def test_missing_framework_gives_an_actionable_error(module, extra):
    code = (
        "import sys; sys.modules['lightning'] = None; sys.modules['lightning.pytorch'] = None; "
        "sys.modules['pytorch_lightning'] = None; sys.modules['transformers'] = None\n"
        f"try:\n    import {module}\nexcept ImportError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert f"pip install 'traindoctor[{extra}]'" in result.stdout, result.stderr


@pytest.mark.slow
def test_transformers_callback_sums_causal_lm_loss_shares_under_accumulation(tmp_path):
    transformers = pytest.importorskip("transformers")
    from traindoctor.probe.integrations.transformers import ProbeCallback

    config = transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=16,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for index in range(16):
        ids = torch.randint(0, 50, (8,), generator=generator)
        labels = ids.clone()
        labels[: index % 4] = -100
        rows.append({"input_ids": ids, "labels": labels})
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, gradient_accumulation_steps=2,
        learning_rate=1e-3, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows,
                                   callbacks=[ProbeCallback(run="lm", store=tmp_path / "runs")])
    shares = []
    model.register_forward_hook(lambda m, a, out: shares.append(out.loss.item()) if m.training else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    _, scalars, _, _ = read_run(tmp_path / "runs", "lm")
    # Each micro-batch loss is a share (token sum / tokens in the whole step): the step's loss is their sum,
    # close to ln(50) ≈ 3.9 for an untrained model; their mean would be half that.
    assert series(scalars, "loss") == pytest.approx({1: shares[0] + shares[1], 2: shares[2] + shares[3]}, rel=1e-5)
    assert all(3.0 < value < 4.5 for value in series(scalars, "loss").values())


def _stop_events(events) -> list[dict]:
    import json

    return [json.loads(detail) for detail in events.loc[events["kind"] == "training_stopped", "detail"]]


@pytest.mark.slow
def test_lightning_callback_stops_the_fit_on_a_critical_live_finding(tmp_path):
    lightning = pytest.importorskip("lightning.pytorch")
    from traindoctor.probe.integrations.lightning import ProbeCallback

    class Diverging(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = make_model()

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            return loss * float("nan") if self.global_step >= 5 else loss  # from step 6 on: NaN

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    callback = ProbeCallback(run="lit-stop", store=tmp_path, num_classes=3, stop_on="critical", flush_every_steps=1,
                             flush_every_s=3600)
    trainer = lightning.Trainer(max_steps=40, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Diverging(), train_dataloaders=_loader(make_batches(40)))
    meta, _, events, _ = read_run(tmp_path, "lit-stop")
    # Three NaN losses (steps 6-8) settle the divergence at the flush of step 8; the fit ends after that step.
    assert trainer.global_step == 8
    assert meta["status"] == "finished"
    stopped = _stop_events(events)
    assert [(entry["by"], entry["finding"]["rule"]) for entry in stopped] == [("lightning", "divergence")]


@pytest.mark.slow
def test_transformers_callback_stops_training_on_a_critical_live_finding(tmp_path):
    transformers = pytest.importorskip("transformers")
    from traindoctor.probe.integrations.transformers import ProbeCallback

    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)

    class BreakWeights(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 5:  # from step 6 on, every loss is NaN
                with torch.no_grad():
                    model.classifier.weight.fill_(float("nan"))

    generator = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(0, 40, (8,), generator=generator), "labels": int(i % 3)} for i in range(64)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=40, per_device_train_batch_size=4, learning_rate=1e-3,
        report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )
    probe_callback = ProbeCallback(run="hf-stop", store=tmp_path / "runs", num_classes=3, stop_on="critical",
                                   flush_every_steps=1, flush_every_s=3600)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows,
                                   callbacks=[BreakWeights(), probe_callback])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    meta, _, events, _ = read_run(tmp_path / "runs", "hf-stop")
    assert trainer.state.global_step == 8
    assert meta["status"] == "finished"
    assert [(entry["by"], entry["finding"]["rule"]) for entry in _stop_events(events)] == [
        ("transformers", "divergence")]


@pytest.mark.parametrize("module", ["lightning", "transformers"])
def test_the_callbacks_refuse_raise_on_stop(module):
    pytest.importorskip("lightning.pytorch" if module == "lightning" else "transformers")
    from importlib import import_module

    callback = import_module(f"traindoctor.probe.integrations.{module}").ProbeCallback
    with pytest.raises(ValueError, match="leave raise_on_stop out"):
        callback(run="x", stop_on="critical", raise_on_stop=True)
