"""The traindoctor command: output, exit codes and one-line errors (docs/design.md, "CLI")."""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from traindoctor.cli import main
from traindoctor.store.reader import Store
from traindoctor.store.segments import RunWriter


def make_run(store, name, losses, *, val=None, num_classes=None, status="finished"):
    writer = RunWriter(store, name=name, config={"lr": 0.1}, task={"num_classes": num_classes} if num_classes else None,
                       background=False)
    for step, loss in enumerate(losses, start=1):
        writer.add_scalars(step=step, name="loss", value=loss)
    for step, value in (val or []):
        writer.add_scalars(step=step, name="loss", split="val", value=value)
    writer.close(status)
    return writer.run_id


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_runs_lists_every_run_with_its_steps(tmp_path, capsys):
    make_run(tmp_path, "alpha", [2.0, 1.5, 1.0])
    make_run(tmp_path, "beta", [2.0] * 10)
    code, out, err = run_cli(capsys, "runs", "--store", tmp_path)
    assert code == 0, err
    assert "alpha" in out and "beta" in out
    assert " 10 " in out or out.rstrip().endswith("10") or "10" in out


def test_runs_json_is_parseable(tmp_path, capsys):
    run_id = make_run(tmp_path, "alpha", [2.0, 1.0])
    code, out, _ = run_cli(capsys, "runs", "--store", tmp_path, "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["run_id"] for r in rows] == [run_id]
    assert rows[0]["last_step"] == 2


def test_empty_store_says_so(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, out, _ = run_cli(capsys, "runs", "--store", tmp_path / "empty")
    assert code == 0
    assert "no runs" in out


def test_store_defaults_to_environment_variable(tmp_path, capsys, monkeypatch):
    make_run(tmp_path, "from-env", [1.0])
    monkeypatch.setenv("TRAINDOCTOR_STORE", str(tmp_path))
    code, out, _ = run_cli(capsys, "runs")
    assert code == 0 and "from-env" in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["diagnose", "nope"], "unknown run 'nope'"),
        (["export", "--duckdb", "{tmp}/x.duckdb", "nope"], "unknown run 'nope'"),
        (["import", "csv", "{tmp}/absent.csv"], "absent.csv"),
        (["frobnicate"], "invalid choice"),
        (["diagnose"], "required"),
        (["diagnose", "x", "--fail-on", "panic"], "invalid choice"),
        (["import", "log"], "import log needs a PATH"),
        (["import", "jsonl", "{tmp}/absent.jsonl"], "absent.jsonl"),
        (["import", "csv", "{tmp}/x.csv", "--pattern", "x"], "--pattern does not apply to import csv"),
        (["import", "mlflow", "{tmp}/no-mlruns"], "no MLflow tracking store"),
        (["import", "log", "{tmp}", "--pattern", "(?P<step>"], "is a folder"),
    ],
    ids=["unknown-run", "export-unknown-run", "missing-file", "unknown-command", "missing-argument", "bad-fail-on",
         "log-without-path", "missing-jsonl", "option-of-another-kind", "missing-mlruns", "log-folder"],
)
def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys, argv, fragment):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = run_cli(capsys, *argv, *(["--store", tmp_path] if argv[0] != "frobnicate" else []))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("traindoctor: error:")
    assert fragment in lines[0]


def test_compact_keeps_every_row(tmp_path, capsys):
    writer = RunWriter(tmp_path, name="pieces", background=False)
    for chunk in range(5):
        writer.add_scalars(step=list(range(chunk * 10, chunk * 10 + 10)), name="loss", value=[float(chunk)] * 10)
        writer.flush()
    writer.close()
    before = Store(tmp_path).scalars([writer.run_id]).drop(columns="wall_time")
    code, out, _ = run_cli(capsys, "compact", "--store", tmp_path)
    assert code == 0 and "merged 5 segment files" in out and "compacted 1 of 1 runs" in out
    code, out, _ = run_cli(capsys, "compact", "--store", tmp_path)  # nothing left to merge: not counted again
    assert code == 0 and out.strip() == f"compacted 0 of 1 runs in {tmp_path} (1 had nothing to merge)"
    after = Store(tmp_path).scalars([writer.run_id]).drop(columns="wall_time")
    assert len(list((tmp_path / writer.run_id / "scalars").glob("*.parquet"))) == 1
    keys = ["step", "name", "value"]
    pd.testing.assert_frame_equal(before.sort_values(keys).reset_index(drop=True),
                                  after.sort_values(keys).reset_index(drop=True), check_dtype=False)


