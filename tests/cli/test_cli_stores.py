"""Which store a command reads, and what it says when the store, the runs or a run are missing (#17):
"store not found" (exit 2), "no runs" (exit 0) and "unknown run" (exit 2, with close matches) are
three different answers; crashed and running runs say so; ``ui`` checks its port and store before
it prints a URL."""

from __future__ import annotations

import json
import socket
import warnings

import pytest

from traindoctor.store.catalog import default_store_path, did_you_mean
from traindoctor.store.format import DEFAULT_STORE, OLD_DEFAULT_STORE
from traindoctor.store.segments import RunWriter
from tests.cli.test_cli import run_cli


def make_run(store, name, *, status="finished", steps=20):
    writer = RunWriter(store, name=name, background=False)
    for step in range(1, steps + 1):
        writer.add_scalars(step=step, name="loss", value=2.0 / step)
    writer.close(status)
    return writer.run_id


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("traindoctor: error:"), err
    return lines[0]


STORE_COMMANDS = {
    "runs": ["runs"],
    "runs-json": ["runs", "--json"],
    "diagnose": ["diagnose", "some-run"],
    "diagnose-all": ["diagnose", "--all"],
    "ui": ["ui"],
    "watch": ["watch"],
    "export": ["export", "--duckdb", "{tmp}/out.duckdb"],
    "compact": ["compact"],
}


@pytest.mark.parametrize("argv", list(STORE_COMMANDS.values()), ids=list(STORE_COMMANDS))
def test_a_mistyped_store_is_not_found_rather_than_empty(tmp_path, capsys, argv):
    make_run(tmp_path / "store", "some-run")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = run_cli(capsys, *argv, "--store", tmp_path / "stroe")
    assert code == 2
    assert "store not found" in one_error_line(err) and "stroe" in err
    assert out == ""  # ui printed no URL
    assert not (tmp_path / "stroe").exists()


@pytest.mark.parametrize("argv, expected", [
    (["runs"], "no runs in"),
    (["diagnose", "--all"], "no runs in"),
    (["diagnose", "--latest", "3"], "no runs in"),
], ids=["runs", "diagnose-all", "diagnose-latest"])
def test_a_store_without_runs_says_so_and_exits_0(tmp_path, capsys, argv, expected):
    (tmp_path / "empty").mkdir()
    code, out, err = run_cli(capsys, *argv, "--store", tmp_path / "empty")
    assert code == 0, err
    assert expected in out


def test_diagnose_all_json_of_a_store_without_runs_is_an_empty_report(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "diagnose", "--all", "--json", "--store", tmp_path)
    assert code == 0 and json.loads(out) == {"runs": []}


@pytest.mark.parametrize("argv", [["diagnose", "{run}"], ["export", "--duckdb", "{tmp}/x.duckdb", "{run}"],
                                  ["watch", "{run}"]], ids=["diagnose", "export", "watch"])
def test_an_unknown_run_suggests_close_names(tmp_path, capsys, argv):
    make_run(tmp_path, "resnet18-lr0.1")
    make_run(tmp_path, "resnet18-lr0.01")
    make_run(tmp_path, "bert-base")
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{run}", "resnet18-lr0.2") for a in argv]
    code, _, err = run_cli(capsys, *argv, "--store", tmp_path)
    line = one_error_line(err)
    assert code == 2
    assert "unknown run 'resnet18-lr0.2'" in line
    assert "did you mean 'resnet18-lr0.1' or 'resnet18-lr0.01'?" in line or \
        "did you mean 'resnet18-lr0.01' or 'resnet18-lr0.1'?" in line
    assert "bert-base" not in line


@pytest.mark.parametrize("run, rows, expected", [
    ("alpah", [{"name": "alpha", "run_id": "r1"}], "; did you mean 'alpha'?"),
    ("zzz", [{"name": "alpha", "run_id": "r1"}], ""),
    ("20261130-023843-293ed", [{"name": "x", "run_id": "20261130-023843-293edf"}],
     "; did you mean '20261130-023843-293edf'?"),
    ("a", [], ""),
    # An imported Lightning or TensorBoard run is named by its path: the ratio alone (0.55) found nothing.
    ("version_0", [{"name": "lightning_logs/version_0", "run_id": "r1"}, {"name": "version_10x", "run_id": "r2"}],
     "; did you mean 'version_10x' or 'lightning_logs/version_0'?"),
    ("v_0", [{"name": "lightning_logs/v_0", "run_id": "r1"}], "; did you mean 'lightning_logs/v_0'?"),
    ("v0", [{"name": "lightning_logs/v0x", "run_id": "r1"}], ""),
], ids=["name", "nothing-close", "run-id", "empty-store", "part-of-a-path", "short-part", "too-short"])
def test_did_you_mean(run, rows, expected):
    assert did_you_mean(run, rows) == expected


