"""The probe's flushing under faults: a flush that fails, and a store that cannot be written for a while.

Field cases ../shared/cases/reliability/06_failed_flush_rows_dropped.py (the
store's side is tests/store/test_store_faults.py) and
08_meta_device_crashes_training.py (its forward hook:
tests/probe/test_guarded_hooks.py), taken through whole training steps.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from pathlib import Path

import pytest
import torch

from traindoctor.probe import Probe
from tests.probe.conftest import make_batches, make_model, read_run, series

FLUSH_EVERY = 4
DEADLINE_S = 60  # conditions with a generous deadline, not sleeps: a loaded CI machine may stall a thread


def _ours(caught) -> list[str]:
    return [str(w.message) for w in caught if "traindoctor" in str(w.message)]


def _train(probe: Probe, model, optimizer, batches) -> None:
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        probe.step(loss=loss)


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {DEADLINE_S} s"
        time.sleep(0.01)


# ------------------------------------------------------- flushing turned off

def _meta_device_setup(monkeypatch):
    """A model on the meta device: its values cannot be copied out, so the first flush fails."""
    with torch.device("meta"):
        model = torch.nn.Linear(4, 2)
    batches = [(torch.randn(3, 4, device="meta"), torch.zeros(3, dtype=torch.long, device="meta"))] * (4 * FLUSH_EVERY)
    return model, batches, 0


def _failing_write_setup(monkeypatch):
    """A CPU model whose second flush fails in the probe's own writing."""
    calls = []
    original = Probe._write

    def write(self, transfer):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("injected failure")
        return original(self, transfer)

    monkeypatch.setattr(Probe, "_write", write)
    return make_model(inputs=6), make_batches(4 * FLUSH_EVERY), FLUSH_EVERY


FLUSH_OFF = {"meta-device": _meta_device_setup, "failing-write": _failing_write_setup}


@pytest.mark.parametrize("setup", list(FLUSH_OFF.values()), ids=list(FLUSH_OFF))
def test_training_goes_on_past_a_full_buffer_once_flushing_is_off(tmp_path, monkeypatch, setup):
    """Regression: once 'flush' was turned off the buffers were never emptied, and the step after
    the next FLUSH_EVERY raised IndexError in the user's loop (a meta-device model died at step 5)."""
    model, batches, kept = setup(monkeypatch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Probe(run="flush-off", store=tmp_path, flush_every_steps=FLUSH_EVERY, flush_every_s=3600,
                   handle_sigterm=False) as probe:
            probe.watch(model, optimizer)
            for step, (x, y) in enumerate(batches, start=1):
                _train(probe, model, optimizer, [(x, y)])
                probe.log({"user_metric": float(step)})  # logged values must not pile up either
        assert probe.step_count == len(batches)
    assert "flush" in probe.disabled
    assert len([m for m in _ours(caught) if "'flush' failed" in m]) == 1, _ours(caught)
    meta, scalars, _, _ = read_run(tmp_path)
    assert meta["status"] == "finished"
    assert sorted(series(scalars, "loss")) == list(range(1, kept + 1))  # what was written before stays


# ------------------------------------------------- a store that comes back

def _outage(run_dir: Path) -> tuple:
    """A file in place of the run's scalars/ folder (a real fault: every write there fails), and its end."""
    folder = run_dir / "scalars"
    away = run_dir / "scalars.away"

    def start() -> None:
        folder.mkdir(exist_ok=True)
        folder.rename(away)
        folder.write_text("")

    def end() -> None:
        folder.unlink()
        away.rename(folder)

    return start, end


@pytest.mark.parametrize("sigterm", [False, True], ids=["flushes-fail", "sigterm-during-outage"])
def test_steps_recorded_while_the_store_cannot_be_written_arrive_once_it_is_back(tmp_path, sigterm):
    """Regression: the rows of each failed flush were thrown away and the run closed as finished
    with a gap. And a SIGTERM caught by another handler (a framework's graceful shutdown) during
    the outage publishes at once: the store's refusal turned the probe's flushing off, and every
    later step was lost while the writer reported that no rows were lost."""
    steps = 4 * FLUSH_EVERY
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = make_batches(steps)
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Probe(run="outage", store=tmp_path, flush_every_steps=FLUSH_EVERY, flush_every_s=3600,
                       compact_on_close=False) as probe:
                probe.watch(model, optimizer)
                start, end = _outage(probe.writer.run_dir)
                _train(probe, model, optimizer, batches[:FLUSH_EVERY])
                _wait_for(lambda: list((probe.writer.run_dir / "scalars").glob("*.parquet")), "first segment")
                start()
                _train(probe, model, optimizer, batches[FLUSH_EVERY:FLUSH_EVERY + 2])
                if sigterm:
                    signal.raise_signal(signal.SIGTERM)  # the probe publishes, then calls the handler
                    assert received == [signal.SIGTERM]
                _train(probe, model, optimizer, batches[FLUSH_EVERY + 2:2 * FLUSH_EVERY])
                _wait_for(lambda: probe.writer.errors, "a failed flush")
                end()
                _train(probe, model, optimizer, batches[2 * FLUSH_EVERY:])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "flush" not in probe.disabled, _ours(caught)
    assert probe.writer.dropped == []
    meta, scalars, events, _ = read_run(tmp_path)
    assert sorted(series(scalars, "loss")) == list(range(1, steps + 1)), _ours(caught)
    assert meta["status"] == ("crashed" if sigterm else "finished")  # a SIGTERM is recorded as the crash
    assert "rows_dropped" not in set(events["kind"])
    assert [m for m in _ours(caught) if "cannot be written" in m], (_ours(caught), probe.writer.errors)