def test_export_writes_a_duckdb_file_of_the_chosen_runs(tmp_path, capsys):
    keep = make_run(tmp_path, "keep", [3.0, float("nan"), float("inf")])
    make_run(tmp_path, "other", [1.0])
    target = tmp_path / "share.duckdb"
    code, _, err = run_cli(capsys, "export", "--duckdb", target, "keep", "--store", tmp_path)
    assert code == 0, err
    con = duckdb.connect(str(target), read_only=True)
    try:
        values = con.execute("SELECT value FROM scalars WHERE run_id = ? ORDER BY step", [keep]).fetchall()
        names = con.execute("SELECT DISTINCT name FROM runs").fetchall()
    finally:
        con.close()
    assert values[0][0] == 3.0 and math.isnan(values[1][0]) and values[2][0] == math.inf
    assert names == [("keep",)]


def test_import_csv_then_diagnose_json(tmp_path, capsys):
    source = tmp_path / "curve.csv"
    rows = ["step,split,name,value"] + [f"{s},train,loss,{2.3 * 0.999 ** s}" for s in range(1, 201)]
    source.write_text("\n".join(rows) + "\n")
    code, out, err = run_cli(capsys, "import", "csv", source, "--store", tmp_path / "s", "--run", "from-csv")
    assert code == 0, err
    code, out, err = run_cli(capsys, "diagnose", "from-csv", "--store", tmp_path / "s", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert [r["name"] for r in report["runs"]] == ["from-csv"]
    for finding in report["runs"][0]["findings"]:
        assert set(finding) >= {"rule", "severity", "title", "message", "advice", "step_start", "step_end", "evidence", "source"}


def test_import_csv_without_step_column_leaves_store_unchanged(tmp_path, capsys):
    source = tmp_path / "bad.csv"
    source.write_text("split,name,value\ntrain,loss,1.0\n")
    store = tmp_path / "s"
    make_run(store, "existing", [1.0])
    before = sorted(p.name for p in store.iterdir())
    code, _, err = run_cli(capsys, "import", "csv", source, "--store", store)
    assert code == 2
    assert "step" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in store.iterdir()) == before


def test_diagnose_fail_on_exits_1_for_a_diverged_run(tmp_path, capsys):
    losses = [2.3 - 0.01 * s for s in range(100)] + [float("nan")] * 50
    make_run(tmp_path, "diverged", losses)
    code, out, _ = run_cli(capsys, "diagnose", "diverged", "--store", tmp_path, "--fail-on", "warning")
    assert code == 1
    assert "divergence" in out


@pytest.mark.parametrize("cached", [False, True], ids=["computed", "cached"])
def test_a_run_that_recorded_no_step_is_not_given_a_clean_bill(tmp_path, capsys, cached):
    """A loop that never reached probe.step(): 'NOTHING RECORDED', not 'no problem found', and a
    warning for --fail-on once the run ended; a healthy run is still 'no problem found', exit 0."""
    make_run(tmp_path, "empty", [])
    make_run(tmp_path, "fine", [2.3 * 0.99 ** s for s in range(60)])
    if cached:
        run_cli(capsys, "diagnose", "empty", "fine", "--store", tmp_path)
    code, out, _ = run_cli(capsys, "diagnose", "empty", "--store", tmp_path, "--fail-on", "warning")
    assert code == 1 and "NOTHING RECORDED" in out.splitlines()[0] and "no problem found" not in out
    assert run_cli(capsys, "diagnose", "empty", "--store", tmp_path, "--fail-on", "critical")[0] == 0
    [run] = json.loads(run_cli(capsys, "diagnose", "empty", "--store", tmp_path, "--json")[1])["runs"]
    assert run["recorded_nothing"] is True and run["findings"] == []
    code, out, _ = run_cli(capsys, "diagnose", "fine", "--store", tmp_path, "--fail-on", "warning")
    assert code == 0 and "no problem found" in out.splitlines()[0]
    [run] = json.loads(run_cli(capsys, "diagnose", "fine", "--store", tmp_path, "--json")[1])["runs"]
    assert run["recorded_nothing"] is False


