"""The CLI as an attacker sees it: names that try to drive the terminal, and a
dashboard server that must not outlive `traindoctor ui`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from traindoctor.cli import main, terminal_text
from traindoctor.dashboard.serve import wait_until_healthy
from traindoctor.store.segments import RunWriter

# Escape sequences a name could carry: clear screen, an OSC 52 clipboard write,
# a bell, a C1 CSI, a carriage return that overwrites the line before it.
HOSTILE = "\x1b[2J\x1b]52;c;ZXZpbA==\x07\x9b31m\rrun"


@pytest.mark.parametrize(("text", "shown"), [
    ("plain name", "plain name"),
    ("a\nb\tc", "a\nb\tc"),
    ("\x1b[2J", "\\x1b[2J"),
    ("\x9b", "\\x9b"),
    ("\r", "\\x0d"),
    ("\x00", "\\x00"),
], ids=["plain", "newline-and-tab-kept", "escape", "c1-csi", "carriage-return", "nul"])
def test_terminal_text_escapes_control_characters(text, shown):
    assert terminal_text(text) == shown


def _hostile_run(store):
    writer = RunWriter(store, name=HOSTILE, config={"lr\x1b[31m": 0.1}, background=False)
    for step in range(1, 30):
        writer.add_scalars(step=step, name="loss", value=float("nan") if step > 20 else 2.0 / step)
    writer.close()
    return writer.run_id


@pytest.mark.parametrize("command", [["runs"], ["diagnose", "RUN"]], ids=["runs", "diagnose"])
def test_escape_sequences_in_names_print_as_text(tmp_path, capsys, command):
    run_id = _hostile_run(tmp_path)
    argv = [run_id if arg == "RUN" else arg for arg in command] + ["--store", str(tmp_path)]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "\\x1b[2J" in out, out
    for raw in ("\x1b", "\x07", "\x9b", "\r"):
        assert raw not in out + err


def _free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1):
            return True
    except OSError:
        return False


def _gone_within(port: int, deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if not _answers(port):
            return True
        time.sleep(0.3)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGKILL],
                         ids=["term", "hup", "int", "kill"])
def test_ui_stopped_by_a_signal_leaves_no_server_behind(tmp_path, signum):
    """Regression: SIGTERM ended `traindoctor ui` and left its Streamlit child serving the store."""
    port = _free_port()
    log = tmp_path / "ui.log"
    (tmp_path / "store").mkdir()
    with open(log, "wb") as output:
        ui = subprocess.Popen([sys.executable, "-m", "traindoctor", "ui", "--store", str(tmp_path / "store"),
                               "--port", str(port)], stdout=output, stderr=subprocess.STDOUT,
                              # SIGINT as a shell gives it (a runner may start its workers with it ignored).
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert wait_until_healthy("127.0.0.1", port, 120, ui), "the dashboard did not start"
        os.kill(ui.pid, signum)
        try:
            # The server gets 10 s to stop before it is killed; a loaded CI machine once took > 30 s here.
            code = ui.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"ui still running 60 s after {signal.Signals(signum).name}: {log.read_text()}")
        if signum != signal.SIGKILL:
            assert code == 128 + signum
        assert _gone_within(port, 30), f"port {port} still answers after {signal.Signals(signum).name}"
    finally:
        if ui.poll() is None:
            ui.kill()
