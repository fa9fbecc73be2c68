"""The import rules every importer shares (store/importers/common.py; issue #18).

Bad input is a one-line error (exit 2) that leaves the store as it was;
steps are never truncated or wrapped; a repeated step keeps its last value
in every importer; configs are bounded; names from undecodable paths and
JSON become valid text that listings can print.
"""

from __future__ import annotations

import json
import os
import struct
import time
import warnings
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from traindoctor.cli import main
from traindoctor.store.errors import StoreError
from traindoctor.store.importers import import_source
from traindoctor.store.importers.common import (
    MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH, MAX_CONFIG_VALUES, MAX_YAML_ALIASES, STEP_MAX, ImportInputError, plain_data,
)
from traindoctor.store.reader import Store
from tests.importers.conftest import imported_series

GOOD_CSV = "step,split,name,value\n1,train,loss,2.0\n2,train,loss,1.5\n"
BOMB_YAML = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{level}: &{level} [{', '.join([f'*{previous}'] * 9)}]\n" for previous, level in zip("abcdef", "bcdefg"))


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def restore_showwarning(monkeypatch):
    """main() sends warnings to stderr as one line; put the hook back after each test."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (hidden ones included)."""
    return {os.path.relpath(os.path.join(folder, name), root): Path(folder, name).read_bytes()
            for folder, _, files in os.walk(root) for name in files}


def hf_run(folder: Path, history: list | str, **side_files: dict | str) -> Path:
    """An HF output folder: trainer_state.json with ``history`` (a list, or raw JSON text) and side files."""
    folder.mkdir(parents=True, exist_ok=True)
    text = history if isinstance(history, str) else json.dumps({"log_history": history})
    (folder / "trainer_state.json").write_text(text)
    for name, content in side_files.items():
        (folder / f"{name}.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return folder


def lightning_run(folder: Path, metrics: str, hparams: str | None = None) -> Path:
    """A CSVLogger version folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.csv").write_text(metrics)
    if hparams is not None:
        (folder / "hparams.yaml").write_text(hparams)
    return folder


def tidy_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def tensorboard_run(folder: Path, points: list[tuple[str, int, float]], hparams: str | None = None) -> Path:
    """Event files with one simple_value per (tag, step, value), written by TensorBoard's own writer."""
    pytest.importorskip("tensorboard")
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    folder.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(folder))
    for tag, step, value in points:
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
        writer.add_event(event_pb2.Event(step=step, wall_time=1000.0 + step, summary=summary))
    writer.close()
    if hparams is not None:
        (folder / "hparams.yaml").write_text(hparams)
    return folder


def deep_json(levels: int) -> str:
    return "[" * levels + "]" * levels


def text_file(path: Path, text: str) -> Path:
    """A JSONL file or a terminal log."""
    path.write_text(text)
    return path


def wandb_history(step: int, **values: str) -> bytes:
    """One serialized W&B history record: ``_step`` and each key with its value as JSON text."""
    from wandb.proto import wandb_internal_pb2 as pb

    items = [pb.HistoryItem(key="_step", value_json=str(step))]
    items += [pb.HistoryItem(key=key, value_json=value) for key, value in values.items()]
    return pb.Record(history=pb.HistoryRecord(item=items)).SerializeToString()


def wandb_run(folder: Path, log: bytes | list[bytes], **side_files: str) -> Path:
    """``folder/wandb/offline-run-x`` with ``run-x.wandb``: raw bytes, or records framed as W&B frames them
    (a 7-byte header, then one FULL chunk per record: CRC-32 seeded with its type, length, type), and
    ``files/<name>`` side files."""
    pytest.importorskip("wandb")
    run = folder / "wandb" / "offline-run-x"
    run.mkdir(parents=True)
    if isinstance(log, list):
        framed = bytearray(struct.pack("<4sHB", b":W&B", 0xBEE1, 0))
        for record in log:  # small records: none reaches the end of a 32 KiB block
            framed += struct.pack("<IHB", zlib.crc32(record, zlib.crc32(b"\x01")), len(record), 1) + record
        log = bytes(framed)
    (run / "run-x.wandb").write_bytes(log)
    if side_files:
        (run / "files").mkdir()
        for name, text in side_files.items():
            (run / "files" / name).write_text(text)
    return folder


def mlflow_uri(uri: str) -> str:
    pytest.importorskip("mlflow")
    return uri