def test_a_pasted_log_is_diagnosed_in_two_commands(tmp_path, capsys):
    """The README's example: a nanoGPT log pasted into karpathy/nanoGPT#215 (its loss turns NaN at iter 3010)."""
    paste = Path(__file__).parents[1] / "importers" / "pasted_logs" / "nanogpt_loss_nan.txt"
    code, out, err = run_cli(capsys, "import", "log", paste, "--store", tmp_path / "s", "--run", "paste")
    assert code == 0, err
    assert out.startswith("imported paste")
    code, out, err = run_cli(capsys, "diagnose", "paste", "--store", tmp_path / "s", "--json", "--fail-on", "critical")
    assert code == 1, err
    [run] = json.loads(out)["runs"]
    divergence = [f for f in run["findings"] if f["rule"] == "divergence"]
    assert divergence and divergence[0]["severity"] == "critical" and divergence[0]["step_start"] == 3010
    code, out, _ = run_cli(capsys, "import", "log", paste, "--store", tmp_path / "s")
    assert code == 0 and out.startswith("already imported")


def test_a_reimport_of_a_changed_source_says_it_replaces_the_earlier_one(tmp_path, capsys):
    # train.log reused by the next training run replaced the imported run under the same id, and the
    # line read as a first import.
    log = tmp_path / "train.log"
    log.write_text("".join(f"iter {s}: loss {3.0 / s:.3f}\n" for s in range(1, 6)))
    code, first, _ = run_cli(capsys, "import", "log", log, "--store", tmp_path / "s", "--no-diagnose")
    assert code == 0 and "replaces" not in first
    log.write_text("".join(f"iter {s}: loss {2.0 / s:.3f}\n" for s in range(1, 8)))
    code, again, _ = run_cli(capsys, "import", "log", log, "--store", tmp_path / "s", "--no-diagnose")
    assert code == 0 and again.split(":")[0] == first.split(":")[0]  # the same run id
    assert again.rstrip().endswith("; it changed since its earlier import, which this replaces"), again


def test_compact_on_a_store_it_cannot_write_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    """As another user, or on a read-only share (chmod means nothing to root, so the refusal is simulated)."""
    make_run(tmp_path, "alpha", [2.0, 1.5, 1.0])
    lock = tmp_path / "alpha" / "scalars" / ".compact.lock"

    def refused(store, run_ids=None):
        raise PermissionError(13, "Permission denied", str(lock))

    monkeypatch.setattr("traindoctor.store.compact.compact_store", refused)
    code, _, err = run_cli(capsys, "compact", "--store", tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"cannot compact {tmp_path}: no permission to write {lock}" in err and "Errno" not in err


def test_no_command_lists_the_commands_and_ends_in_one_error_line(capsys):
    # `traindoctor` alone said only "the following arguments are required: COMMAND".
    assert main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "traindoctor: error: give a COMMAND (listed above)"
    assert all(any(line.strip().startswith(command) for line in err) for command in ("ui", "runs", "diagnose", "import"))


def test_demo_builds_the_bundled_runs_summaries_quietly_before_the_dashboard_reads_them(tmp_path, monkeypatch):
    """Regression: the wheel's sample runs carry no summary.json (a cache git ignores), so every
    `traindoctor demo` started with a RuntimeWarning that its 23 runs were written by an older
    traindoctor."""
    import warnings

    import numpy as np

    import traindoctor.cli as cli

    installed = tmp_path / "site-packages" / "traindoctor" / "sample_store"
    for name in ("healthy", "lr-too-high"):
        writer = RunWriter(installed, name=name, background=False)
        writer.add_scalars(step=np.arange(1, 21), name="loss", value=np.linspace(2.3, 0.5, 20))
        writer.close("finished")
    for summary in installed.glob("*/summary.json"):
        summary.unlink()  # as the wheel ships them
    (installed / ".catalog.json").unlink(missing_ok=True)
    served = {}

    def fake_ui(args, store_path):
        served["summaries"] = sorted(path.parent.name for path in Path(store_path).glob("*/summary.json"))
        return 0

    monkeypatch.setattr(cli, "sample_store_path", lambda: installed)
    monkeypatch.setattr(cli, "command_ui", fake_ui)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["demo", "--port", "8599"]) == 0
    assert [str(w.message) for w in caught] == []
    assert served["summaries"] == sorted(path.parent.name for path in installed.glob("*/run.json"))
    assert list(installed.glob("*/summary.json")) == []  # the installed copy stays as pip wrote it
