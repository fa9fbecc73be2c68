"""traindoctor watch: a run another process is writing, new findings once, exit codes, notify commands."""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from traindoctor.cli import main
from traindoctor.diagnosis.finding import Finding
from traindoctor.store.reader import Store
from traindoctor.store.segments import RunWriter
from traindoctor.watch import watch

REPO = Path(__file__).resolve().parents[2]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _live_finding(rule="divergence", severity="critical", message="The loss became NaN.") -> str:
    return json.dumps(Finding(rule=rule, severity=severity, title="Training diverged", message=message,
                              advice="Lower the lr.", step_start=31, step_end=40,
                              evidence={"kind": "non_finite", "non_finite_steps": 10}).to_dict())


def make_run(store: Path, name: str, *, steps: int = 60, nan_from: int | None = None, status: str = "finished",
             live: list[tuple[int, str]] = ()) -> str:
    """A run written by a RunWriter: a falling loss (NaN from ``nan_from``), live_finding events, a status."""
    writer = RunWriter(store, name=name, task={"num_classes": 3}, background=False)
    loss = 1.1 * np.exp(-np.arange(steps) / 30) + 0.05
    if nan_from is not None:
        loss[nan_from - 1:] = np.nan
    writer.add_scalars(step=np.arange(1, steps + 1), name="loss", value=loss)
    for step, detail in live:
        writer.add_event("live_finding", detail, step=step)
    if status == "running":
        writer.flush()
        return writer.run_id
    writer.close(status)
    return writer.run_id


def test_a_finished_run_prints_its_findings_once_and_exits_with_diagnose_codes(tmp_path, capsys):
    make_run(tmp_path, "nan", nan_from=31, live=[(40, _live_finding())])
    code, out, err = run_cli(capsys, "watch", "--store", tmp_path, "nan", "--fail-on", "critical", "--interval", "0.01")
    assert code == 1, err
    lines = out.splitlines()
    # The live finding and the diagnosis' divergence are one problem: printed once, from the live event.
    assert [line for line in lines if "divergence" in line and line.startswith("[critical]")] == [
        next(line for line in lines if line.startswith("[critical]"))]
    assert "(live, raised at step 40)" in out
    assert "finished  step 60  loss nan" in out  # not step 30's loss, the last finite one
    code, out, _ = run_cli(capsys, "watch", "--store", tmp_path, "nan", "--interval", "0.01")
    assert code == 0  # no --fail-on: 0, as diagnose


@pytest.mark.parametrize("fail_on, code", [("critical", 1), ("warning", 1), (None, 0)])
def test_a_run_that_crashes_counts_as_critical_as_in_diagnose(tmp_path, capsys, fail_on, code):
    # `watch RUN --fail-on critical` exited 0 when the run crashed with no finding: a CI gate passed a crash.
    make_run(tmp_path, "boom", status="crashed")
    argv = ["watch", "--store", tmp_path, "boom", "--interval", "0.01"] + (["--fail-on", fail_on] if fail_on else [])
    got, out, err = run_cli(capsys, *argv)
    assert got == code, err
    assert "crashed  step 60" in out and "[crashed] boom (" in out and "): the run crashed" in out


def test_a_run_stopped_with_ctrl_c_is_interrupted_and_passes_fail_on(tmp_path, capsys):
    from traindoctor.store.segments import RunWriter

    writer = RunWriter(tmp_path, name="stopped", background=False)
    for step in range(1, 21):
        writer.add_scalars(step=step, name="loss", value=2.0 / step)
    writer.close("crashed", detail="Traceback (most recent call last):\nKeyboardInterrupt\n")
    got, out, err = run_cli(capsys, "watch", "--store", tmp_path, "stopped", "--interval", "0.01", "--fail-on", "critical")
    assert got == 0, err
    assert "[interrupted] stopped (" in out and "stopped by its user" in out and "[crashed]" not in out


