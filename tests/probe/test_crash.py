"""Crashes: an exception or SIGTERM marks the run crashed with a traceback; SIGKILL keeps flushed data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from traindoctor.probe import Probe
from traindoctor.store.reader import Store
from tests.probe.conftest import make_batches, make_model, read_run, series

ROOT = Path(__file__).resolve().parents[2]

TRAIN_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    import torch
    from traindoctor.probe import Probe
    torch.set_num_threads(1)
    torch.manual_seed(0)
    store, mode = sys.argv[1], sys.argv[2]
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)


    def train(probe):
        probe.watch(model, optimizer)
        for step in range(1, 1000):
            loss = model(torch.randn(8, 4)).pow(2).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            probe.step(loss=loss)
            if step == 25:
                if mode.startswith("sigterm"):
                    os.kill(os.getpid(), signal.SIGTERM)
                else:
                    print("ready", flush=True)  # the test waits until steps 1..20 are visible
                    time.sleep(600)

    if mode == "sigterm_without_with":  # as the Lightning/HF callbacks use it
        train(Probe(run="victim", store=store, flush_every_steps=10, flush_every_s=3600))
    else:
        with Probe(run="victim", store=store, flush_every_steps=10, flush_every_s=3600) as probe:
            train(probe)
""")


def _spawn(tmp_path, mode: str) -> subprocess.Popen:
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "runs"), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)


def test_exception_in_with_block_marks_run_crashed_with_traceback(tmp_path):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ZeroDivisionError):
        with Probe(run="boom", store=tmp_path, flush_every_s=3600) as probe:
            probe.watch(model, optimizer)
            for x, y in make_batches(7):
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                probe.step(loss=loss)
            1 / 0
    meta, scalars, events, _ = read_run(tmp_path)
    assert meta["status"] == "crashed"
    crash = events.loc[events["kind"] == "crash", "detail"].tolist()
    assert len(crash) == 1 and "ZeroDivisionError" in crash[0] and "Traceback" in crash[0]
    # At the last optimizer step done: the dashboard and `diagnose` place it on the curves.
    assert events.loc[events["kind"] == "crash", "step"].tolist() == [7]
    assert sorted(series(scalars, "loss")) == list(range(1, 8))  # buffered steps were flushed


@pytest.mark.parametrize("code, status", [(0, "finished"), (None, "finished"), (3, "crashed")])
def test_sys_exit_in_with_block_is_a_crash_only_with_a_failing_code(tmp_path, code, status):
    # sys.exit(0) (a script that stops early on purpose) was recorded as a crash, "SystemExit: 0".
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(SystemExit):
        with Probe(run="exits", store=tmp_path, flush_every_s=3600) as probe:
            probe.watch(model, optimizer)
            for x, y in make_batches(3):
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                probe.step(loss=loss)
            sys.exit(code)
    meta, scalars, events, _ = read_run(tmp_path)
    assert meta["status"] == status
    assert (events["kind"] == "crash").sum() == (status == "crashed")
    assert sorted(series(scalars, "loss")) == [1, 2, 3]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sigterm", "sigterm_without_with"])
def test_sigterm_flushes_marks_crashed_and_ends_the_process(tmp_path, mode):
    process = _spawn(tmp_path, mode)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGTERM, stderr
    meta, scalars, events, _ = read_run(tmp_path / "runs")
    assert meta["status"] == "crashed"
    crash = events.loc[events["kind"] == "crash", "detail"].tolist()
    assert len(crash) == 1 and "SIGTERM" in crash[0] and "train.py" in crash[0]
    assert sorted(series(scalars, "loss")) == list(range(1, 26))


def _wait_for_published_steps(store_dir: Path, count: int, process: subprocess.Popen, timeout_s: float = 120) -> None:
    """Wait (polling, not a fixed sleep) until ``count`` training losses are published.

    The probe hands each flush to a publishing thread; on a loaded machine
    that thread can take seconds.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        if (store_dir / "runs").is_dir() and Store(store_dir / "runs").run_ids():
            _, scalars, _, _ = read_run(store_dir / "runs")
            if len(series(scalars, "loss")) >= count:
                return
        time.sleep(0.05)
    raise AssertionError(f"{count} steps were not published within {timeout_s} s")


@pytest.mark.slow
def test_sigkill_keeps_data_up_to_the_last_flush(tmp_path):
    process = _spawn(tmp_path, "sigkill")
    try:
        assert process.stdout.readline().strip() == "ready"
        _wait_for_published_steps(tmp_path, 20, process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
    meta, scalars, _, _ = read_run(tmp_path / "runs")
    assert meta["status"] == "running"  # nobody closed it; readers call it crashed once the heartbeat is stale
    # flush_every_steps=10: steps 1..20 were flushed, 21..25 were still in the buffer.
    assert sorted(series(scalars, "loss")) == list(range(1, 21))


def test_sigterm_handler_is_restored_on_close(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    probe = Probe(run="handler", store=tmp_path)
    assert signal.getsignal(signal.SIGTERM) != before
    probe.close()
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigterm_chains_to_a_previous_python_handler(tmp_path):
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        model = make_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        with Probe(run="chain", store=tmp_path) as probe:
            probe.watch(model, optimizer)
            optimizer.step()
            probe.step(loss=1.0)
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.monotonic() + 60  # a condition with a generous deadline, not a sleep
            while not received and time.monotonic() < deadline:
                time.sleep(0.01)
        assert received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
    meta, _, events, _ = read_run(tmp_path)
    assert meta["status"] == "crashed"
    assert "SIGTERM" in events.loc[events["kind"] == "crash", "detail"].iloc[0]


UNCLOSED_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from traindoctor.probe import Probe
    torch.set_num_threads(1)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = Probe(run="unclosed", store=sys.argv[1])  # no `with`, and no probe.close()
    probe.watch(model, optimizer)
    for step in range(30):
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        probe.step(loss=float(step))
    if sys.argv[2] == "raise":
        raise ValueError("the script failed after training")
""")


@pytest.mark.slow
@pytest.mark.parametrize("ending, status", [("return", "finished"), ("raise", "crashed")])
def test_a_probe_the_script_never_closed_is_closed_at_exit(tmp_path, ending, status):
    # Without `with` or close(), a short run lost every buffered step (all 30: under 2 s and 256 steps)
    # and stayed 'running' until its heartbeat went stale, then read as crashed.
    script = tmp_path / "train.py"
    script.write_text(UNCLOSED_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "runs"), ending], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert result.returncode == (0 if ending == "return" else 1), result.stderr
    meta, scalars, events, _ = read_run(tmp_path / "runs")
    assert meta["status"] == status
    assert sorted(series(scalars, "loss")) == list(range(1, 31))
    crash = events.loc[events["kind"] == "crash", "detail"].tolist() if len(events) else []
    assert len(crash) == (status == "crashed") and all("the script failed after training" in text for text in crash)