@pytest.mark.parametrize("cached", [False, True], ids=["computed", "from-the-cache"])
def test_a_crashed_run_says_what_it_stopped_on(tmp_path, capsys, cached):
    writer = RunWriter(tmp_path, name="boom", background=False)
    for step in range(1, 21):
        writer.add_scalars(step=step, name="loss", value=2.0 / step)
    writer.close("crashed", detail='Traceback (most recent call last):\n  File "train.py", line 9\n'
                                   "ValueError: targets out of range\n")
    if cached:
        assert run_cli(capsys, "diagnose", "boom", "--store", tmp_path)[0] == 0
    code, out, _ = run_cli(capsys, "diagnose", "boom", "--store", tmp_path)
    assert code == 0 and "it stopped on: ValueError: targets out of range" in out
    report = json.loads(run_cli(capsys, "diagnose", "boom", "--store", tmp_path, "--json")[1])["runs"][0]
    assert report["status"] == "crashed" and report["crash"] == "ValueError: targets out of range"
    make_run(tmp_path, "fine")
    assert json.loads(run_cli(capsys, "diagnose", "fine", "--store", tmp_path, "--json")[1])["runs"][0]["crash"] is None


def test_a_crashed_run_is_reported_and_fails_on_warning(tmp_path, capsys):
    make_run(tmp_path, "crashy", status="crashed")
    code, out, _ = run_cli(capsys, "diagnose", "crashy", "--store", tmp_path, "--fail-on", "warning")
    assert code == 1
    assert "CRASHED" in out
    code, out, _ = run_cli(capsys, "diagnose", "crashy", "--store", tmp_path, "--json", "--fail-on", "critical")
    assert code == 1
    assert json.loads(out)["runs"][0]["status"] == "crashed"
    # Without --fail-on the report of a crashed run still exits 0.
    assert run_cli(capsys, "diagnose", "crashy", "--store", tmp_path)[0] == 0


@pytest.mark.parametrize("cached", [False, True], ids=["computed", "from-the-cache"])
def test_a_run_its_user_stopped_with_ctrl_c_is_interrupted_not_a_critical_crash(tmp_path, capsys, cached):
    """Regression: Ctrl-C in the training loop (KeyboardInterrupt) read 'CRASHED' and made
    `diagnose --fail-on critical` exit 1, so a job script cancelled on that code acted on a run its
    user stopped on purpose. run.json still says crashed (DESIGN.md's statuses)."""
    writer = RunWriter(tmp_path, name="stopped", background=False)
    for step in range(1, 21):
        writer.add_scalars(step=step, name="loss", value=2.0 / step)
    writer.close("crashed", detail='Traceback (most recent call last):\n  File "train.py", line 9\nKeyboardInterrupt\n')
    if cached:
        assert run_cli(capsys, "diagnose", "stopped", "--store", tmp_path)[0] == 0
    code, out, _ = run_cli(capsys, "diagnose", "stopped", "--store", tmp_path, "--fail-on", "critical")
    assert code == 0 and "INTERRUPTED by its user" in out and "CRASHED" not in out, out
    report = json.loads(run_cli(capsys, "diagnose", "stopped", "--store", tmp_path, "--json")[1])["runs"][0]
    assert report["status"] == "crashed" and report["crash"] == "KeyboardInterrupt"


def test_finished_and_running_runs_carry_their_status(tmp_path, capsys):
    make_run(tmp_path, "done")
    running = RunWriter(tmp_path, name="live", background=False)
    for step in range(1, 21):
        running.add_scalars(step=step, name="loss", value=2.0 / step)
    running.flush()
    try:
        code, out, _ = run_cli(capsys, "diagnose", "done", "live", "--store", tmp_path, "--json",
                               "--fail-on", "warning")
        assert code == 0
        assert {run["name"]: run["status"] for run in json.loads(out)["runs"]} == {"done": "finished",
                                                                                   "live": "running"}
        _, out, _ = run_cli(capsys, "diagnose", "live", "--store", tmp_path)
        assert "RUNNING" in out
    finally:
        running.close()