def test_no_running_runs_says_so(tmp_path, capsys):
    make_run(tmp_path, "done")
    code, out, _ = run_cli(capsys, "watch", "--store", tmp_path)
    assert code == 0 and "no running runs" in out


@pytest.mark.parametrize("argv, message", [
    (["--notify-command", "'unbalanced"], "cannot be split"),
    (["--notify-command", ""], "is empty"),
    # A typo in the pager command was one warning at the first finding, maybe hours later.
    (["--notify-command", "no-such-pager --to oncall"], "--notify-command: no program 'no-such-pager' on $PATH"),
    (["--notify-command", "/tmp/no/such/notify.sh"], "no program '/tmp/no/such/notify.sh' (not an executable file)"),
    (["--interval", "0"], "--interval must be a positive"),
    (["no-such-run"], "unknown run"),
], ids=["unbalanced-quotes", "empty-command", "no-such-program", "no-such-file", "zero-interval",
        "unknown-run"])
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, argv, message):
    make_run(tmp_path, "done")
    code, out, err = run_cli(capsys, "watch", "--store", tmp_path, *([] if argv[0] == "no-such-run" else ["done"]),
                             *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_the_notify_command_is_checked_before_waiting_for_the_run(tmp_path, capsys):
    # `watch RUN --wait 900 --notify-command CMD` beside a job: a mistyped CMD is known at once.
    started = time.monotonic()
    code, out, err = run_cli(capsys, "watch", "--store", tmp_path / "not-yet", "run", "--wait", "3",
                             "--interval", "0.5", "--notify-command", "no-such-pager")
    assert code == 2 and "no program 'no-such-pager'" in err, err
    assert time.monotonic() - started < 2.5


def _notify_script(tmp_path: Path, exit_code: int = 0) -> tuple[str, Path]:
    received = tmp_path / "received.jsonl"
    script = tmp_path / "notify.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        data = sys.stdin.read()
        with open({str(received)!r}, "a", encoding="utf-8") as out:
            out.write(data.replace("\\n", " ") + "\\n")
        sys.stderr.write("pager said no\\n")
        sys.exit({exit_code})
    """), encoding="utf-8")
    return shlex.join([sys.executable, str(script)]), received


def test_notify_command_receives_each_new_finding_as_json_on_stdin(tmp_path, capsys):
    run_id = make_run(tmp_path / "store", "nan", nan_from=31, live=[(40, _live_finding())])
    command, received = _notify_script(tmp_path)
    code, out, err = run_cli(capsys, "watch", "--store", tmp_path / "store", "nan", "--notify-command", command,
                             "--interval", "0.01")
    assert code == 0 and err == ""
    payloads = [json.loads(line) for line in received.read_text(encoding="utf-8").splitlines()]
    printed = [line for line in out.splitlines() if line.startswith(("[warning]", "[critical]"))]
    assert len(payloads) == len(printed) >= 1
    first = payloads[0]
    assert (first["run_id"], first["name"], first["source"], first["raised_step"]) == (run_id, "nan", "live", 40)
    assert first["finding"]["rule"] == "divergence" and first["finding"]["severity"] == "critical"


def test_a_failing_notify_command_warns_once_and_watching_goes_on(tmp_path, capsys):
    make_run(tmp_path / "store", "nan", nan_from=31, live=[(40, _live_finding()),
                                                           (45, _live_finding("loss_spike", "warning"))])
    command, received = _notify_script(tmp_path, exit_code=3)
    code, out, err = run_cli(capsys, "watch", "--store", tmp_path / "store", "nan", "--notify-command", command,
                             "--interval", "0.01")
    assert code == 0
    assert len(received.read_text(encoding="utf-8").splitlines()) >= 2  # called for every finding all the same
    assert err.count("--notify-command failed") == 1 and "exit status 3: pager said no" in err


def test_a_store_that_stops_answering_for_a_while_does_not_end_the_watch(tmp_path):
    # It exited 2 at the first failed poll: `watch RUN --fail-on critical || scancel $JOB` cancelled the job.
    from traindoctor.store.errors import StoreError

    make_run(tmp_path, "nan", nan_from=31, live=[(40, _live_finding())])

    class Blinking:
        """A store that answers at start (an unreachable one is an error there), fails the first polls, then
        answers again."""

        def __init__(self, store, failures):
            self.store, self.failures, self.calls = store, failures, 0

        def __getattr__(self, name):
            return getattr(self.store, name)

        def run_meta(self, run_id):
            self.calls += 1
            if self.calls > 1 and self.failures:
                self.failures -= 1
                raise StoreError("store s3://team/runs is unreachable: Could not connect to the endpoint URL.")
            return self.store.run_meta(run_id)

    store = Store(tmp_path)
    run_id = store.resolve("nan")
    out, err = io.StringIO(), io.StringIO()
    code = watch(Blinking(store, 3), [run_id], fail_on="critical", interval_s=0.0, out=out, err=err, terminal=False)
    assert code == 1  # the critical finding, once the store answered
    assert "divergence" in out.getvalue()
    assert err.getvalue().splitlines() == [
        "traindoctor watch: store s3://team/runs is unreachable: Could not connect to the endpoint URL; still watching",
        f"traindoctor watch: {tmp_path} answers again"]


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal"])
def test_text_from_the_run_is_escaped_and_the_table_redrawn_only_on_a_terminal(tmp_path, terminal):
    writer = RunWriter(tmp_path, name="odd", task={"num_classes": 3}, background=False)
    writer.add_scalars(step=np.arange(1, 61), name="loss", value=np.linspace(1.1, 0.2, 60))
    writer.add_event("live_finding", _live_finding(message="name \x1b[2J\x1b]52;c;aGk=\x07 here"), step=40)
    writer.flush()
    out = io.StringIO()
    # Two polls: the run is running at the first; it finishes while watch waits for the second.
    code = watch(Store(tmp_path), ["odd"], out=out, err=io.StringIO(), terminal=terminal, interval_s=0.01,
                 sleep=lambda seconds: writer.close("finished"))
    text = out.getvalue()
    assert code == 0 and "name \\x1b[2J\\x1b]52;c;aGk=\\x07 here" in text
    ours = text.replace("\x1b[J", "")
    for up in range(1, 4):
        ours = ours.replace(f"\x1b[{up}F", "")
    assert "\x1b" not in ours and "\x07" not in ours
    assert ("\x1b[J" in text) is terminal


# ------------------------------------------------------ a run another process writes

WRITER = """
import os, sys, time
import torch
from traindoctor import Probe

store, stop_file, flush_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
torch.manual_seed(0)
torch.set_num_threads(1)
model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
with Probe(run="writer", store=store, num_classes=3, flush_every_s=flush_s, flush_every_steps=100_000,
           handle_sigterm=False) as probe:
    probe.watch(model, optimizer)
    step = 0
    started = time.time()
    while not os.path.exists(stop_file) and time.time() - started < 120:
        step += 1
        x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        if step == 150:  # the run breaks: every later loss is NaN
            with torch.no_grad():
                model[0].weight.fill_(float("nan"))
        probe.step(loss=loss)
        time.sleep(0.01)
"""


def _wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.mark.slow
def test_watch_shows_the_finding_of_a_run_another_process_writes_and_exits_1_on_fail_on(tmp_path):
    store, stop_file = tmp_path / "store", tmp_path / "stop"
    flush_s, interval_s = 0.5, 0.5
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)]))}
    (tmp_path / "writer.py").write_text(WRITER, encoding="utf-8")
    writer = subprocess.Popen([sys.executable, str(tmp_path / "writer.py"), str(store), str(stop_file), str(flush_s)],
                              env=environment, stderr=subprocess.PIPE)
    watcher = None
    try:
        _wait_for(lambda: store.is_dir() and Store(store).run_ids(), 120, "the writer's run")
        watcher = subprocess.Popen(
            [sys.executable, "-m", "traindoctor", "watch", "--store", str(store), "--fail-on", "critical",
             "--interval", str(interval_s)], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        lines: list[tuple[float, str]] = []
        reader = threading.Thread(target=lambda: lines.extend((time.time(), line) for line in watcher.stdout),
                                  daemon=True)
        reader.start()
        code = watcher.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        stop_file.touch()
        writer.wait(timeout=120)
        if watcher is not None and watcher.poll() is None:
            watcher.kill()
    assert code == 1, watcher.stderr.read()
    shown = [(at, line) for at, line in lines if line.startswith("[critical]") and " divergence " in line]
    assert shown and "(live, raised at step" in shown[0][1], lines
    # The divergence is settled once the third NaN loss (step 153) is recorded; the probe raises it at its next
    # flush (within flush_s), and the next poll shows it (within interval_s). What comes on top is reading the
    # run and running the rules in the watcher (a second or so on a busy 2-core machine).
    scalars = Store(store).scalars(Store(store).run_ids(), names=["loss"])
    settled_at = float(scalars.loc[scalars["step"] == 153, "wall_time"].iloc[0])
    lag = shown[0][0] - settled_at
    print(f"watch showed the divergence {lag:.2f} s after its third NaN loss (flush {flush_s} s + poll {interval_s} s)")
    assert 0 < lag <= flush_s + interval_s + 3.0
    assert any("running  step" in line for _, line in lines)


def test_wait_lets_a_watch_start_before_its_run_and_store_exist(tmp_path):
    """`watch my-run --wait S --fail-on critical` beside a job that has not begun recording: it waits
    for the store and the run (saying so once), then watches; past the deadline it fails as before."""
    store = tmp_path / "not-yet"
    clock = [0.0]
    said: list[str] = []

    def sleep(seconds: float) -> None:
        clock[0] += seconds
        if clock[0] >= 6 and not store.exists():
            make_run(store, "late")  # the job's probe makes its run while the watch waits

    from traindoctor.cli import CommandError, _open_store, store_root
    from traindoctor.store.errors import UnknownRunError
    from traindoctor.watch import wait_until_watchable

    opened = wait_until_watchable(lambda: _open_store(store_root(str(store))), ["late"], wait_s=60, interval_s=2,
                                  warn=said.append, sleep=sleep, clock=lambda: clock[0])
    assert opened.resolve("late") and 6 <= clock[0] <= 8
    assert len(said) == 1 and "waiting up to 60 s" in said[0] and "store not found" in said[0]
    with pytest.raises(UnknownRunError, match="unknown run 'other'"):
        wait_until_watchable(lambda: _open_store(store_root(str(store))), ["other"], wait_s=5, interval_s=2,
                             warn=said.append, sleep=sleep, clock=lambda: clock[0])
    with pytest.raises(CommandError, match="store not found"):
        wait_until_watchable(lambda: _open_store(store_root(str(tmp_path / "never"))), [], wait_s=0, interval_s=2,
                             warn=said.append, sleep=sleep, clock=lambda: clock[0])


def test_watch_wait_from_the_command_line(tmp_path, capsys):
    make_run(tmp_path, "done")
    code, out, err = run_cli(capsys, "watch", "done", "--store", tmp_path, "--wait", "5")
    assert code == 0 and "waiting" not in err
    code, _, err = run_cli(capsys, "watch", "nope", "--store", tmp_path, "--wait", "0.2", "--interval", "0.1")
    assert code == 2 and "unknown run 'nope'" in err and "waiting up to 0.2 s" in err
    code, _, err = run_cli(capsys, "watch", "done", "--store", tmp_path, "--wait", "-1")
    assert code == 2 and "--wait must be" in err
