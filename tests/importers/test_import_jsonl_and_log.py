"""`import jsonl` and `import log`: records of any keys, and terminal logs as pasted into bug reports.

The pasted logs in ``pasted_logs/`` are excerpts of logs that people pasted
into public GitHub issues, trimmed to the metric lines (numbers and the
tools' own line format only; no names, paths or prose). Each row of
``PASTED_LOGS`` names its issue. They were found through a search of public
issue threads; the excerpts were copied from that search's text of the issue.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from traindoctor.store.importers import import_source
from traindoctor.store.reader import Store
from traindoctor.store.segments import StoreError
from tests.importers.conftest import imported_series, listing

PASTED = Path(__file__).parent / "pasted_logs"
NAN = math.nan


def write_jsonl(path: Path, records: list[dict]) -> Path:
    # json.dumps writes NaN and Infinity as JavaScript does, as Python loggers do.
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def points(store_root: Path, run_id: str, split: str, name: str, layer: str | None = None) -> list[tuple[int, float]]:
    frame = imported_series(store_root, run_id, split, name, layer)
    return list(zip(frame["step"].tolist(), frame["value"].tolist()))


def same_points(actual: list[tuple[int, float]], expected: list[tuple[int, float]]) -> bool:
    """Equal steps and values, NaN equal to NaN."""
    return len(actual) == len(expected) and all(
        a_step == e_step and (a_value == e_value or (math.isnan(a_value) and math.isnan(e_value)))
        for (a_step, a_value), (e_step, e_value) in zip(actual, expected))


# ---------------------------------------------------------------- jsonl


def test_jsonl_reads_every_point_with_its_step_epoch_and_wall_time(tmp_path, store_root):
    records = []
    for step in range(1, 41):
        loss = {7: NAN, 8: math.inf, 9: -math.inf}.get(step, 2.0 / step)
        records.append({"global_step": step, "loss": loss, "learning_rate": 0.1, "epoch": step / 20,
                        "wall_time": 1000.0 + step, "tokens": str(512 * step), "flag": True, "tags": ["a"]})
        if step % 10 == 0:
            records.append({"eval": {"loss": 1.0 / step, "accuracy": step / 100}})  # no step: the one before
    # The import rules (store/importers/common.py): text is read as a number; lists and true/false are
    # no metrics, left out and counted in one warning.
    with pytest.warns(RuntimeWarning, match="left out 80 entries that are not numbers: 'flag' at step 1 and 79 more"):
        [result] = import_source("jsonl", store_root, write_jsonl(tmp_path / "metrics.jsonl", records))
    loss = imported_series(store_root, result.run_id, "train", "loss")
    expected = [r["loss"] for r in records if "loss" in r]
    assert loss["step"].tolist() == list(range(1, 41))
    np.testing.assert_array_equal(loss["value"].to_numpy(), np.array(expected))
    assert loss["epoch"].tolist() == [step / 20 for step in range(1, 41)]
    assert loss["wall_time"].tolist() == [1000.0 + step for step in range(1, 41)]
    assert points(store_root, result.run_id, "val", "loss") == [(s, 1.0 / s) for s in (10, 20, 30, 40)]
    assert points(store_root, result.run_id, "val", "accuracy") == [(s, s / 100) for s in (10, 20, 30, 40)]
    assert points(store_root, result.run_id, "train", "lr", "group0") == [(s, 0.1) for s in range(1, 41)]
    assert points(store_root, result.run_id, "user", "tokens") == [(s, 512.0 * s) for s in range(1, 41)]
    assert result.rows == 40 * 3 + 4 * 2
    assert Store(store_root).run_meta(result.run_id)["source"]["logging_every"] == 1


@pytest.mark.parametrize("step_key", ["step", "iter", "iteration", "global_step", "num_updates"])
def test_jsonl_step_keys_of_the_shared_table(tmp_path, store_root, step_key):
    path = write_jsonl(tmp_path / "m.jsonl", [{step_key: 10 * i, "loss": float(i)} for i in range(1, 4)])
    [result] = import_source("jsonl", store_root, path)
    assert points(store_root, result.run_id, "train", "loss") == [(10, 1.0), (20, 2.0), (30, 3.0)]


def test_jsonl_without_steps_numbers_the_records_and_says_so(tmp_path, store_root):
    [result] = import_source("jsonl", store_root, write_jsonl(tmp_path / "m.jsonl", [{"loss": 3.0}, {"loss": 2.0}]))
    assert points(store_root, result.run_id, "train", "loss") == [(1, 3.0), (2, 2.0)]
    assert Store(store_root).run_meta(result.run_id)["source"]["steps"].startswith("record numbers")


@pytest.mark.parametrize("line, message", [
    ('{"step": 1, "loss": 2.0}\n[1, 2]\n{"step": 2, "loss": 1.0}\n', "line 2 is not a JSON object"),
    ('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": \n{"step": 3, "loss": 1.0}\n', "line 2 is not JSON"),
    ('{"step": 1.5, "loss": 2.0}\n', "step 1.5 is not a whole number"),
    ('{"step": 1e30, "loss": 2.0}\n', r"step 1e\+30 is beyond the store's steps \(int64\)"),
    ('{"step": 99999999999999999999, "loss": 2.0}\n', r"step 99999999999999999999 is beyond the store's steps"),
    ('{"step": "one", "loss": 2.0}\n', "step 'one' is not a number"),
    ('{"step": NaN, "loss": 2.0}\n', "step nan is not a whole number"),
], ids=["not-an-object", "broken-line", "fractional-step", "huge-float-step", "int64-overflow", "text-step",
        "nan-step"])
def test_jsonl_that_cannot_be_represented_is_a_one_line_error_and_the_store_is_unchanged(tmp_path, store_root, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line)
    with pytest.raises(StoreError, match=message) as raised:
        import_source("jsonl", store_root, path)
    assert "\n" not in str(raised.value)
    assert listing(store_root) == []


def test_jsonl_truncated_last_line_of_a_live_log_is_skipped_with_a_warning(tmp_path, store_root):
    path = tmp_path / "live.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    with pytest.warns(RuntimeWarning, match="last line is incomplete"):
        [result] = import_source("jsonl", store_root, path)
    assert points(store_root, result.run_id, "train", "loss") == [(1, 2.0), (2, 1.5)]


def test_jsonl_50000_steps_arrive_whole_and_a_second_import_is_skipped(tmp_path, store_root):
    steps = 50_000
    path = tmp_path / "long.jsonl"
    path.write_text("".join(f'{{"step": {s}, "loss": {1.0 / s!r}}}\n' for s in range(1, steps + 1)))
    [result] = import_source("jsonl", store_root, path)
    loss = imported_series(store_root, result.run_id, "train", "loss")
    assert loss["step"].tolist() == list(range(1, steps + 1))
    assert loss["value"].tolist() == [1.0 / s for s in range(1, steps + 1)]
    [again] = import_source("jsonl", store_root, path)
    assert (again.skipped, again.run_id) == (True, result.run_id)


# ---------------------------------------------------------------- pasted terminal logs

# file, where it was pasted, how steps were found, and the series it must give (split, name, layer): [(step, value)]
PASTED_LOGS = [
    pytest.param(
        "hf_trainer_nan_grad_norm.txt", "https://github.com/AnswerDotAI/ModernBERT/issues/233",
        "record numbers: the log prints no step",
        {("train", "loss", None): [(1, 0.2051), (2, 0.0), (3, 0.0)],
         ("train", "grad_norm", None): [(1, NAN), (2, NAN), (3, NAN)],
         ("train", "lr", "group0"): [(1, 9.774074342405685e-06), (2, 9.773696745450087e-06), (3, 9.773318840518906e-06)]},
        id="hf-trainer-dicts"),
    pytest.param(
        "nanogpt_loss_nan.txt", "https://github.com/karpathy/nanoGPT/issues/215", "logged",
        {("train", "loss", None): [(2920, 3.9883), (2930, 3.9408), (2940, 3.9994), (2950, 4.0977), (2960, 4.1535),
                                   (2970, 3.9453), (2980, 3.8993), (2990, 3.8853), (3000, 4.2490), (3010, NAN),
                                   (3020, NAN), (3030, NAN), (3040, NAN), (3050, NAN), (3060, NAN)],
         # nanoGPT's evaluation line: an estimate of the train loss over eval_iters batches, kept apart.
         ("train", "train_loss", None): [(3000, 4.0390)],
         ("val", "loss", None): [(3000, 4.0427)]},
        id="nanogpt-iter"),
    pytest.param(
        "megatron_lm_loss.txt", "https://github.com/epfLLM/Megatron-LLM/issues/11", "logged",
        {("train", "loss", None): [(122, 2.504220), (123, 2.493043), (124, 2.559583), (125, 2.477393)],
         ("train", "grad_norm", None): [(122, 0.231), (123, 0.236), (124, 0.242), (125, 0.356)],
         ("train", "lr", "group0"): [(122, 9.150e-06), (123, 9.225e-06), (124, 9.300e-06), (125, 9.375e-06)],
         ("train", "amp_scale", None): [(122, 1.0), (123, 1.0), (124, 1.0), (125, 1.0)]},
        id="megatron-lm"),
    pytest.param(
        "megatron_deepspeed_grad_norm_nan.txt", "https://github.com/bigscience-workshop/Megatron-DeepSpeed/issues/396",
        "logged",
        {("train", "grad_norm", None): [(5426, NAN), (5427, NAN), (5428, NAN)],
         ("train", "lr", "group0"): [(5426, 2.999e-04), (5427, 2.999e-04), (5428, 2.999e-04)]},
        id="megatron-deepspeed"),
    pytest.param(
        "fairseq_train_inner.txt", "https://github.com/facebookresearch/fairseq/issues/940", "logged",
        # num_updates (optimizer updates) is the step, not the "450 / 1891" batch counter.
        {("train", "loss", None): [(445, 11.521), (495, 11.346), (545, 11.186), (595, 11.039), (645, 10.902)],
         ("train", "grad_norm", None): [(445, 1.543), (495, 1.507), (545, 1.469), (595, 1.445), (645, 1.419)],
         ("train", "lr", "group0"): [(445, 8.90889e-05), (495, 9.90876e-05), (545, 0.000109086), (595, 0.000119085),
                                     (645, 0.000129084)],
         ("val", "loss", None): [(600, 8.11425)]},
        id="fairseq-key-equals-value"),
    pytest.param(
        "mmengine_grad_norm_nan.txt", "https://github.com/InternLM/xtuner/issues/187", "logged",
        {("train", "loss", None): [(200, 2.7522), (210, 2.6150), (220, 2.6687), (230, 2.7682), (240, 2.5128), (250, 2.4566)],
         ("train", "grad_norm", None): [(200, 3.0608), (210, 2.7647), (220, 2.7647), (230, 2.5099), (240, NAN), (250, NAN)]},
        id="mmengine-key-colon-value"),
    pytest.param(
        "mmcv_epoch_iter.txt", "https://github.com/JiaquanYe/TableMASTER-mmocr/issues/32", "logged",
        {("train", "loss", None): [(100, 1.9091), (200, 0.9186)],
         ("train", "grad_norm", None): [(100, NAN), (200, 3.9772)],
         ("user", "loss_ce", None): [(100, 1.2757), (200, 0.5921)]},
        id="mmcv-epoch-iter"),
    pytest.param(
        "litgpt_iter_step.txt", "https://github.com/Lightning-AI/litgpt/issues/689", "logged",
        # "iter N step M": M counts optimizer steps. Two lines print steps 39 and 40: the last one of
        # each is kept (the import rule of store/importers/common.py: the last value of a step wins).
        {("train", "loss", None): [(38, 10.8259), (39, 10.8259), (40, 10.8259), (41, 10.8259)],
         ("user", "iter_time", None): [(38, 197.87), (39, 198.00), (40, 197.59), (41, 215.43)]},
        id="litgpt-iter-and-step"),
    pytest.param(
        "key_colon_value_epoch.txt", "https://github.com/vpetren/gradnorm_tf/issues/17",
        "record numbers: the log prints no step",
        {("train", "loss", None): [(1, 0.21049741968512542), (2, 0.2075416080653667), (3, 0.21063452526926987),
                                   (4, NAN), (5, NAN)]},
        id="key-colon-value-lines"),
    pytest.param(
        "kohya_tqdm_postfix.txt", "https://github.com/kohya-ss/sd-scripts/issues/2137", "tqdm bar count",
        {("user", "avr_loss", None): [(943, NAN), (984, NAN), (1025, NAN)]},
        id="tqdm-postfix"),
]


@pytest.mark.parametrize("file, provenance, steps, expected", PASTED_LOGS)
def test_pasted_log_gives_the_expected_series(store_root, file, provenance, steps, expected):
    [result] = import_source("log", store_root, PASTED / file)
    for (split, name, layer), series in expected.items():
        actual = points(store_root, result.run_id, split, name, layer)
        assert same_points(actual, series), (split, name, layer, actual)
    assert Store(store_root).run_meta(result.run_id)["source"]["steps"] == steps


def test_pasted_epochs_become_the_epoch_column(store_root):
    [result] = import_source("log", store_root, PASTED / "key_colon_value_epoch.txt")
    assert imported_series(store_root, result.run_id, "train", "loss")["epoch"].tolist() == [3448.0, 3449.0, 3450.0, 3451.0, 3452.0]
    [mm] = import_source("log", store_root, PASTED / "mmengine_grad_norm_nan.txt")
    assert set(imported_series(store_root, mm.run_id, "train", "loss")["epoch"]) == {1.0}


def test_no_junk_metrics_from_source_locations_and_etas(store_root):
    [kohya] = import_source("log", store_root, PASTED / "kohya_tqdm_postfix.txt")
    [mmcv] = import_source("log", store_root, PASTED / "mmcv_epoch_iter.txt")
    names = set(Store(store_root).scalars([kohya.run_id, mmcv.run_id])["name"])
    assert not {"eta", "util.py", "train_util.py"} & names


# ---------------------------------------------------------------- terminal log shapes written here

# What HF Trainer prints before training (TrainingArguments when the log level asks for it).
HF_BANNER = """TrainingArguments(
_n_gpu=1,
learning_rate=5e-05,
logging_steps=10,
lr_scheduler_type=SchedulerType.LINEAR,
optim=OptimizerNames.ADAMW_TORCH,
)
***** Running training *****
  Num examples = 640
  Num Epochs = 1
  Total train batch size (w. parallel, distributed & accumulation) = 8
  Total optimization steps = 80
  Number of trainable parameters = 4,386,307