JSONL_LOSS = '{"step": 1, "loss": 2.0}\n'


# kind, factory(tmp_path) -> input path, fragment of the one-line error.
BAD_INPUTS: list = [
    pytest.param("csv", lambda t: tidy_csv(t / "x.csv", "step,split,name,value,value\n1,train,loss,1,2\n"),
                 "column 'value' appears more than once in", id="csv-duplicate-value-column"),
    pytest.param("csv", lambda t: tidy_csv(t / "x.csv", f"step,split,name,value\n{2**63},train,loss,1\n"),
                 "column 'step' in", id="csv-step-beyond-int64"),
    pytest.param("csv", lambda t: (t / "x.csv").write_bytes(b"step,split,name,value\n1,tr\xffain,loss,1\n") and t / "x.csv",
                 "unreadable CSV", id="csv-text-not-utf8"),
    pytest.param("hf", lambda t: hf_run(t / "out", [{"step": float("nan"), "loss": 1.0}]),
                 "step nan is not a whole number", id="hf-step-nan"),
    pytest.param("hf", lambda t: hf_run(t / "out", '{"log_history": [{"step": Infinity, "loss": 1.0}]}'),
                 "step inf is not a whole number", id="hf-step-infinity"),
    pytest.param("hf", lambda t: hf_run(t / "out", [{"step": 1e30, "loss": 1.0}]),
                 "step 1e+30 is beyond the store's steps (int64)", id="hf-step-1e30"),
    pytest.param("hf", lambda t: hf_run(t / "out", [{"step": 2**70, "loss": 1.0}]),
                 "is beyond the store's steps (int64)", id="hf-step-beyond-int64"),
    pytest.param("hf", lambda t: hf_run(t / "out", [{"step": 2.5, "loss": 1.0}]),
                 "step 2.5 is not a whole number", id="hf-step-fraction"),
    pytest.param("hf", lambda t: hf_run(t / "out", '{"log_history": [{"step": 1, "loss": 1' + "0" * 5000 + "}]}"),
                 "is not a trainer_state.json (invalid JSON:", id="hf-value-5000-digits"),
    pytest.param("hf", lambda t: hf_run(t / "out", '{"log_history": [], "x": ' + deep_json(100_000) + "}"),
                 "is not a trainer_state.json (nested too deeply)", id="hf-state-nested-100k-deep"),
    pytest.param("hf", lambda t: hf_run(t / "out", [{"step": 1, "loss": 1.0}], config=deep_json(100_000)),
                 "is not a config.json (nested too deeply); move config.json aside", id="hf-config-nested-100k-deep"),
    pytest.param("hf", lambda t: hf_run(t / "out", [{"step": 1, "loss": 1.0}], config={
        "architectures": ["BertForSequenceClassification"], "id2label": {"a": "x", "b": "y"}}),
                 "id2label key 'a' is not a class index 0..1", id="hf-id2label-text-keys"),
    pytest.param("hf", lambda t: hf_run(t / "out", [{"step": 1, "loss": 1.0}], config={
        "architectures": ["BertForSequenceClassification"], "id2label": {"1" + "0" * 5000: "x"}}),
                 "id2label key '1000", id="hf-id2label-huge-key"),
    pytest.param("hf", lambda t: hf_run(t / "out", [{"step": 1, "loss": 1.0}], config={
        "architectures": ["BertForSequenceClassification"], "id2label": {"-1": "x", "0": "y"}}),
                 "id2label key '-1' is not a class index 0..1", id="hf-id2label-negative-key"),
    pytest.param("hf", lambda t: hf_run(t / "out", [{"step": 1, "loss": 1.0}], config='{"num_hidden_layers": 1e400}'),
                 "num_hidden_layers inf is not a layer count", id="hf-layer-count-1e400"),
    pytest.param("hf", lambda t: hf_run(t / "out", [{"step": 1, "loss": 1.0}], config={"n_layer": 2.5}),
                 "n_layer 2.5 is not a layer count", id="hf-layer-count-fraction"),
    pytest.param("hf", lambda t: hf_run(t / "out", [{"step": 1, "loss": 1.0}], training_args="[1, 2]"),
                 "is not a training_args.json (not a JSON object)", id="hf-training-args-not-an-object"),
    pytest.param("lightning", lambda t: lightning_run(t / "v", f"step,train_loss\n{2**63 + 10},1.0\n"),
                 "step 9223372036854775818 is beyond the store's steps (int64)", id="lightning-step-beyond-int64"),
    pytest.param("lightning", lambda t: lightning_run(t / "v", f"step,train_loss\n{STEP_MAX},1.0\n"),
                 "is beyond the store's steps (int64) once +1 is added", id="lightning-step-wraps-after-plus-one"),
    pytest.param("lightning", lambda t: lightning_run(t / "v", "step,train_loss,train_loss\n0,1.0,2.0\n"),
                 "column 'train_loss' appears more than once in", id="lightning-duplicate-column"),
    pytest.param("lightning", lambda t: lightning_run(t / "v", "step,train_loss\n0,1.0\n", BOMB_YAML),
                 f"hparams.yaml: more than {MAX_CONFIG_VALUES:,} values (aliases that multiply?)",
                 id="lightning-hparams-alias-bomb"),
    pytest.param("lightning", lambda t: lightning_run(t / "v", "step,train_loss\n0,1.0\n",
                                                      "a: &x 1\n" + "".join(f"k{i}: *x\n" for i in range(MAX_YAML_ALIASES + 1))),
                 f"more than {MAX_YAML_ALIASES} aliases", id="lightning-hparams-too-many-aliases"),
    pytest.param("lightning", lambda t: lightning_run(t / "v", "step,train_loss\n0,1.0\n", "a: " + deep_json(100_000)),
                 "hparams.yaml: nested too deeply", id="lightning-hparams-nested-100k-deep"),
    pytest.param("lightning", lambda t: lightning_run(t / "v", "step,train_loss\n0,1.0\n", "a: 1" + "0" * 5000),
                 "cannot read", id="lightning-hparams-5000-digit-int"),
    pytest.param("lightning", lambda t: lightning_run(t / "v", "step,train_loss\n0,1.0\n", "a: [unclosed"),
                 "hparams.yaml is not YAML (", id="lightning-hparams-invalid-yaml"),
    pytest.param("lightning", lambda t: lightning_run(t / "v", "step,train_loss\n0,1.0\n", "{1: a, '1': b}"),
                 "key '1' appears twice once keys are text", id="lightning-hparams-keys-collide-as-text"),
    pytest.param("tensorboard", lambda t: tensorboard_run(t / "tb", [("loss", 1, 1.0)], BOMB_YAML),
                 "more than 50,000 values", id="tensorboard-hparams-alias-bomb"),
    pytest.param("tensorboard", lambda t: tensorboard_run(t / "tb", [("loss", STEP_MAX, 1.0)], "lr: 0.1\n"),
                 "once +1 is added", id="tensorboard-lightning-step-wraps-after-plus-one"),
    pytest.param("jsonl", lambda t: text_file(t / "x.jsonl", JSONL_LOSS + '{"step": 2, "loss": \n' + JSONL_LOSS),
                 "x.jsonl line 2 is not JSON (Expecting value", id="jsonl-line-not-json"),
    pytest.param("jsonl", lambda t: text_file(t / "x.jsonl", '{"step": 1, "x": ' + deep_json(100_000) + "}\n"),
                 "x.jsonl line 1 is not JSON (nested too deeply)", id="jsonl-nested-100k-deep"),
    pytest.param("jsonl", lambda t: text_file(t / "x.jsonl", '{"step": 2.5, "loss": 1.0}\n'),
                 "x.jsonl line 1: step 2.5 is not a whole number", id="jsonl-step-fraction"),
    pytest.param("jsonl", lambda t: text_file(t / "x.jsonl", f'{{"iter": {2**63}, "loss": 1.0}}\n'),
                 "step 9223372036854775808 is beyond the store's steps (int64)", id="jsonl-step-beyond-int64"),
    pytest.param("log", lambda t: text_file(t / "x.log", "Traceback (most recent call last):\n"
                                                         "RuntimeError: CUDA error: out of memory\n"),
                 "no scalar values found in", id="log-no-metric-lines"),
    pytest.param("log", lambda t: text_file(t / "x.log", f"step {2**64}: loss 1.0\n"),
                 "x.log line 1: step 1.8446744073709552e+19 is beyond the store's steps (int64)",
                 id="log-step-beyond-int64"),
    # A .wandb file cut after some records loses its torn tail with a warning (a live or killed run);
    # one cut inside its header holds nothing to import.
    pytest.param("wandb", lambda t: wandb_run(t / "w", b":W&B\xe1"),
                 "run-x.wandb is not a W&B transaction log", id="wandb-log-cut-inside-its-header"),
    pytest.param("wandb", lambda t: wandb_run(t / "w", [wandb_history(0, loss="1.0")], **{"config.yaml": BOMB_YAML}),
                 "more than 50,000 values (aliases that multiply?)", id="wandb-config-yaml-alias-bomb"),
    pytest.param("wandb", lambda t: wandb_run(t / "w", [wandb_history(0, loss="1.0")],
                                              **{"wandb-summary.json": '{"loss": '}),
                 "is not a wandb-summary.json (invalid JSON:", id="wandb-summary-not-json"),
    pytest.param("mlflow", lambda t: mlflow_uri(f"sqlite:///{t}/absent.db"),
                 "no MLflow tracking store at sqlite:///", id="mlflow-sqlite-uri-does-not-exist"),
    pytest.param("mlflow", lambda t: mlflow_uri(f"file://{t}/absent-mlruns"),
                 "no MLflow tracking store at file://", id="mlflow-file-uri-does-not-exist"),
    pytest.param("mlflow", lambda t: mlflow_uri(str(t / "mlruns")),
                 "mlruns: no such folder or database file", id="mlflow-local-store-does-not-exist"),
]


