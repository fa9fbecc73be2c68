"""Every hook and callback the probe installs runs under its guard (issue 18, item 11).

Each row makes one hook's work raise: training must go on, that statistic is
turned off with one warning, the others are still recorded; ``strict=True``
raises the error instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import types
import warnings

import pytest
import torch

import traindoctor.probe.statistics
from traindoctor.probe import Probe
from traindoctor.probe.zeroing import ZeroGradCheck
from traindoctor.store.segments import RunWriter
from tests.probe.conftest import make_batches, make_model, read_run, series

STEPS = 4


def _broken(*args, **kwargs):
    raise RuntimeError("injected failure")


# hook kind: (owner, attribute made to raise, scaler, statistic turned off, names still recorded)
HOOKS = {
    "forward_pre_hook_autocast": (torch, "is_autocast_enabled", False, "lint",
                                  {"loss", "grad_norm", "lr", "update_ratio"}),
    "grad_hook": (Probe, "_capture_scale", False, "grad_norm", {"loss", "lr", "update_ratio"}),
    "grad_hook_param_tracking": (Probe, "_params_changed", False, "param_tracking", {"loss", "lr"}),
    "step_pre_hook_lr": (Probe, "_read_lrs", False, "lr", {"loss", "grad_norm", "update_ratio"}),
    "step_pre_hook_weights": (traindoctor.probe.statistics.UpdateTracker, "before_step", False, "layer_stats",
                              {"loss", "grad_norm", "lr"}),
    "step_post_hook": (Probe, "_record_update", False, "layer_stats", {"loss", "grad_norm", "lr"}),
    # The zero_grad check's tensor hook on its witness, at the first backward after each step.
    "witness_tensor_hook": (ZeroGradCheck, "_look", False, "zero_grad_check", {"loss", "grad_norm", "lr", "update_ratio"}),
    "grad_scaler_scale": (Probe, "_record_scale", True, "amp", {"loss", "grad_norm", "lr", "amp_skipped"}),
    "evaluation_first_update": (Probe, "_check_eval_mode", False, "lint", {"loss", "grad_norm", "accuracy"}),
    # The loop's NaN loss makes a nan_loss event at the flush: refused, it must not cost the flush its values.
    "events_at_flush": (RunWriter, "add_event", False, "events", {"loss", "grad_norm", "lr", "accuracy"}),
}
NAN_STEP = 2


def _train(tmp_path, monkeypatch, hook: str, *, strict: bool):
    owner, attribute, use_scaler, _, _ = HOOKS[hook]
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8) if use_scaler else None
    probe = Probe(run=hook, store=tmp_path, layer_every=1, strict=strict, handle_sigterm=False)
    with probe:
        probe.watch(model, optimizer, scaler=scaler)
        monkeypatch.setattr(owner, attribute, _broken)  # after watch(): each hook's own work fails
        for x, y in make_batches(STEPS):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad()
            probe.step(loss=float("nan") if probe.step_count + 1 == NAN_STEP else loss)
        model.eval()
        with probe.evaluate("val") as ev, torch.no_grad():
            x, y = make_batches(1, seed=9)[0]
            ev.update(model(x), y)
        monkeypatch.undo()
    return probe


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_a_failing_hook_turns_its_statistic_off_and_training_goes_on(tmp_path, monkeypatch, hook):
    _, _, _, statistic, kept = HOOKS[hook]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probe = _train(tmp_path, monkeypatch, hook, strict=False)
    ours = [str(w.message) for w in caught if "traindoctor probe" in str(w.message)]
    assert len(ours) == 1 and repr(statistic) in ours[0], ours
    assert statistic in probe.disabled
    meta, scalars, _, _ = read_run(tmp_path)
    assert meta["status"] == "finished"
    assert sorted(series(scalars, "loss")) == list(range(1, STEPS + 1))
    assert kept <= set(scalars["name"])


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_a_failing_hook_raises_in_strict_mode(tmp_path, monkeypatch, hook):
    with pytest.raises(RuntimeError, match="injected failure"):
        _train(tmp_path, monkeypatch, hook, strict=True)


def test_a_model_on_the_meta_device_trains_with_the_probe_watching(tmp_path):
    # torch.is_autocast_enabled("meta") raises: the autocast-detecting forward pre-hook must not pass it on.
    with torch.device("meta"):
        model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(RuntimeWarning, match="'lint' failed") as caught:
        with Probe(run="meta", store=tmp_path, handle_sigterm=False) as probe:
            probe.watch(model, optimizer)
            for _ in range(3):
                model(torch.randn(3, 4, device="meta"))
    assert len([w for w in caught if "traindoctor probe" in str(w.message)]) == 1
    assert read_run(tmp_path)[0]["status"] == "finished"


def _trainer(**fields):
    return types.SimpleNamespace(sanity_checking=False, global_step=0, current_epoch=0, **fields)


def test_lightning_callbacks_survive_outputs_they_cannot_read(tmp_path):
    pytest.importorskip("lightning.pytorch")
    from traindoctor.probe.integrations.lightning import ProbeCallback

    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = Probe(run="lit", store=tmp_path, handle_sigterm=False)
    callback = ProbeCallback(probe=probe)
    probe.watch(model, optimizer)
    trainer = _trainer()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step, (x, y) in enumerate(make_batches(STEPS), start=1):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if step == 2:
                # A micro-batch "loss" of another shape cannot be stacked with the step's other one: the
                # step's loss is lost, not the fit.
                callback.on_train_batch_end(trainer, None, {"loss": torch.ones(2)}, None, 0)
            trainer.global_step = step
            callback.on_train_batch_end(trainer, None, {"loss": loss}, None, 0)
        callback.on_validation_epoch_start(trainer, None)
        # Logits for 4 examples, targets for 5: they are left out with one warning, the callback returns,
        # and the validation loss is still recorded.
        callback.on_validation_batch_end(trainer, None, {"logits": torch.zeros(4, 3),
                                                         "targets": torch.zeros(5, dtype=torch.long),
                                                         "loss": torch.tensor(1.5)}, None, 0)
        callback.on_validation_epoch_end(trainer, None)
    probe.close()
    ours = sorted(str(w.message) for w in caught if "traindoctor probe" in str(w.message))
    assert len(ours) == 2 and "'loss'" in ours[0] and "4 predictions but 5 targets" in ours[1], ours
    _, scalars, _, _ = read_run(tmp_path)
    assert sorted(series(scalars, "grad_norm")) == list(range(1, STEPS + 1))
    assert list(series(scalars, "loss", split="val").values()) == [1.5]


def test_transformers_hook_and_callbacks_survive_what_they_cannot_read(tmp_path):
    pytest.importorskip("transformers")
    from traindoctor.probe.integrations.transformers import ProbeCallback

    class Unreadable(dict):
        def get(self, key, default=None):
            raise KeyError("an output that refuses to be read")

    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = Probe(run="hf", store=tmp_path, handle_sigterm=False)
    callback = ProbeCallback(probe=probe)
    probe.watch(model, optimizer)
    state = types.SimpleNamespace(epoch=0.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for x, y in make_batches(STEPS):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            callback._capture_loss(model, (x,), {}, Unreadable(loss=loss))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            callback.on_step_end(None, state, None)
        callback.on_evaluate(None, state, None, metrics={"eval_accuracy": 0.5, "eval_bad\ud800": 1.0,
                                                         "eval_\x1b[2J": 2.0})
    probe.close()
    ours = sorted(str(w.message) for w in caught if "traindoctor probe" in str(w.message))
    assert len(ours) == 3 and "'loss'" in ours[2], ours
    assert all("is not recorded" in message for message in ours[:2])
    _, scalars, _, _ = read_run(tmp_path)
    assert sorted(series(scalars, "grad_norm")) == list(range(1, STEPS + 1))
    assert series(scalars, "accuracy", split="val") == {STEPS: 0.5}


def test_a_failing_publish_in_the_sigterm_handler_still_chains_to_the_previous_handler(tmp_path, monkeypatch):
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        model = make_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        probe = Probe(run="term", store=tmp_path)
        probe.watch(model, optimizer)
        monkeypatch.setattr(probe.writer, "flush", _broken)
        with pytest.warns(RuntimeWarning, match="'flush' failed"):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):  # the handler runs between bytecodes of the main thread
                if received:
                    break
                time.sleep(0.01)
        assert received == [signal.SIGTERM]
        monkeypatch.undo()
        probe.close()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert read_run(tmp_path)[0]["status"] == "crashed"


SIGTERM_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import torch
    from traindoctor.probe import Probe
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = Probe(run="victim", store=sys.argv[1])
    probe.watch(model, optimizer)
    def broken(*args, **kwargs):
        raise OSError("disk gone")
    probe.writer.close = broken
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(10**7):
        pass
    print("still running after SIGTERM", flush=True)
""")


def test_a_failing_close_in_the_sigterm_handler_still_ends_the_process(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SIGTERM_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "runs")], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert result.returncode == -signal.SIGTERM, result.stdout + result.stderr
    assert "still running" not in result.stdout
    assert "'close' failed" in result.stderr
