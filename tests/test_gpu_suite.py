"""benchmarks/gpu_suite.sh: exits at once without CUDA; its summary reads real H200 step logs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
H200_LOGS = ROOT / "tests" / "data" / "gpu_suite_h200"


def test_without_cuda_the_suite_says_so_and_exits_0_in_seconds():
    if shutil.which("nvidia-smi") and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0:
        pytest.skip("a GPU is present")
    start = time.monotonic()
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "nothing measured" in done.stdout
    assert time.monotonic() - start < 30


def _summary(logs: Path) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_suite_summary.py"), str(logs)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_summary_reads_every_row_of_the_h200_logs():
    table = _summary(H200_LOGS)
    assert "no host-device sync on ordinary steps  probe, CUDA" in table and "passed" in table
    assert "gpt2-small-bf16, 124.4M  ratio 1.041 (47.55 vs 49.49 ms/step), +3.7 MiB" in table
    assert "resnet18-bf16, 11.7M     ratio 1.026 (11.10 vs 11.39 ms/step), +44.6 MiB" in table
    assert "46.98 ms/step, ratio 1.025, +1.137 ms" in table  # vs loggers: probe, gpt2-small
    assert "78.26 ms/step, ratio 1.707, +32.417 ms" in table  # vs loggers: tensorboard, gpt2-small


def test_a_step_that_timed_out_shows_as_such(tmp_path):
    for name in ("no_sync", "probe_overhead", "compare_loggers"):
        shutil.copy(H200_LOGS / f"{name}.log", tmp_path)
        (tmp_path / f"{name}.rc").write_text("0\n")
    (tmp_path / "probe_overhead.log").write_text("torch 2.11.0+cu130, threads 4, device NVIDIA H200\n")
    (tmp_path / "probe_overhead.rc").write_text("124\n")
    table = _summary(tmp_path)
    assert "probe overhead (probe_overhead.py)     gpt2, resnet18" in table and "timed out" in table