@pytest.mark.parametrize(("kind", "make", "fragment"), BAD_INPUTS)
def test_bad_import_input_is_a_one_line_error_with_exit_2_and_store_unchanged(tmp_path, capsys, kind, make, fragment):
    store = tmp_path / "store"
    assert run_cli(capsys, "import", "csv", tidy_csv(tmp_path / "good.csv", GOOD_CSV), "--store", store)[0] == 0
    before = snapshot(store)
    bad = make(tmp_path)
    code, out, err = run_cli(capsys, "import", kind, bad, "--store", store, "--no-progress")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("traindoctor: error: "), err
    assert fragment in err
    assert snapshot(store) == before


def write_repeated_step(kind: str, tmp_path: Path, values: list[float]) -> tuple[Path, str, str, int]:
    """A log with the training loss ``values`` all at one step (between steps 1 and 5).

    Returns the input path, the (split, name) it maps to, and the store step of the repeat.
    """
    if kind == "csv":
        rows = ["1,train,loss,9.0"] + [f"3,train,loss,{v}" for v in values] + ["5,train,loss,8.0"]
        return tidy_csv(tmp_path / "x.csv", "step,split,name,value\n" + "\n".join(rows) + "\n"), "train", "loss", 3
    if kind == "hf":
        history = [{"step": 1, "loss": 9.0}, *({"step": 3, "loss": v} for v in values), {"step": 5, "loss": 8.0}]
        return hf_run(tmp_path / "out", history), "train", "loss", 3
    if kind == "lightning":  # Lightning's steps are 0-based: store step = step + 1
        rows = ["0,9.0"] + [f"2,{v}" for v in values] + ["4,8.0"]
        return lightning_run(tmp_path / "v", "step,train_loss\n" + "\n".join(rows) + "\n"), "train", "loss", 3
    steps_and_values = [(1, 9.0), *((3, v) for v in values), (5, 8.0)]
    if kind == "jsonl":
        lines = "".join(json.dumps({"step": step, "loss": value}) + "\n" for step, value in steps_and_values)
        return text_file(tmp_path / "x.jsonl", lines), "train", "loss", 3
    if kind == "log":
        lines = "".join(f"iter {step}: loss {value}\n" for step, value in steps_and_values)
        return text_file(tmp_path / "x.log", lines), "train", "loss", 3
    if kind == "wandb":
        records = [wandb_history(step, loss=repr(value)) for step, value in steps_and_values]
        return wandb_run(tmp_path / "w", records), "train", "loss", 3
    if kind == "mlflow":  # MLflow keeps every value of a step; its order is the order of their timestamps
        pytest.importorskip("mlflow")
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
        run_id = client.create_run(client.create_experiment("e")).info.run_id
        client.log_batch(run_id, metrics=[Metric("loss", value, 1000 + index, step)
                                          for index, (step, value) in enumerate(steps_and_values)])
        return tmp_path / "mlflow.db", "train", "loss", 3
    points = [("train/loss", step, value) for step, value in steps_and_values]
    return tensorboard_run(tmp_path / "tb", points), "train", "loss", 3


