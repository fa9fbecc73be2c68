"""A target at or above the class count in ``ev.update`` (found by trying the probe as a new user).

It indexed past the confusion buffer: on the CPU an IndexError that turned the
evaluation off for the rest of the run, on a GPU a device-side assert that
ends the training process. Such targets are now left out, like -100.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix

from traindoctor.probe import Probe
from tests.probe.conftest import make_batches, make_model, read_run, series


def _watched(tmp_path, run: str, **settings):
    """A probe on a fresh small model and its SGD optimizer (``settings`` go to Probe)."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = Probe(run=run, store=tmp_path, handle_sigterm=False, **settings)
    probe.watch(model, optimizer)
    return probe, model, optimizer


def _train(probe, model, optimizer, count):
    for x, y in make_batches(count):
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
        probe.step(loss=0.5)


def test_out_of_range_targets_are_left_out_with_one_warning(tmp_path):
    probe, model, optimizer = _watched(tmp_path, "eval", strict=True, num_classes=4)
    _train(probe, model, optimizer, 2)
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(12, 4, generator=generator)
    targets = torch.tensor([0, 1, 2, 3, 4, 7, 1, -100, 2, 4, 3, 0])
    model.eval()
    # Counted on the device, warned about once when the count lands with a flush (no read at ev.update).
    with pytest.warns(RuntimeWarning, match=r"evaluation 'val' at step 2 got 6 target\(s\) at or above the class count"):
        with probe.evaluate("val") as ev:
            ev.update(logits, targets, loss=1.0)
            ev.update(logits, targets, loss=1.0)
        model.train()
        _train(probe, model, optimizer, 1)
        model.eval()
        with probe.evaluate("val") as ev:  # the evaluation was not turned off
            ev.update(logits, targets.clamp(max=3), loss=1.0)
        probe.close()
    keep = (targets >= 0) & (targets < 4)
    true, pred = targets[keep].numpy(), logits.argmax(-1)[keep].numpy()
    _, scalars, _, confusion = read_run(tmp_path)
    accuracy = series(scalars, "accuracy", split="val")
    assert set(accuracy) == {2, 3}
    assert accuracy[2] == pytest.approx(accuracy_score(true, pred))
    first = confusion[confusion["step"] == 2]
    recorded = np.zeros((4, 4), dtype=int)
    recorded[first["true_class"], first["pred_class"]] = first["count"]
    np.testing.assert_array_equal(recorded, 2 * confusion_matrix(true, pred, labels=range(4)))


def test_an_evaluation_named_train_is_refused_at_the_call(tmp_path):
    """``probe.evaluate("train")`` wrote its loss into the training steps' (train, loss) series: two
    values at one step, and the runs table showed the evaluation's loss as the training loss."""
    probe, model, optimizer = _watched(tmp_path, "eval", num_classes=4)
    _train(probe, model, optimizer, 2)
    with pytest.raises(ValueError, match=r"split 'train'.*train_eval"):
        probe.evaluate("train")
    model.eval()
    with probe.evaluate("train_eval") as ev:
        x, y = make_batches(1, seed=4)[0]
        ev.update(model(x), y, loss=1.0)
    probe.close()
    _, scalars, _, _ = read_run(tmp_path)
    assert series(scalars, "loss", split="train_eval") == {2: 1.0}
    assert len(series(scalars, "loss", split="train")) == 2


@pytest.mark.parametrize("targets", [torch.rand(12), torch.rand(12, 3), torch.tensor([0.0, 1.0, 2.0] * 4)],
                         ids=["uniform-floats", "rows-of-the-wrong-width", "float-class-indices"])
def test_float_targets_that_are_not_one_row_of_probabilities_per_example_are_refused_at_the_call(tmp_path, targets):
    """``.long()`` truncated them (torch.rand -> every target class 0) and counted a confusion matrix of nonsense."""
    probe, model, optimizer = _watched(tmp_path, "eval", num_classes=4)
    _train(probe, model, optimizer, 2)
    logits = torch.randn(12, 4)
    with probe.evaluate("val") as ev:
        with pytest.raises(ValueError, match=r"float targets of shape .* for 4-class logits: give class indices"):
            ev.update(logits, targets)
        ev.update(logits, torch.softmax(torch.randn(12, 4), dim=-1), loss=1.0)  # probabilities per row: kept
        ev.update(logits, targets.long() % 4 if targets.dim() == 1 else targets.argmax(-1), loss=1.0)
    probe.close()
    _, scalars, _, _ = read_run(tmp_path)
    assert set(series(scalars, "accuracy", split="val")) == {2}


def test_logits_narrower_than_num_classes_are_warned_about_once(tmp_path):
    """num_classes=6 with a 4-way head: classes 4 and 5 can never be predicted. The shapes are on the host, so the
    probe says so once (no device read), and keeps recording."""
    import warnings

    probe, model, optimizer = _watched(tmp_path, "narrow", strict=True, num_classes=6)
    _train(probe, model, optimizer, 2)
    logits, targets = torch.randn(8, 4), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            with probe.evaluate("val") as ev:
                ev.update(logits, targets, loss=1.0)
            _train(probe, model, optimizer, 1)
        probe.close()
    narrow = [w for w in caught if "got logits for 4 classes but num_classes=6" in str(w.message)]
    assert len(narrow) == 1 and issubclass(narrow[0].category, RuntimeWarning)
    assert narrow[0].filename == __file__  # raised at the user's ev.update, not inside a flush
    _, scalars, _, _ = read_run(tmp_path)
    assert len(series(scalars, "accuracy", split="val")) == 2


def test_logits_as_wide_as_num_classes_raise_no_warning(tmp_path):
    import warnings

    probe, model, optimizer = _watched(tmp_path, "exact", strict=True, num_classes=4)
    _train(probe, model, optimizer, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with probe.evaluate("val") as ev:
            ev.update(torch.randn(8, 4), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]), loss=1.0)
        probe.close()
    assert not [w for w in caught if "num_classes" in str(w.message)]


def test_a_warnings_filter_set_to_error_does_not_stop_the_recording(tmp_path, capsys):
    """Under ``warnings.simplefilter("error")`` (pytest's -W error) a warning raised while a flush writes (targets
    at or above the class count, found when their count lands) became an exception inside the flush, which turned
    recording off: the run was stored as finished with a third of its steps (a new user's break test). The
    message now goes to stderr and every step and evaluation is kept; so does the narrow-logits warning raised at
    ev.update, which would otherwise end the training loop."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe, model, optimizer = _watched(tmp_path, "werror", num_classes=4)
        for _ in range(3):
            _train(probe, model, optimizer, 5)
            model.eval()
            with probe.evaluate("val") as ev:
                ev.update(torch.randn(8, 4), torch.tensor([0, 1, 2, 3, 4, 5, 1, 2]), loss=1.0)
                ev.update(torch.randn(8, 3), torch.tensor([0, 1, 2, 0, 1, 2, 1, 2]), loss=1.0)  # a 3-way head
            model.train()
        probe.close()
    _, scalars, _, confusion = read_run(tmp_path)
    assert len(series(scalars, "loss", split="train")) == 15
    assert len(series(scalars, "accuracy", split="val")) == 3
    assert confusion["step"].nunique() == 3
    err = capsys.readouterr().err
    assert "at or above the class count" in err and "got logits for 3 classes but num_classes=4" in err