"""


def test_hf_dicts_take_the_printed_logging_steps_and_eval_shares_the_train_step(tmp_path, store_root):
    lines = [HF_BANNER]
    for record in range(1, 7):
        lines.append(str({"loss": 2.0 / record, "grad_norm": 1.5, "learning_rate": 5e-05, "epoch": record / 6}))
        if record % 3 == 0:
            lines.append(str({"eval_loss": 1.0 / record, "eval_accuracy": 0.5, "eval_runtime": 0.2, "epoch": record / 6}))
    lines.append(str({"train_runtime": 12.5, "train_loss": 0.9, "epoch": 1.0}))
    path = tmp_path / "hf.log"
    path.write_text("\n".join(lines) + "\n")
    [result] = import_source("log", store_root, path)
    assert points(store_root, result.run_id, "train", "loss") == [(10 * r, 2.0 / r) for r in range(1, 7)]
    assert points(store_root, result.run_id, "val", "loss") == [(30, 1 / 3), (60, 1 / 6)]
    # The end-of-training mean loss is no point of the loss curve.
    assert points(store_root, result.run_id, "user", "train_loss") == [(60, 0.9)]
    meta = Store(store_root).run_meta(result.run_id)
    assert meta["source"]["steps"] == "record number × 10 (logging cadence)"
    assert meta["source"]["logging_every"] == 10
    # The banner and the arguments are the run's set-up, not metrics.
    assert {"learning_rate": 5e-05, "logging_steps": 10, "num_epochs": 1, "total_optimization_steps": 80,
            "number_of_trainable_parameters": 4386307, "total_train_batch_size": 8}.items() <= meta["config"].items()
    assert meta["config"]["optim"] == "OptimizerNames.ADAMW_TORCH"
    assert set(Store(store_root).scalars([result.run_id])["name"]) == {"loss", "grad_norm", "lr", "accuracy", "runtime", "train_loss", "train_runtime"}


def test_log_every_sets_the_cadence_of_a_log_without_steps(tmp_path, store_root):
    path = tmp_path / "hf.log"
    path.write_text("\n".join(str({"loss": float(i), "epoch": i / 10}) for i in range(1, 4)) + "\n")
    [result] = import_source("log", store_root, path, log_every=50)
    assert points(store_root, result.run_id, "train", "loss") == [(50, 1.0), (100, 2.0), (150, 3.0)]


def test_tqdm_bar_count_on_the_dict_line_is_the_step_and_an_eval_bar_is_not(tmp_path, store_root):
    path = tmp_path / "hf.log"
    path.write_text(
        " 10%|█         | 10/100 [00:01<00:09,  9.51it/s]{'loss': 2.1, 'learning_rate': 5e-05, 'epoch': 0.1}\n"
        "100%|██████████| 8/8 [00:00<00:00, 40.1it/s]\n"
        "{'eval_loss': 1.9, 'eval_runtime': 0.2, 'epoch': 0.1}\n"
        " 20%|██        | 20/100 [00:02<00:08,  9.50it/s]\r{'loss': 1.7, 'learning_rate': 4e-05, 'epoch': 0.2}\n")
    [result] = import_source("log", store_root, path)
    assert points(store_root, result.run_id, "train", "loss") == [(10, 2.1), (20, 1.7)]
    assert points(store_root, result.run_id, "val", "loss") == [(10, 1.9)]


def test_hf_dicts_without_a_bar_of_their_own_take_the_step_their_epoch_gives(tmp_path, store_root):
    """A log that kept only some of tqdm's lines: each dict after the first below a bar got that bar's
    count, and a repeated step kept only the last value (4 of 8 losses lost); dicts before any bar were
    numbered 1, 2. HF prints the epoch in each dict: at the bar's rate (30 steps at epoch 0.3) it gives
    the step. A summary dict stays at the last step; an eval dict at its bar's."""
    path = tmp_path / "hf.log"
    path.write_text(
        "{'loss': 2.3, 'learning_rate': 5e-05, 'epoch': 0.1}\n"
        "{'loss': 2.1, 'learning_rate': 4.5e-05, 'epoch': 0.2}\n"
        " 30%|███       | 30/100 [00:10<00:20,  3.0it/s]\n"
        "{'loss': 1.9, 'learning_rate': 4e-05, 'epoch': 0.3}\n"
        "{'eval_loss': 1.95, 'eval_runtime': 0.2, 'epoch': 0.3}\n"
        "{'loss': 1.7, 'learning_rate': 3.5e-05, 'epoch': 0.4}\n"
        "{'loss': 1.5, 'learning_rate': 3e-05, 'epoch': 0.5}\n"
        " 60%|██████    | 60/100 [00:20<00:10,  3.0it/s]\n"
        "{'loss': 1.3, 'learning_rate': 2.5e-05, 'epoch': 0.6}\n"
        "{'train_runtime': 30.1, 'train_samples_per_second': 26.6, 'train_loss': 1.8, 'epoch': 0.6}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no value replaced at a repeated step
        [result] = import_source("log", store_root, path)
    assert points(store_root, result.run_id, "train", "loss") == [
        (10, 2.3), (20, 2.1), (30, 1.9), (40, 1.7), (50, 1.5), (60, 1.3)]
    assert points(store_root, result.run_id, "val", "loss") == [(30, 1.95)]


@pytest.mark.parametrize("line, key, value", [
    ("{'loss': np.float64(0.5), 'epoch': 1.0}", ("train", "loss", None), 0.5),
    ("{'loss': tensor(0.25, device='cuda:0'), 'epoch': 1.0}", ("train", "loss", None), 0.25),
    ('{"epoch": 1, "update": 0.004, "loss": "15.649", "num_updates": "10", "gnorm": "4.345"}', ("train", "grad_norm", None), 4.345),
    ("step=7 loss=0.5 lr=0.001", ("train", "lr", "group0"), 0.001),
    ("Iter(train) [  7/80000]  lr: 1.0000e-02  loss: 0.5", ("train", "loss", None), 0.5),
    (" validation loss at iteration 7 | lm loss value: 2.345678E+00 | lm loss PPL: 1.043859E+01 |", ("val", "loss", None), 2.345678),
    ("\x1b[32m2024-01-01 10:00:00\x1b[0m | step: 7 | train/loss: 0.5", ("train", "loss", None), 0.5),
], ids=["numpy-float-repr", "tensor-repr", "fairseq-json", "key-equals-value", "mmengine-iter", "megatron-validation", "ansi-colours"])
def test_line_shapes(tmp_path, store_root, line, key, value):
    path = tmp_path / "one.log"
    path.write_text(line + "\n")
    [result] = import_source("log", store_root, path)
    [(step, read)] = points(store_root, result.run_id, *key)
    assert read == pytest.approx(value)
    assert step in (7, 10, 1)


def test_total_loss_is_the_training_loss(tmp_path, store_root):
    """A YOLO port's line (YunYang1994/TensorFlow2.0-Examples#8): total_loss is the loss, its parts stay user metrics."""
    path = tmp_path / "yolo.log"
    path.write_text("=> STEP  748   lr: 0.000598   giou_loss: 2.10   conf_loss: 6.18   prob_loss: 0.03   total_loss: 8.31\n"
                    "=> STEP  750   lr: 0.000600   giou_loss:  nan   conf_loss: 10.89   prob_loss: 0.06   total_loss:  nan\n")
    [result] = import_source("log", store_root, path)
    assert same_points(points(store_root, result.run_id, "train", "loss"), [(748, 8.31), (750, NAN)])
    assert points(store_root, result.run_id, "user", "giou_loss")[0] == (748, 2.10)


def test_losses_is_the_training_loss_unless_a_loss_is_logged_too(tmp_path, store_root):
    """maskrcnn-benchmark#497's lines: the summed detection loss printed as "losses" (39.7 -> 1.4e6 -> nan) was a
    user metric, so the run read as holding no training step; beside a plain "loss" it keeps its own name."""
    path = tmp_path / "maskrcnn.log"
    path.write_text("iteration : 1, losses : 39.65670394897461\niteration : 2, losses : 1436176.25\n"
                    "iteration : 3, losses : nan\n")
    [result] = import_source("log", store_root, path)
    assert same_points(points(store_root, result.run_id, "train", "loss"), [(1, 39.65670394897461), (2, 1436176.25),
                                                                            (3, NAN)])
    both = tmp_path / "both.log"
    both.write_text("step 1 loss 2.5 losses 7.5\nstep 2 loss 2.4 losses 7.1\n")
    [result] = import_source("log", store_root, both)
    assert points(store_root, result.run_id, "train", "loss") == [(1, 2.5), (2, 2.4)]
    assert points(store_root, result.run_id, "train", "losses") == [(1, 7.5), (2, 7.1)]


def test_the_pytorch_examples_epoch_summaries(tmp_path, store_root):
    """pytorch/examples' mnist prints "Test set: Average loss: 0.0490, Accuracy: 9843/10000 (98%)" after each
    epoch's "Train Epoch: 1 [640/60000 (1%)]\tLoss: 0.5" lines, and scripts copied from it add a "Train set:" line:
    the accuracy was read as the count 9843 on the train split, the test loss as a user metric "Average_loss" and
    the train-set line's values dropped as repeats (a new user's fourth real-log hold-out search)."""
    path = tmp_path / "mnist.log"
    path.write_text("Train Epoch: 1 [0/60000 (0%)]\tLoss: 2.300000\n"
                    "Train Epoch: 1 [30720/60000 (51%)]\tLoss: 0.400000\n\n"
                    "Train set: Average loss: 0.3000, Accuracy: 54000/60000 (90.000%)\n"
                    "Test set: Average loss: 0.0490, Accuracy: 9843/10000 (98%)\n\n"
                    "Train Epoch: 2 [0/60000 (0%)]\tLoss: 0.200000\n"
                    "Train Epoch: 2 [30720/60000 (51%)]\tLoss: 0.100000\n\n"
                    "Test set: Average loss: 0.0350, Accuracy: 9890/10000 (99%)\n")
    [result] = import_source("log", store_root, path)
    assert [value for _, value in points(store_root, result.run_id, "test", "accuracy")] == [0.9843, 0.989]
    assert [value for _, value in points(store_root, result.run_id, "test", "loss")] == [0.049, 0.035]
    assert [value for _, value in points(store_root, result.run_id, "train", "accuracy")] == [0.9]
    # The per-batch losses are the training curve; the train-set line's mean at the same step does not replace one.
    assert [value for _, value in points(store_root, result.run_id, "train", "loss")] == [2.3, 0.4, 0.2, 0.1]
    assert points(store_root, result.run_id, "user", "Average_loss") == []
    summaries = tmp_path / "summaries.log"
    summaries.write_text("".join(f"Epoch {epoch}\nTrain set: Average loss: {0.5 / epoch:.4f}, Accuracy: {50000 + epoch}/60000 "
                                 f"(83%)\nTest set: Average loss: {0.6 / epoch:.4f}, Accuracy: {8000 + epoch}/10000 (80%)\n"
                                 for epoch in (1, 2, 3)))
    [result] = import_source("log", store_root, summaries)
    assert [value for _, value in points(store_root, result.run_id, "train", "loss")] == [0.5, 0.25, 0.1667]
    assert [value for _, value in points(store_root, result.run_id, "test", "loss")] == [0.6, 0.3, 0.2]


def test_prose_counts_dates_and_epoch_counters_are_not_metrics(tmp_path, store_root):
    """Keras 2's "Train on 40000 samples, validate on 10000 samples" became a train metric "on" = 40000, a header's
    "Start Time: 2025-10-03" a metric 2025, and "Epoch [  1/50]" was no epoch (a new user's real-log search)."""
    path = tmp_path / "keras.log"
    path.write_text("Start Time: 2025-10-03 12:00:01\nTrain on 40000 samples, validate on 10000 samples\n"
                    "Epoch [  1/50] loss: 0.9 val_loss: 1.0\nEpoch [  2/50] loss: 0.8 val_loss: 0.95\n"
                    "Epoch 3/50 - loss: 0.7 - val_loss: 0.9\n")
    [result] = import_source("log", store_root, path)
    assert series_names(store_root, result.run_id) == {"train/loss", "val/loss"}
    frame = imported_series(store_root, result.run_id, "train", "loss")
    assert frame["value"].tolist() == [0.9, 0.8, 0.7] and frame["epoch"].tolist() == [1.0, 2.0, 3.0]
    assert [value for _, value in points(store_root, result.run_id, "val", "loss")] == [1.0, 0.95, 0.9]


def test_a_pattern_of_evaluations_only_keeps_every_match(tmp_path, store_root):
    """A --pattern without a step group that takes only validation values (EVA5's "Test set: Average loss: ..."
    lines) put every match at step 1 and kept 1 of 14: each match is a record of its own."""
    path = tmp_path / "eval.log"
    path.write_text("".join(f"EPOCH: {e}\nTest set: Average loss: {0.1 / e:.4f}, Accuracy: 98%\n" for e in (1, 2, 3)))
    [result] = import_source("log", store_root, path, pattern=r"Test set: Average loss: (?P<val_loss>[\d.]+)")
    assert points(store_root, result.run_id, "val", "loss") == [(1, 0.1), (2, 0.05), (3, 0.0333)]


def test_user_pattern_with_named_groups(tmp_path, store_root):
    path = tmp_path / "custom.log"
    path.write_text("it 100 | L=2.5 acc=0.1\nnoise line\nit 200 | L=nan acc=0.2\n")
    [result] = import_source("log", store_root, path, pattern=r"it (?P<step>\d+) \| L=(?P<loss>\S+) acc=(?P<accuracy>\S+)")
    assert same_points(points(store_root, result.run_id, "train", "loss"), [(100, 2.5), (200, NAN)])
    assert points(store_root, result.run_id, "train", "accuracy") == [(100, 0.1), (200, 0.2)]


@pytest.mark.parametrize("pattern, message", [
    (r"it (?P<step>\d+", "not a valid regular expression"),
    (r"it (?P<step>\d+)", "at least one metric"),
], ids=["invalid-regex", "no-metric-group"])
def test_bad_pattern_is_a_one_line_error(tmp_path, store_root, pattern, message):
    path = tmp_path / "x.log"
    path.write_text("it 1 loss 2\n")
    with pytest.raises(StoreError, match=message):
        import_source("log", store_root, path, pattern=pattern)
    assert listing(store_root) == []


def test_a_log_without_numbers_is_an_error_and_writes_nothing(tmp_path, store_root):
    path = tmp_path / "traceback.log"
    path.write_text("Traceback (most recent call last):\n  File \"train.py\", line\nRuntimeError: CUDA out of memory\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one error, no warning repeating it
        with pytest.raises(StoreError, match="^no scalar values found in .*traceback.log$"):
            import_source("log", store_root, path)
    assert listing(store_root) == []


def test_an_unrelated_text_file_is_refused_as_no_training_log(tmp_path, store_root):
    # `traindoctor import log /etc/services` imported 324 one-off "metrics" (tcpmux 1/tcp, echo 7/tcp, …)
    # as a finished run that recorded nothing, listed with 318 steps and no curve.
    path = tmp_path / "services.txt"
    names = [f"service{i}" for i in range(60)]
    path.write_text("# Network services, Internet style\n\n"
                    + "".join(f"{name}\t\t{port}/tcp\t\t# {name} daemon\n" for port, name in enumerate(names, start=1))
                    + "echo\t\t7/tcp\necho\t\t7/udp\n")
    with pytest.raises(StoreError, match=r"services\.txt reads as no training log: .* --pattern REGEX\)$"):
        import_source("log", store_root, path)
    assert listing(store_root) == []


@pytest.mark.parametrize("text", [
    pytest.param("".join(f"reward: {r}\n" for r in range(5)), id="one-unknown-key-five-times"),
    pytest.param("".join(f"Step {s} | ppl {20 - s}\n" for s in range(1, 3)), id="printed-steps"),
    pytest.param("avr_loss=2.5\navr_loss=2.1\n", id="a-key-holding-loss"),
    pytest.param("acc 0.5\n", id="a-known-metric-once"),
])
def test_a_short_log_of_training_values_is_still_imported(tmp_path, store_root, text):
    path = tmp_path / "train.log"
    path.write_text(text)
    [result] = import_source("log", store_root, path)
    assert Store(store_root).scalars([result.run_id])["value"].notna().all()


@pytest.mark.slow
def test_log_50000_lines_arrive_whole(tmp_path, store_root):
    steps = 50_000
    path = tmp_path / "long.log"
    path.write_text("".join(f"iter {s}: loss {1.0 / s:.6f}, time 10.00ms, mfu 1.00%\n" for s in range(1, steps + 1)))
    [result] = import_source("log", store_root, path)
    loss = imported_series(store_root, result.run_id, "train", "loss")
    assert loss["step"].tolist() == list(range(1, steps + 1))
    assert loss["value"].tolist() == [float(f"{1.0 / s:.6f}") for s in range(1, steps + 1)]


def test_a_binary_file_is_refused_and_leaves_the_earlier_import_whole(tmp_path, store_root):
    # A DuckDB file, a checkpoint or a gzipped log holds stray 'key: value' bytes that read as
    # metrics; imported over a good log of the same path, it replaced that run with noise.
    path = tmp_path / "train.log"
    path.write_text("".join(f"iter {s}: loss {3.0 / s:.4f}, time 10.00ms\n" for s in range(1, 11)))
    [first] = import_source("log", store_root, path)
    before = listing(store_root)
    path.write_bytes(b"DUCK\x00\x00\x01\x00" + b"\nbatch_size: 64\nlr: 0.1\nloss: 2.5\n" * 5 + b"\x00" * 64)
    with pytest.raises(StoreError, match=r"train\.log is a binary file, not a text log$"):
        import_source("log", store_root, path)
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 32)
    with pytest.raises(StoreError, match=r"binary file, not a text log \(gzip: decompress it first\)$"):
        import_source("log", store_root, path)
    assert listing(store_root) == before
    assert points(store_root, first.run_id, "train", "loss")[-1] == (10, 0.3)


def test_a_utf16_log_is_read_as_text(tmp_path, store_root):
    # PowerShell's `python train.py > train.log` writes UTF-16LE with a byte-order mark.
    path = tmp_path / "train.log"
    path.write_bytes("".join(f"iter {s}: loss {3.0 / s:.4f}\r\n" for s in range(1, 6)).encode("utf-16"))
    [result] = import_source("log", store_root, path)
    assert points(store_root, result.run_id, "train", "loss") == [(s, round(3.0 / s, 4)) for s in range(1, 6)]


# pytorch/examples' ImageNet script (epochs from 0, "Test:" progress lines, a " * Acc@1" summary) and the
# tutorials' "Epoch [e/E], Step [s/S]": both were numbered line by line (steps 1, 2, 3 ... for 0, 10, 20,
# 5005 ...), the Test line's loss read as a training loss and "Acc@1" was lost.
IMAGENET_LOG = """\
Epoch: [0][   0/5005]\tTime 12.345 (12.345)\tData 10.123 (10.123)\tLoss 6.9101e+00 (6.9101e+00)\tAcc@1   0.00 (  0.00)
Epoch: [0][  10/5005]\tTime  0.345 ( 1.456)\tData  0.001 ( 0.923)\tLoss 6.9077e+00 (6.9088e+00)\tAcc@1   0.00 (  0.10)
Test: [  0/196]\tTime  3.123 ( 3.123)\tLoss 6.5e+00 (6.5e+00)\tAcc@1   1.17 (  1.17)
 * Acc@1 1.234 Acc@5 5.678
Epoch: [1][   0/5005]\tTime  0.345 ( 0.345)\tData  0.001 ( 0.001)\tLoss 6.5077e+00 (6.5077e+00)\tAcc@1   1.00 (  1.00)
"""
TUTORIAL_LOG = """\
Epoch [1/5], Step [100/600], Loss: 2.2871
Epoch [1/5], Step [200/600], Loss: 2.1021
Epoch [2/5], Step [100/600], Loss: 1.5123
"""


@pytest.mark.parametrize(("text", "expected"), [
    (IMAGENET_LOG, {("train", "loss"): [(0, 6.9101), (10, 6.9077), (5005, 6.5077)], ("test", "loss"): [(10, 6.5)],
                    ("test", "Acc@1"): [(10, 1.234)], ("user", "Acc@1"): [(0, 0.0), (10, 0.0), (5005, 1.0)]}),
    (TUTORIAL_LOG, {("train", "loss"): [(100, 2.2871), (200, 2.1021), (700, 1.5123)]}),
], ids=["imagenet-example", "epoch-of-steps"])
def test_epoch_and_batch_counters_give_the_steps(tmp_path, store_root, text, expected):
    path = tmp_path / "train.log"
    path.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the summary line replaces the last Test batch's Acc@1, as it should
        [result] = import_source("log", store_root, path)
    for (split, name), wanted in expected.items():
        assert points(store_root, result.run_id, split, name) == wanted, (split, name)
    assert Store(store_root).run_meta(result.run_id)["source"]["steps"] == "logged"


def series_names(store_root: Path, run_id: str) -> set[str]:
    scalars = Store(store_root).scalars([run_id])
    return set(scalars["split"] + "/" + scalars["name"])


def test_a_caffe_log_glog_prefixes_and_test_net_outputs(tmp_path, store_root):
    """Caffe (BVLC/caffe#1255): glog's "I1010 17:36:18.47 24907 solver.cpp:191]" prefix was a metric
    named I1010, and "Test net output #0: accuracy" a training accuracy one step early (the
    "Iteration 4000, Testing net" line that names its step holds no metric)."""
    path = tmp_path / "caffe.log"
    path.write_text(
        "I1010 17:36:18.471542 24907 solver.cpp:247] Iteration 0, Testing net (#0)\n"
        "I1010 17:36:51.366374 24907 solver.cpp:298]     Test net output #0: accuracy = 0.00028\n"
        "I1010 17:36:51.521034 24907 solver.cpp:191] Iteration 0, loss = 87.3366\n"
        "I1010 17:36:51.521077 24907 solver.cpp:403] Iteration 0, lr = 0.001\n"
        "I1010 17:40:30.682349 24907 solver.cpp:191] Iteration 1000, loss = 8.26466\n"
        "I1010 17:51:27.956398 24907 solver.cpp:247] Iteration 2000, Testing net (#0)\n"
        "I1010 17:52:00.040813 24907 solver.cpp:298]     Test net output #0: accuracy = 0.00031\n"
        "I1010 17:52:00.188971 24907 solver.cpp:191] Iteration 2000, loss = 8.28462\n")
    [result] = import_source("log", store_root, path)
    assert points(store_root, result.run_id, "train", "loss") == [(0, 87.3366), (1000, 8.26466), (2000, 8.28462)]
    assert points(store_root, result.run_id, "val", "accuracy") == [(0, 0.00028), (2000, 0.00031)]
    assert points(store_root, result.run_id, "train", "lr", "group0") == [(0, 0.001)]
    assert series_names(store_root, result.run_id) == {"train/loss", "train/lr", "val/accuracy"}


def test_a_per_epoch_log_with_its_lr_in_prose_is_one_step_per_epoch(tmp_path, store_root):
    """Time-Series-Library (thuml/Time-Series-Library#294): each epoch prints its losses, then
    "Updating learning rate to 1.68e-24" on a line of its own; the lines took a step each (the losses
    at 1, 3, 5, the lr at 2, 4, 6) and the lr was a user metric. "LR: [0.001]" (a printed list) and a
    logger's "INFO" (read as INF) too."""
    path = tmp_path / "ts.log"
    path.write_text(
        "Epoch: 1 cost time: 3.07\n"
        "Epoch: 1, Steps: 22 | Train Loss: 2779.9 Vali Loss: 2879.7 Test Loss: 2341.6\n"
        "EarlyStopping counter: 1 out of 300\n"
        "Updating learning rate to 1.683058786555822e-24\n"
        "Epoch: 2 cost time: 2.78\n"
        "Epoch: 2, Steps: 22 | Train Loss: 2789.4 Vali Loss: 2913.9 Test Loss: 2341.6\n"
        "Updating learning rate to 1.5147529079002399e-24\n"
        "2024-01-01 10:00:00 trainer INFO: Epoch: 3 | Train Loss: 2774.5, LR: [1e-24]\n")
    [result] = import_source("log", store_root, path)
    assert points(store_root, result.run_id, "train", "loss") == [(1, 2779.9), (2, 2789.4), (3, 2774.5)]
    assert points(store_root, result.run_id, "val", "loss") == [(1, 2879.7), (2, 2913.9)]
    assert points(store_root, result.run_id, "train", "lr", "group0") == [
        (1, 1.683058786555822e-24), (2, 1.5147529079002399e-24), (3, 1e-24)]
    assert not any("trainer" in name or "INF" in name for name in series_names(store_root, result.run_id))


def test_a_pytorch_scheduler_announcing_each_groups_lr(tmp_path, store_root):
    path = tmp_path / "sched.log"
    path.write_text("step 1 loss 2.0\nAdjusting learning rate of group 0 to 1.0000e-03.\n"
                    "Adjusting learning rate of group 1 to 1.0000e-04.\nstep 2 loss 1.5\n")
    [result] = import_source("log", store_root, path)
    assert points(store_root, result.run_id, "train", "lr", "group0") == [(1, 1e-3)]
    assert points(store_root, result.run_id, "train", "lr", "group1") == [(1, 1e-4)]


def test_reduce_lr_on_plateau_announcing_a_reduced_lr(tmp_path, store_root):
    """ReduceLROnPlateau(verbose=True) prints "Epoch 00003: reducing learning rate of group 0 to 1.0000e-04."
    (rowanz/r2c#43): it was read as a metric "to" = 1.0."""
    path = tmp_path / "plateau.log"
    path.write_text("epoch 1 loss 2.0\nepoch 2 loss 1.9\nEpoch 00003: reducing learning rate of group 0 to 1.0000e-04.\n"
                    "epoch 3 loss 1.8\n")
    [result] = import_source("log", store_root, path)
    assert points(store_root, result.run_id, "train", "lr", "group0") == [(3, 1e-4)]  # the epoch it names
    assert not any(name in ("to", "reducing_learning_rate") for name in series_names(store_root, result.run_id))


def test_an_hf_dict_printed_before_the_first_bar_is_kept_below_the_next_bars_step(tmp_path, store_root):
    """A paste that starts mid-run (haotian-liu/LLaVA#918): the first dict, before any bar, took the step
    its two-decimal epoch gave (2565 of 10,485 at epoch 0.24), the next dict's, and one value was lost."""
    path = tmp_path / "llava.log"
    path.write_text(
        "{'loss': 0.6623, 'learning_rate': 0.000176822, 'epoch': 0.24}\n\n"
        " 24%|██▍       | 2564/10485 [3:15:13<10:06:35,  4.59s/it]\n"
        " 24%|██▍       | 2565/10485 [3:15:17<10:03:00,  4.57s/it]\n"
        "{'loss': 0.8022, 'learning_rate': 0.000176802, 'epoch': 0.24}\n\n"
        " 24%|██▍       | 2565/10485 [3:15:17<10:03:00,  4.57s/it]\n"
        " 24%|██▍       | 2566/10485 [3:15:22<10:03:32,  4.57s/it]\n"
        "{'loss': 4.2653, 'learning_rate': 0.000176782, 'epoch': 0.24}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        [result] = import_source("log", store_root, path)
    assert points(store_root, result.run_id, "train", "loss") == [(2564, 0.6623), (2565, 0.8022), (2566, 4.2653)]
