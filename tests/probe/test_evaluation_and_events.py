"""Evaluation totals against sklearn, and the events the probe raises."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix

from traindoctor.probe import Probe
from tests.probe.conftest import make_batches, make_model, read_run, series


def _watched(tmp_path, **kwargs):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = Probe(run="eval", store=tmp_path, handle_sigterm=False, **kwargs)
    probe.watch(model, optimizer)
    return probe, model, optimizer


def _train_steps(probe, model, optimizer, count, loss_value=None):
    for x, y in make_batches(count):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        probe.step(loss=loss if loss_value is None else loss_value, epoch=1)


BATCH_SHAPES = {
    "multiclass": lambda g: (torch.randn(10, 4, generator=g), torch.randint(0, 4, (10,), generator=g)),
    "sequence_ignore_index": lambda g: (
        torch.randn(2, 5, 4, generator=g),
        torch.where(torch.rand(2, 5, generator=g) < 0.2, -100, torch.randint(0, 4, (2, 5), generator=g)),
    ),
    "one_hot_targets": lambda g: (
        torch.randn(6, 4, generator=g),
        torch.nn.functional.one_hot(torch.randint(0, 4, (6,), generator=g), 4).float(),
    ),
    "binary": lambda g: (torch.randn(9, generator=g), torch.randint(0, 2, (9,), generator=g).float()),
    # PyTorch's loss layout [N, C, d1, ...] (segmentation), as the README's `ev.update(logits, y, loss=criterion(logits, y))`
    # passes it: read as [..., C] it raised "24 predictions but 30 targets" and ended the training loop.
    "classes_in_dim_1": lambda g: (torch.randn(2, 4, 3, 5, generator=g), torch.randint(0, 4, (2, 3, 5), generator=g)),
    "binary_channel_in_dim_1": lambda g: (torch.randn(2, 1, 3, 5, generator=g),
                                          torch.randint(0, 2, (2, 1, 3, 5), generator=g).float()),
}


@pytest.mark.parametrize("kind", list(BATCH_SHAPES), ids=list(BATCH_SHAPES))
def test_evaluation_matches_sklearn(tmp_path, kind):
    probe, model, optimizer = _watched(tmp_path)
    _train_steps(probe, model, optimizer, 2)
    generator = torch.Generator().manual_seed(3)
    all_true, all_pred, losses, weights = [], [], [], []
    model.eval()
    with probe.evaluate("val") as ev:
        for _ in range(3):
            logits, targets = BATCH_SHAPES[kind](generator)
            loss = torch.rand((), generator=generator)
            ev.update(logits, targets, loss=loss)
            if kind in ("binary", "binary_channel_in_dim_1"):
                true, pred = targets.long(), (logits > 0).long()
            elif kind == "classes_in_dim_1":
                true, pred = targets, logits.argmax(1)
            else:
                true = targets.argmax(-1) if targets.is_floating_point() else targets.reshape(-1)
                pred = logits.reshape(-1, 4).argmax(-1)
            keep = true.reshape(-1) >= 0
            all_true.append(true.reshape(-1)[keep].numpy())
            all_pred.append(pred.reshape(-1)[keep].numpy())
            losses.append(loss.item())
            weights.append(int(keep.sum()))
    probe.close()
    true, pred = np.concatenate(all_true), np.concatenate(all_pred)
    _, scalars, _, confusion = read_run(tmp_path)
    assert series(scalars, "accuracy", split="val") == pytest.approx({2: accuracy_score(true, pred)})
    assert series(scalars, "loss", split="val") == pytest.approx({2: np.average(losses, weights=weights)})
    classes = 2 if kind.startswith("binary") else 4
    expected = confusion_matrix(true, pred, labels=range(classes))
    recorded = np.zeros((classes, classes), dtype=int)
    recorded[confusion["true_class"], confusion["pred_class"]] = confusion["count"]
    np.testing.assert_array_equal(recorded, expected)
    assert set(confusion["step"]) == {2} and set(confusion["split"]) == {"val"}
    assert set(confusion["epoch"]) == {1.0}


def test_one_position_of_class_scores_is_not_read_as_a_binary_channel(tmp_path):
    # [N, 1, C] scores with one-hot targets of that shape and num_classes=C: dim 1 of size 1 is a
    # sequence of length 1 here, not a [N, 1, H, W] binary mask's channel.
    probe, model, optimizer = _watched(tmp_path, num_classes=4)
    _train_steps(probe, model, optimizer, 1)
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(6, 1, 4, generator=generator)
    targets = torch.nn.functional.one_hot(torch.randint(0, 4, (6, 1), generator=generator), 4).float()
    model.eval()
    with probe.evaluate("val") as ev:
        ev.update(logits, targets)
    probe.close()
    _, scalars, _, _ = read_run(tmp_path)
    expected = accuracy_score(targets.argmax(-1).reshape(-1), logits.argmax(-1).reshape(-1))
    assert series(scalars, "accuracy", split="val") == pytest.approx({1: expected})


def test_each_evaluation_is_recorded_at_its_step_with_its_split(tmp_path):
    probe, model, optimizer = _watched(tmp_path, num_classes=3)
    for steps in (3, 2):
        _train_steps(probe, model, optimizer, steps)
        model.eval()
        for split in ("val", "val_ema"):
            with probe.evaluate(split) as ev:
                x, y = make_batches(1, seed=9)[0]
                ev.update(model(x), y, loss=0.5)
        model.train()
    probe.close()
    _, scalars, events, _ = read_run(tmp_path)
    for split in ("val", "val_ema"):
        assert series(scalars, "loss", split=split) == {3: 0.5, 5: 0.5}
    assert "train_mode_during_eval" not in set(events["kind"])


def test_mode_mistakes_raise_events_once_per_stretch(tmp_path):
    probe, model, optimizer = _watched(tmp_path)
    _train_steps(probe, model, optimizer, 2)
    model.eval()  # forgot model.train()
    _train_steps(probe, model, optimizer, 3)
    model.train()
    _train_steps(probe, model, optimizer, 1)
    with probe.evaluate("val") as ev:  # forgot model.eval()
        ev.update(model(torch.randn(4, 6)), torch.zeros(4, dtype=torch.long))
        ev.update(model(torch.randn(4, 6)), torch.zeros(4, dtype=torch.long))
    probe.close()
    _, _, events, _ = read_run(tmp_path)
    assert events.loc[events["kind"] == "eval_mode_during_training", "step"].tolist() == [3]
    assert events.loc[events["kind"] == "train_mode_restored", "step"].tolist() == [6]
    assert events.loc[events["kind"] == "train_mode_during_eval", "step"].tolist() == [6]


@pytest.mark.parametrize("per_micro_batch", [True, False], ids=["per-micro-batch", "per-optimizer-step"])
def test_probe_step_per_micro_batch_is_kept_with_the_run_as_a_recording_problem(tmp_path, capsys, per_micro_batch):
    """Regression: probe.step() called per micro-batch of a 4-step accumulation only warned at run time;
    the run recorded 4 steps per optimizer step and `diagnose` read its loss as falling slowly: lr too low."""
    from traindoctor.cli import main

    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as caught, Probe(run="accumulating", store=tmp_path) as probe:
        warnings.simplefilter("always")
        probe.watch(model, optimizer)
        for index, (x, y) in enumerate(make_batches(12), start=1):
            (torch.nn.functional.cross_entropy(model(x), y) / 4).backward()
            if index % 4 == 0:
                optimizer.step()
                optimizer.zero_grad()
            if per_micro_batch or index % 4 == 0:
                probe.step(loss=torch.tensor(1.0))
    _, _, events, _ = read_run(tmp_path)
    recorded = events.loc[events["kind"] == "step_without_optimizer_step", "step"].tolist()
    warned = [w for w in caught if "without an optimizer.step()" in str(w.message)]
    assert (recorded, len(warned)) == (([1], 1) if per_micro_batch else ([], 0))
    assert main(["diagnose", "accumulating", "--store", str(tmp_path), "--json"]) == 0
    problems = json.loads(capsys.readouterr().out)["runs"][0]["recording_problems"]
    assert [(p["kind"], p["step"]) for p in problems] == [("step_without_optimizer_step", 1)] * per_micro_batch


def test_non_finite_loss_gives_one_event_per_stretch_found_at_flush(tmp_path):
    probe, model, optimizer = _watched(tmp_path, flush_every_steps=4, flush_every_s=3600)
    values = [1.0, float("nan"), float("nan"), 2.0, float("inf"), 1.0, 1.0]
    for value in values:
        _train_steps(probe, model, optimizer, 1, loss_value=torch.tensor(value))
    probe.close()
    _, scalars, events, _ = read_run(tmp_path)
    assert events.loc[events["kind"] == "nan_loss", "step"].tolist() == [2, 5]
    loss = series(scalars, "loss")
    assert np.isnan(loss[2]) and np.isinf(loss[5])  # stored as they are


def test_log_records_tensors_and_numbers_at_the_current_step(tmp_path):
    probe, model, optimizer = _watched(tmp_path)
    _train_steps(probe, model, optimizer, 2)
    accumulator = torch.tensor(0.25)
    probe.log({"grad_noise": accumulator, "throughput": 100})
    accumulator.add_(1.0)  # changed in place after logging: the logged value must not move
    probe.log({"bleu": 0.3}, split="test")
    probe.close()
    _, scalars, _, _ = read_run(tmp_path)
    assert series(scalars, "grad_noise") == {2: 0.25}
    assert series(scalars, "throughput") == {2: 100.0}
    assert series(scalars, "bleu", split="test") == pytest.approx({2: 0.3})


def test_run_json_describes_task_optimizer_and_model(tmp_path):
    probe, model, optimizer = _watched(tmp_path, num_classes=3, class_names=["a", "b", "c"])
    _train_steps(probe, model, optimizer, 1)
    probe.close()
    meta, _, _, _ = read_run(tmp_path)
    assert meta["task"]["num_classes"] == 3 and meta["task"]["class_names"] == ["a", "b", "c"]
    assert meta["task"]["expected_initial_loss"] == pytest.approx(np.log(3))
    assert meta["env"]["optimizer"]["type"] == "SGD"
    assert meta["env"]["optimizer"]["param_groups"][0]["num_params"] == sum(p.numel() for p in model.parameters())
    assert meta["env"]["model"]["has_attention"] is False
    assert meta["env"]["amp"] == {"dtype": None, "scaler": False}
    assert meta["probe_settings"]["layer_every"] == 50


def _lint(events):
    return [json.loads(d) for d in events.loc[events["kind"] == "config_lint", "detail"]]


def test_weight_decay_on_biases_and_norm_weights_is_linted(tmp_path):
    model = make_model()
    decay = [p for n, p in model.named_parameters() if n in ("0.weight", "3.weight")]
    no_decay = [p for n, p in model.named_parameters() if n not in ("0.weight", "3.weight")]
    for groups, expected in [
        ([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], []),
        ([{"params": list(model.parameters()), "weight_decay": 0.1}], ["0.bias", "1.weight", "1.bias", "3.bias"]),
    ]:
        store = tmp_path / str(len(expected))
        with Probe(run="lint", store=store) as probe:
            probe.watch(model, torch.optim.AdamW(groups, lr=1e-3))
        found = [f for f in _lint(read_run(store)[2]) if f["rule"] == "weight_decay_on_norm_and_bias"]
        assert [f["params"] for f in found] == ([expected] if expected else [])


class TinyAttention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.attention(x, x, x)[0].mean(1))


@pytest.mark.parametrize(
    "dtype, scaler, betas, eps, expected",
    [
        (None, False, (0.9, 0.98), 1e-8, set()),
        (None, False, (0.9, 0.999), 1e-8, {"adam_hyperparameters:beta2"}),
        (torch.float16, False, (0.9, 0.98), 1e-6, {"amp_skipped_steps:GradScaler"}),
        (torch.float16, True, (0.9, 0.98), 1e-8, {"adam_hyperparameters:eps"}),
        (torch.bfloat16, False, (0.9, 0.98), 1e-8, set()),
    ],
    ids=["clean", "beta2_on_attention", "fp16_without_scaler", "fp16_tiny_eps", "bf16_fine"],
)
def test_amp_and_adam_lint_at_first_step(tmp_path, dtype, scaler, betas, eps, expected):
    torch.manual_seed(0)
    model = TinyAttention()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=betas, eps=eps)
    grad_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**6) if scaler else None
    with Probe(run="amp", store=tmp_path) as probe:
        probe.watch(model, optimizer, scaler=grad_scaler)
        for _ in range(2):
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss = model(torch.randn(2, 3, 8)).float().pow(2).mean()
            (grad_scaler.scale(loss) if grad_scaler else loss).backward()
            if grad_scaler:
                grad_scaler.step(optimizer)
                grad_scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad()
            probe.step(loss=loss)
    meta, _, events, _ = read_run(tmp_path)
    keys = {"beta2": "beta2", "eps": "eps", "GradScaler": "GradScaler"}
    found = {f"{f['rule']}:{key}" for f in _lint(events) for key in keys if key in f["message"]}
    assert found == expected
    assert meta["env"]["amp"]["dtype"] == (None if dtype is None else str(dtype).replace("torch.", ""))
    assert meta["env"]["model"]["has_attention"] is True


def test_resuming_a_run_continues_its_steps_in_a_new_attempt(tmp_path):
    probe, model, optimizer = _watched(tmp_path)
    _train_steps(probe, model, optimizer, 3)
    probe.close()
    resumed = Probe(run_id=probe.run_id, store=tmp_path, initial_step=2, handle_sigterm=False)
    resumed.watch(model, optimizer)
    _train_steps(resumed, model, optimizer, 2)
    resumed.close()
    meta, scalars, events, _ = read_run(tmp_path)
    assert meta["status"] == "finished"
    loss = scalars[(scalars["name"] == "loss")]
    # The reader lets the newest attempt win where steps overlap (step 3).
    assert sorted(zip(loss["attempt"], loss["step"])) == [(0, 1), (0, 2), (1, 3), (1, 4)]
    assert "resumed" in set(events["kind"])


@pytest.mark.parametrize("given, warned", [("existing", False), ("20261130-000000-mistyped", True)],
                         ids=["existing-id", "mistyped-id"])
def test_resuming_an_id_the_store_does_not_hold_warns(tmp_path, given, warned):
    # Probe(run_id=<typo>, initial_step=N) silently started a second run whose steps began at N + 1.
    probe, model, optimizer = _watched(tmp_path)
    _train_steps(probe, model, optimizer, 2)
    probe.close()
    run_id = probe.run_id if given == "existing" else given
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Probe(run_id=run_id, store=tmp_path, initial_step=2, handle_sigterm=False).close()
    ours = [str(w.message) for w in caught if "is not in store" in str(w.message)]
    assert len(ours) == warned
    assert all(f"run_id {given!r} is not in store" in text and "at step 3" in text for text in ours)


def test_vocabulary_sized_outputs_record_accuracy_without_a_confusion_matrix(tmp_path):
    probe, model, optimizer = _watched(tmp_path)
    _train_steps(probe, model, optimizer, 1)
    logits = torch.randn(2, 6, 5000)
    targets = logits.argmax(-1)
    targets[0, :3] = (targets[0, :3] + 1) % 5000
    with probe.evaluate("val") as ev:
        ev.update(logits, targets)
    probe.close()
    _, scalars, _, confusion = read_run(tmp_path)
    assert series(scalars, "accuracy", split="val") == pytest.approx({1: 9 / 12})
    assert confusion.empty


@pytest.mark.parametrize("kind", ["multi-hot", "soft"])
def test_multi_hot_targets_record_the_loss_but_no_accuracy_or_confusion(tmp_path, kind):
    """Regression: a multi-label model's logits and multi-hot targets (BCEWithLogitsLoss) handed to
    ev.update were read by the argmax of each target row, and a run at micro-F1 0.93 recorded a val
    accuracy of 0.42 against a 'majority class' of 0.78: a critical no_better_than_baseline. Rows that
    do not sum to 1 have no one class: the loss is recorded, accuracy and counts are not, with one
    warning. Soft targets (mixup, label smoothing) sum to 1 and are counted by their argmax."""
    probe, model, optimizer = _watched(tmp_path, num_classes=4)
    _train_steps(probe, model, optimizer, 2)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 4, generator=generator)
    if kind == "multi-hot":
        targets = (torch.rand(12, 4, generator=generator) > 0.5).float()
        targets[0] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # some rows have one label: still a multi-label pass
    else:
        targets = torch.softmax(torch.randn(12, 4, generator=generator) * 3, dim=-1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            with probe.evaluate("val") as ev:
                ev.update(logits, targets, loss=loss)
        probe.close()
    _, scalars, _, confusion = read_run(tmp_path)
    assert series(scalars, "loss", split="val") == pytest.approx({2: float(loss)})
    said = [str(w.message) for w in caught if "multi-label" in str(w.message)]
    if kind == "multi-hot":
        assert series(scalars, "accuracy", split="val") == {} and confusion.empty
        assert len(said) == 1 and "do not sum to 1" in said[0], said
    else:
        expected = float((logits.argmax(-1) == targets.argmax(-1)).float().mean())
        assert series(scalars, "accuracy", split="val") == pytest.approx({2: expected})
        assert int(confusion["count"].sum()) == 2 * 12 and said == []  # both passes counted


def test_finished_run_is_compacted_on_close_and_crashed_run_is_not(tmp_path):
    import torch

    from traindoctor.probe import Probe
    from traindoctor.store.reader import Store

    def train(name, crash):
        model = torch.nn.Linear(4, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        probe = Probe(run=name, store=tmp_path, flush_every_steps=2, handle_sigterm=False)
        probe.watch(model, optimizer)
        for _ in range(7):
            loss = model(torch.randn(8, 4)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            probe.step(loss=loss)
            probe.flush()
            probe.writer.flush()  # one segment per step: something to merge
        probe.close("crashed" if crash else None)
        return probe.writer.run_id

    finished, crashed = train("done", crash=False), train("died", crash=True)
    assert [f.name[:2] for f in (tmp_path / finished / "scalars").glob("*.parquet")] == ["c-"]
    crashed_files = list((tmp_path / crashed / "scalars").glob("*.parquet"))
    assert len(crashed_files) > 1 and not any(f.name.startswith("c-") for f in crashed_files)
    steps = Store(tmp_path).scalars([finished], names=["loss"])["step"].tolist()
    assert steps == list(range(1, 8))