@pytest.mark.parametrize("port", ["0", "99999", "-1", "http"], ids=["zero", "too-big", "negative", "text"])
def test_ui_port_is_validated(tmp_path, capsys, port):
    code, out, err = run_cli(capsys, "ui", "--store", tmp_path, "--port", port)
    assert code == 2 and out == ""
    assert "--port" in one_error_line(err) and "1 to 65535" in err


def test_ui_on_a_busy_port_fails_before_printing_a_url(tmp_path, capsys):
    with socket.socket() as other_server:
        other_server.bind(("127.0.0.1", 0))
        other_server.listen()
        port = other_server.getsockname()[1]
        code, out, err = run_cli(capsys, "ui", "--store", tmp_path, "--port", port)
    assert code == 2
    assert out == ""
    assert f"port {port} is already in use" in one_error_line(err)


def _tensorboard_folder(root):
    run = root / "Nov30_02-36-37_host"
    run.mkdir(parents=True)
    (run / "events.out.tfevents.1764470197.host.1.0").write_bytes(b"\x00" * 16)


@pytest.mark.parametrize("layout, expected", [
    ("nothing", DEFAULT_STORE),
    ("old-store", OLD_DEFAULT_STORE),
    ("old-store-and-new", DEFAULT_STORE),
    ("tensorboard-runs", DEFAULT_STORE),
    ("empty-runs", DEFAULT_STORE),
], ids=["nothing", "old-store", "old-store-and-new", "tensorboard-runs", "empty-runs"])
def test_default_store_reads_the_old_runs_folder_only_when_it_is_ours(tmp_path, monkeypatch, layout, expected):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAINDOCTOR_STORE", raising=False)
    if layout in ("old-store", "old-store-and-new"):
        make_run(tmp_path / OLD_DEFAULT_STORE, "old")
    if layout == "old-store-and-new":
        (tmp_path / DEFAULT_STORE).mkdir()
    if layout == "tensorboard-runs":
        _tensorboard_folder(tmp_path / OLD_DEFAULT_STORE)
    if layout == "empty-runs":
        (tmp_path / OLD_DEFAULT_STORE).mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # TensorBoard's folders are not named in a warning either
        assert str(default_store_path()) == expected
    monkeypatch.setenv("TRAINDOCTOR_STORE", str(tmp_path / "elsewhere"))
    assert default_store_path() == tmp_path / "elsewhere"


def test_the_cli_lists_an_old_runs_store_but_not_tensorboard_logs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAINDOCTOR_STORE", raising=False)
    _tensorboard_folder(tmp_path / OLD_DEFAULT_STORE)
    code, _, err = run_cli(capsys, "runs")
    assert code == 2 and f"store not found: {DEFAULT_STORE}" in one_error_line(err)
    make_run(tmp_path / OLD_DEFAULT_STORE, "kept-from-before")
    code, out, _ = run_cli(capsys, "runs")
    assert code == 0 and "kept-from-before" in out


def test_the_probe_records_into_traindoctor_runs_by_default(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from traindoctor import Probe

    monkeypatch.chdir(tmp_path)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with Probe(run="default-store", num_classes=2, live=False) as probe:
        probe.watch(model, optimizer)
        loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 2, (8,)))
        loss.backward()
        optimizer.step()
        probe.step(loss=loss)
    assert [p.name for p in tmp_path.iterdir()] == [DEFAULT_STORE]


def test_runs_left_in_the_old_default_store_are_mentioned(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAINDOCTOR_STORE", raising=False)
    make_run(tmp_path / OLD_DEFAULT_STORE, "from-before")
    make_run(tmp_path / DEFAULT_STORE, "new")
    code, out, err = run_cli(capsys, "runs")
    assert code == 0 and "new" in out and "from-before" not in out
    assert "pass --store runs to see them" in err
    code, _, err = run_cli(capsys, "runs", "--store", DEFAULT_STORE)
    assert code == 0 and err == ""