REPEATED_STEP_KINDS = ["csv", "hf", "lightning", "tensorboard", "jsonl", "log", "wandb", "mlflow"]


@pytest.mark.parametrize("kind", REPEATED_STEP_KINDS)
def test_a_repeated_step_keeps_its_last_value_in_every_importer(tmp_path, kind):
    path, split, name, step = write_repeated_step(kind, tmp_path, [1.25, 2.5, 0.75])
    with pytest.warns(RuntimeWarning, match=r"2 value\(s\) at a repeated step were replaced .*first: loss at step 3"):
        [result] = import_source(kind, tmp_path / "store", path)
    series = imported_series(tmp_path / "store", result.run_id, split, name)
    assert series["step"].tolist() == [1, step, 5]
    assert series["value"].tolist() == [9.0, 0.75, 8.0]  # the last of the repeated values
    assert result.rows == 3


@pytest.mark.parametrize("kind", REPEATED_STEP_KINDS)
def test_a_repeated_step_with_the_same_value_is_kept_once_and_quietly(tmp_path, kind):
    path, split, name, step = write_repeated_step(kind, tmp_path, [0.5, 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        [result] = import_source(kind, tmp_path / "store", path)
    assert imported_series(tmp_path / "store", result.run_id, split, name)["value"].tolist() == [9.0, 0.5, 8.0]


@pytest.mark.parametrize("kind, make", [
    pytest.param("hf", lambda t: hf_run(t / "out", [{"step": 1, "loss": 2.0, "mode": "abc"},
                                                      {"step": 2, "loss": 1.0, "mode": "abc"}]), id="hf"),
    pytest.param("jsonl", lambda t: text_file(t / "x.jsonl", '{"step": 1, "loss": 2.0, "mode": "abc"}\n'
                                                             '{"step": 2, "loss": 1.0, "mode": "abc"}\n'), id="jsonl"),
    pytest.param("wandb", lambda t: wandb_run(t / "w", [wandb_history(1, loss="2.0", mode='"abc"'),
                                                       wandb_history(2, loss="1.0", mode='"abc"')]), id="wandb"),
])
def test_text_entries_of_a_typed_log_are_left_out_and_named_in_one_warning(tmp_path, capsys, kind, make):
    """A typed (JSON) log's text fields are not metrics: left out with one warning naming
    them (#18 item 6: never dropped without a word), the numbers beside them kept."""
    source = make(tmp_path)
    store = tmp_path / "store"
    assert main(["import", kind, str(source), "--store", str(store), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("traindoctor: warning:") == 1 and "left out 2 entries that are not numbers: 'mode'" in err, err
    [run_id] = [row["run_id"] for row in Store(store).runs().to_dict("records")]
    loss = Store(store).scalars([run_id], names=["loss"])
    assert sorted(zip(loss["step"], loss["value"])) == [(1, 2.0), (2, 1.0)]
    assert "mode" not in set(Store(store).scalars([run_id])["name"])


def test_hf_whole_float_steps_are_kept_and_text_values_read_as_numbers(tmp_path):
    history = [
        {"step": 1.0, "loss": "1.5", "grad_norm": None},
        {"step": 2, "loss": "NaN", "eval_report": [1, 2], "flag": True},
        {"step": 3, "loss": 2**2000},
    ]
    with pytest.warns(RuntimeWarning, match="left out 2 entries that are not numbers: 'eval_report' at step 2 and 1 more"):
        [result] = import_source("hf", tmp_path / "store", hf_run(tmp_path / "out", history))
    loss = imported_series(tmp_path / "store", result.run_id, "train", "loss")
    assert loss["step"].tolist() == [1, 2, 3]
    assert loss["value"].iloc[0] == 1.5 and np.isnan(loss["value"].iloc[1]) and loss["value"].iloc[2] == np.inf
    assert set(Store(tmp_path / "store").scalars([result.run_id])["name"]) == {"loss"}


def test_lightning_step_just_below_the_int64_limit_is_kept_exactly(tmp_path):
    [result] = import_source("lightning", tmp_path / "store", lightning_run(tmp_path / "v", f"step,train_loss\n{STEP_MAX - 1},1.0\n"))
    assert imported_series(tmp_path / "store", result.run_id, "train", "loss")["step"].tolist() == [STEP_MAX]


def test_hparams_yaml_alias_bomb_never_reaches_run_json(tmp_path, capsys):
    """The repro of 10_yaml_alias_bomb.sh: 236 bytes of YAML once became a 146 MB run.json."""
    version = lightning_run(tmp_path / "repro-yaml" / "version_0", "step,epoch,train_loss\n0,0,2.0\n", BOMB_YAML)
    assert len(BOMB_YAML) < 300
    code, out, err = run_cli(capsys, "import", "lightning", version, "--store", tmp_path / "store")
    assert code == 2 and "more than 50,000 values" in err
    assert not (tmp_path / "store").exists() or list((tmp_path / "store").glob("*/run.json")) == []


def test_yaml_aliases_a_real_file_uses_are_expanded_into_the_config(tmp_path):
    hparams = "defaults: &defaults {lr: 0.1, betas: [0.9, 0.999]}\nencoder: *defaults\ndecoder: *defaults\n"
    [result] = import_source("lightning", tmp_path / "store",
                             lightning_run(tmp_path / "v", "step,train_loss\n0,1.0\n", hparams))
    defaults = {"lr": 0.1, "betas": [0.9, 0.999]}
    assert Store(tmp_path / "store").run_meta(result.run_id)["config"] == {
        "defaults": defaults, "encoder": defaults, "decoder": defaults}


def test_yaml_values_json_cannot_hold_become_plain_data(tmp_path):
    hparams = "1: one\n2020-01-02: day\nblob: !!binary aGk=\nnames: !!set {b: null, a: null}\nwhen: 2020-01-02\n"
    [result] = import_source("lightning", tmp_path / "store",
                             lightning_run(tmp_path / "v", "step,train_loss\n0,1.0\n", hparams))
    assert Store(tmp_path / "store").run_meta(result.run_id)["config"] == {
        "1": "one", "2020-01-02": "day", "blob": "b'hi'", "names": ["a", "b"], "when": "2020-01-02"}


def nested(levels: int) -> list:
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


def self_referencing() -> dict:
    value: dict = {}
    value["self"] = value
    return value


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda: nested(MAX_CONFIG_DEPTH + 1), f"nested deeper than {MAX_CONFIG_DEPTH} levels"),
    (lambda: list(range(MAX_CONFIG_VALUES)), f"more than {MAX_CONFIG_VALUES:,} values"),
    (self_referencing, f"nested deeper than {MAX_CONFIG_DEPTH} levels"),
    (lambda: {"s": "\udcff", 1: "x", "1": "y"}, "key '1' appears twice once keys are text"),
], ids=["too-deep", "too-many-values", "self-referencing", "keys-collide-as-text"])
def test_config_bounds(make: Callable, fragment: str):
    with pytest.raises(ImportInputError, match=f"^config.yaml: {fragment}"):
        plain_data(make(), "config.yaml")


def test_config_at_the_bounds_is_kept_and_text_made_valid():
    assert plain_data(nested(MAX_CONFIG_DEPTH), "c") == nested(MAX_CONFIG_DEPTH)
    assert plain_data({"name": "run-\udcff", "values": list(range(MAX_CONFIG_VALUES - 3))}, "c")["name"] == "run-\ufffd"


def test_config_beyond_the_byte_bound_is_refused(tmp_path):
    out = hf_run(tmp_path / "out", [{"step": 1, "loss": 1.0}], training_args={"note": "x" * MAX_CONFIG_BYTES})
    with pytest.raises(ImportInputError, match=f"more than the {MAX_CONFIG_BYTES:,} a run may hold"):
        import_source("hf", tmp_path / "store", out)
    assert not (tmp_path / "store").exists()


def undecodable(parent: Path, name: bytes) -> Path:
    """``parent/name`` for a name that is not UTF-8, or a skip where the file system refuses one."""
    path = Path(os.fsdecode(os.path.join(os.fsencode(parent), name)))
    try:
        path.mkdir()
        path.rmdir()
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    return path


def test_non_utf8_folder_name_becomes_a_listable_run_name(tmp_path, capsys):
    store = tmp_path / "store"
    first = hf_run(undecodable(tmp_path, b"run-\xfe"), [{"step": 1, "loss": 1.0}])
    second = hf_run(undecodable(tmp_path, b"run-\xff"), [{"step": 1, "loss": 2.0}])
    for folder in (first, second):
        code, out, err = run_cli(capsys, "import", "hf", folder, "--store", store)
        assert (code, err) == (0, ""), err
    code, out, err = run_cli(capsys, "runs", "--store", store, "--json")
    assert (code, err) == (0, "")
    assert sorted(run["name"] for run in json.loads(out)) == ["run-\ufffd", "run-\ufffd"]  # two folders, two runs
    sources = sorted(Store(store).run_meta(run_id)["source"]["path"] for run_id in Store(store).run_ids())
    assert [Path(s).name for s in sources] == ["run-\\xfe", "run-\\xff"]
    [again] = import_source("hf", store, first)  # the recorded path still identifies the source
    assert again.skipped


def test_non_utf8_csv_file_name_is_imported(tmp_path, capsys):
    path = undecodable(tmp_path, b"loss-\xff.csv")
    tidy_csv(path, GOOD_CSV)
    code, out, err = run_cli(capsys, "import", "csv", path, "--store", tmp_path / "store")
    assert (code, err) == (0, ""), err
    assert [meta["name"] for meta in map(Store(tmp_path / "store").run_meta, Store(tmp_path / "store").run_ids())] == ["loss-\ufffd"]


def test_lone_surrogate_metric_name_from_json_becomes_valid_text(tmp_path, capsys):
    out = hf_run(tmp_path / "out", '{"log_history": [{"step": 1, "loss": 1.0, "eval_\\udcff": 2.0}]}')
    [result] = import_source("hf", tmp_path / "store", out)
    assert set(Store(tmp_path / "store").scalars([result.run_id])["name"]) == {"loss", "\ufffd"}
    assert run_cli(capsys, "runs", "--store", tmp_path / "store")[0] == 0


def test_a_parse_failure_keeps_its_cause_for_the_python_api(tmp_path, monkeypatch):
    import traindoctor.store.importers.tidy_csv as tidy

    def broken_parse(source, progress):
        raise OverflowError("an importer bug or hostile bytes")

    monkeypatch.setattr(tidy, "parse", broken_parse)
    with pytest.raises(ImportInputError, match=r"^cannot read .*x.csv: OverflowError: an importer bug") as error:
        import_source("csv", tmp_path / "store", tidy_csv(tmp_path / "x.csv", GOOD_CSV))
    assert isinstance(error.value.__cause__, OverflowError)
    assert isinstance(error.value, StoreError)


def test_an_error_while_writing_is_not_taken_for_bad_input(tmp_path, monkeypatch):
    import traindoctor.store.importers.common as common

    class BuggyWriter(common.RunWriter):
        def add_scalars(self, **columns) -> None:
            raise TypeError("a bug in the writer")

    monkeypatch.setattr(common, "RunWriter", BuggyWriter)
    with pytest.raises(TypeError, match="a bug in the writer"):
        import_source("csv", tmp_path / "store", tidy_csv(tmp_path / "x.csv", GOOD_CSV))
    assert [p for p in (tmp_path / "store").iterdir()] == []


@pytest.mark.parametrize(("walls", "started", "ended"), [
    ([1.7e9 + 60, 1.7e9, 1.7e9 + 120], 1.7e9, 1.7e9 + 120),  # the earliest and latest wall times the log records
    ([1000.0, 1001.0, 1002.0], None, None),                  # a clock relative to the job's start: not a date
    (None, None, None),                                      # no wall time at all (a trainer_state.json, a pasted log)
], ids=["recorded", "relative-clock", "none"])
def test_an_imported_run_starts_and_ends_when_its_source_says(tmp_path, walls, started, ended):
    # Every imported run was 'started' at the import: a sweep trained last year listed as started
    # today, in import order, and `diagnose --latest N` took the last imported for the newest trained.
    records = [{"step": step, "loss": 1.0 / step, **({"wall_time": walls[step - 1]} if walls else {})}
               for step in (1, 2, 3)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    before = time.time()
    [result] = import_source("jsonl", tmp_path / "store", path)
    meta = Store(tmp_path / "store").run_meta(result.run_id)
    created, finished = meta["created_at"], meta["finished_at"]
    if started is None:
        assert before <= created <= time.time()
    else:
        assert created == started
    # It ended at its last record, not at the import (a year-old run had lasted a year in the Runs table).
    if ended is None:
        assert before <= finished <= time.time()
    else:
        assert finished == ended
