"""Import a terminal log: what a training script printed, as pasted into a bug report.

Each line is read for ``key value`` pairs in the shapes training code prints:

- HF Trainer's printed dicts: ``{'loss': 2.1, 'grad_norm': nan, 'learning_rate': 5e-05, 'epoch': 0.1}``
  (JSON objects too, numbers as strings included, as fairseq's
  ``--log-format json`` writes them);
- nanoGPT: ``iter 2920: loss 3.9883, time 1099.34ms, mfu 15.34%`` and its
  evaluation line ``step 3000: train loss 4.0390, val loss 4.0427``;
- Megatron-LM: ``iteration 122/ 250000 | ... | learning rate: 9.150E-06 |
  lm loss: 2.504220E+00 | loss scale: 1.0 | grad norm: 0.231 |`` and
  ``validation loss at iteration 1000 | lm loss value: ... |``;
- fairseq: ``| epoch 001:  450 / 1891 loss=11.521, ..., num_updates=445, lr=8.9e-05, gnorm=1.543``;
- MMCV/MMEngine: ``Epoch(train) [1][200/735]  lr: 1.9870e-04  ...  loss: 2.7522  grad_norm: 3.0608``;
- PyTorch's ImageNet example: ``Epoch: [0][ 10/5005]  Time ...  Loss 6.9e+00 (6.9e+00)  Acc@1 0.00 (0.10)``,
  its ``Test: [ 10/196]`` lines and their `` * Acc@1 76.1 Acc@5 92.9`` summary (the test split), and the
  tutorials' ``Epoch [1/5], Step [100/600], Loss: 2.2871``;
- HF Trainer's ``log_metrics`` blocks (``***** eval metrics *****`` then ``  eval_loss = nan`` lines): one
  record, the train block a summary of the run (not a curve point), an eval or test block an evaluation at the
  last step;
- any ``key=value`` and ``key: value`` lines, and tqdm postfixes (``| 943/3280 [18:48<46:37, avr_loss=nan]``);

or, with ``pattern``, a regular expression whose named groups are ``step``,
optionally ``epoch``, and the metrics (``--pattern 'it (?P<step>\\d+) loss (?P<loss>\\S+)'``).
Keys go through the shared name table (``lm loss`` is the loss, ``gnorm``
the gradient norm, ``val loss`` the validation loss).

Steps: a line's step is the first step key it holds (``num_updates`` before
``step`` before ``iteration``/``iter``, see :data:`names.STEP_KEYS`); MMCV's
``Epoch [e][i/n]`` (and ``Epoch [e/E], Step [i/n]``) is step ``(e - 1) * n + i``,
or ``e * n + i`` when the first epoch printed is 0. A line of evaluation metrics
without a step belongs to the step before it. HF Trainer prints no step:
there the count of an unlabelled tqdm bar on or before the line is the step
when the paste has one, else records are numbered and multiplied by the
logging cadence (``log_every``, or ``logging_steps=N`` where the log prints
its TrainingArguments); ``source.steps`` in run.json says which was used.
Lines with no number in a known shape (tracebacks, banners) are skipped.
Steps must be whole numbers within int64, and a step printed more than once
keeps its last value (litgpt prints both micro-batches of an optimizer step):
the import rules of :mod:`traindoctor.store.importers.common`.
"""

from __future__ import annotations

import ast
import codecs
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from traindoctor.store.errors import StoreError
from traindoctor.store.importers.common import (
    Columns, ImportInputError, ParsedRun, Progress, RunSource, quoted, series_from_columns, whole_step,
)
from traindoctor.store.importers.names import STEP_KEYS, MetricKey, map_metric

# Update the progress bar every this many lines (tqdm costs ~1 µs a call).
_PROGRESS_EVERY = 20_000

# A word number is not the start of a word: "INFO" (a logger's level) is no INF with unit "O".
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|(?:nan|NaN|NAN|inf|Inf|INF|Infinity)(?![A-Za-z]))"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# key (up to six words, each starting with a letter; "Acc@1" is one), an optional "(unit)",
# then ":", "=" or a space, then a number, perhaps with a unit ("1099.34ms",
# "15.34%"), not followed by more of a word.
_PAIR = re.compile(
    rf"(?<![\w.\-/@])(?P<key>[A-Za-z][\w./\-@]*(?: [A-Za-z][\w./\-@]*){{0,5}})(?:\s*\((?P<unit>[^()]{{1,20}})\))?"
    rf"\s*(?:[:=]\s*|\s+)(?P<bracket>\[\s*)?(?P<value>{_NUMBER})(?(bracket)\s*\])"
    rf"(?:%|[A-Za-z]{{1,3}}(?:/[A-Za-z]{{1,3}})?)?(?![\w.]|[-:/]\d)"
)
# One entry of a printed dict: 'key': 1.5, "key": "1.5", 'key': np.float64(1.5), 'key': tensor(1.5).
_DICT_ENTRY = re.compile(
    rf"(?P<quote>['\"])(?P<key>[^'\"]+)(?P=quote)\s*:\s*(?:[A-Za-z_][\w.]*\(\s*)?(?P<vq>['\"]?)(?P<value>{_NUMBER})(?P=vq)"
    r"\s*(?:,\s*(?:device|dtype)=[^)]*)?\)?\s*(?=[,}])"
)
_DICT_START = re.compile(r"\{\s*['\"][^'\"]+['\"]\s*:")
# tqdm: "label: 29%|█▋   | 943/3280 [18:48<46:37,  1.20s/it, avr_loss=nan]"
_TQDM = re.compile(r"(?P<label>[^|\r\n]*?)\s*(?P<percent>\d{1,3})%\|[^|]*\|\s*(?P<count>\d+)/(?P<total>\d+)\s*"
                   r"(?:\[(?P<meta>[^\]]*)\])?")
_TQDM_STEP_LABEL = re.compile(r"^(?:|steps?|iters?|iterations?|train(?:ing)?)$", re.IGNORECASE)
# MMCV/MMEngine: "Epoch [1][100/62598]", "Epoch(train) [1][200/735]", "Iter(train) [  200/80000]", "Epoch(val) [1][5/5]".
# PyTorch's ImageNet example (pytorch/examples) prints "Epoch: [0][ 10/5005]", its epochs from 0.
_MM_EPOCH = re.compile(r"\bEpoch(?:\((?P<mode>\w+)\))?:?\s*\[\s*(?P<epoch>\d+)\s*\]\s*\[\s*(?P<inner>\d+)\s*/\s*(?P<total>\d+)\s*\]")
# The tutorials' "Epoch [1/5], Step [100/600], Loss: 2.2871" (also "Epoch 1/5 Batch 100/600").
_EPOCH_OF_STEP = re.compile(r"\bEpoch\s*:?\s*\[?\s*(?P<epoch>\d+)\s*/\s*(?P<epochs>\d+)\s*\]?\s*[,|]?\s*"
                            r"(?:Step|Batch|Iter(?:ation)?)\s*:?\s*\[?\s*(?P<inner>\d+)\s*/\s*(?P<total>\d+)\s*\]?",
                            re.IGNORECASE)
# An epoch counter with no step after it: "Epoch [  1/50] loss: 0.9", "Epoch 3/50 - loss: 0.7" (a per-epoch log).
_EPOCH_FRACTION = re.compile(r"\bEpoch\s*:?\s*\[?\s*(?P<epoch>\d+)\s*/\s*(?P<epochs>\d+)\s*\]?", re.IGNORECASE)
# Keras 2's announcement "Train on 40000 samples, validate on 10000 samples": counts, not metrics.
_KERAS_SAMPLES = re.compile(r"^\s*Train on \d+ samples(?:, validate on \d+ samples)?\s*$")
# An evaluation's progress line in the same style: "Test: [ 10/196]" (the ImageNet example), "Val: [3/50]".
_EVAL_PROGRESS = re.compile(r"^\s*(?P<mode>Test|Val|Valid|Validation|Eval)\s*:?\s*\[\s*\d+\s*/\s*\d+\s*\]",
                            re.IGNORECASE)
# ... and the line that sums it up there: " * Acc@1 76.130 Acc@5 92.862".
_EVAL_SUMMARY = re.compile(r"^\s*\*\s+[A-Za-z]")
# The PyTorch examples' epoch summary: "Test set: Average loss: 0.0490, Accuracy: 9843/10000 (98%)" (mnist,
# and the many scripts copied from it, some with a "Train set:" line too): the split from its prefix, the
# accuracy from its counts, "Average loss" the loss.
_SET_SUMMARY = re.compile(r"^\s*(?P<mode>Train|Training|Test|Val|Valid|Validation|Eval)\s+set\s*:", re.IGNORECASE)
_COUNT_ACCURACY = re.compile(r"(?i)\bacc(?:uracy)?\s*:?\s*(?P<correct>\d+)\s*/\s*(?P<total>\d+)"
                             r"(?:\s*\(\s*[\d.]+\s*%\s*\))?")
# glog's line prefix (Caffe, many C++ trainers): "I1010 17:36:18.471521 24907 solver.cpp:191] ".
_GLOG_PREFIX = re.compile(r"^[IWEF]\d{4} \d{2}:\d{2}:\d{2}\.\d+\s+\d+\s+[\w./-]+:\d+\]\s?")
# Caffe's evaluation during training: "Test net output #0: accuracy = 0.00028" (the TEST phase's net).
_CAFFE_TEST_OUTPUT = re.compile(r"\bTest net output #\d+:\s*")
# An lr announced in prose: "Updating learning rate to 1.7e-24" (Time-Series-Library, Informer),
# "Adjusting learning rate of group 0 to 1.0000e-03." (PyTorch's schedulers, verbose=True), "Epoch 00012:
# reducing learning rate of group 0 to 1.0000e-04." (ReduceLROnPlateau, verbose=True).
_PROSE_LR = re.compile(r"(?i)\b(?:updating|adjusting|setting|changing|reducing|set|new|current)\s+(?:the\s+)?"
                       r"(?:learning rate|lr)"
                       r"(?:\s+of\s+group\s+(?P<group>\d+))?\s+(?:to|is|now|:|=)\s*(?P<value>" + _NUMBER + r")")
_MM_ITER = re.compile(r"\bIter(?:\((?P<mode>\w+)\))?\s*\[\s*(?P<step>\d+)\s*/\s*(?P<total>\d+)\s*\]")
# Megatron-LM's evaluation line: " validation loss at iteration 1000 | lm loss value: 2.3E+00 | lm loss PPL: 10.4 |"
_MEGATRON_VALIDATION = re.compile(r"\bvalidation loss at (?:iteration\s+)?(?P<step>\d+)")
# HF TrainingArguments as printed: "logging_steps=500,"
_LOGGING_STEPS = re.compile(r"\blogging_steps\s*[=:]\s*(\d+)")
# HF Trainer's start-of-training banner ("  Num Epochs = 3", "  Total optimization steps = 240")
# and its TrainingArguments(...) block, one "name=value," a line: the run's set-up, kept as config.
_HF_BANNER = re.compile(r"^\s+(?P<key>[A-Z][A-Za-z ,.()&/-]*?)\s+=\s+(?P<value>[\d,]+(?:\.\d+)?)\s*$")
_ARGUMENTS_START = re.compile(r"\b\w*TrainingArguments\($")
_ARGUMENT = re.compile(r"^\s*(?P<key>\w+)=(?P<value>.*?),?\s*$")
_EVAL_MODES = {"val": "val", "valid": "val", "validation": "val", "eval": "val", "test": "test"}
_SUMMARY_MODES = {"train": "train", "training": "train", **_EVAL_MODES}  # _SET_SUMMARY's prefixes
_STEP_WORDS = {key.lower() for key in STEP_KEYS}
# Numbers printed as "key: value" that are no metric: an ETA ("eta: 6 days,
# 15:22:46" reads as 6) and Lightning's logger version.
_NOT_METRICS = {"eta", "v_num"}
# A logger's source location ("train_util.py:779") is no metric either.
_SOURCE_LOCATION = re.compile(r"\.(?:py|pyx|c|cc|cpp|h|cu|rs|go|js|ts)$")
# HF Trainer's end-of-training dict (train_runtime, train_loss = the run's mean loss): not a curve point.
_HF_SUMMARY_MARK = "train_runtime"
# HF Trainer's log_metrics() block: "***** train metrics *****", then one "  key = value" line per metric.
# The block is one record: the run's summary for train (train_loss is the mean over the run), an
# evaluation at the last step for eval/test.
_METRICS_HEADER = re.compile(r"^\s*\*{3,}\s*(?P<split>\w+) metrics\s*\*{3,}\s*$")
_METRICS_ENTRY = re.compile(r"^\s+(?P<key>\w+)\s+=\s+(?P<value>\S+)\s*$")


@dataclass
class LogRecord:
    """The numbers one line holds, before steps are settled."""

    line: int
    pairs: list[tuple[str, float]]
    step: int | None = None
    epoch: float | None = None
    split: str | None = None  # a split the line's shape names (Megatron's validation line)
    bar_step: int | None = None  # the count of the tqdm bar on or before it
    summary: bool = False


def discover(path: Path, run_name: str | None, pattern: str | None = None, log_every: int | None = None) -> list[RunSource]:
    if path.is_dir():
        raise StoreError(f"{path} is a folder: import log takes one log file")
    if pattern is not None:
        _compile(pattern)
    if log_every is not None and int(log_every) < 1:
        raise StoreError(f"--log-every must be a positive integer, got {log_every}")
    return [RunSource(name=run_name or path.stem, path=path, files=[path], handle={"pattern": pattern, "log_every": log_every})]


def _compile(pattern: str) -> re.Pattern:
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise StoreError(f"--pattern is not a valid regular expression: {error}") from None
    metrics = [name for name in compiled.groupindex if name not in ("step", "epoch")]
    if not metrics:
        raise StoreError("--pattern needs a named group for at least one metric, e.g. (?P<loss>\\S+)")
    return compiled


def _literal(text: str) -> Any:
    """A printed setting as the value it was (numbers, True, None, lists), else the text."""
    try:
        return ast.literal_eval(text)  # literals only, never code
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _key(raw: str, unit: str | None) -> str:
    """A printed key as a metric tag: words joined by '_' ("grad norm" → grad_norm), a unit kept as a suffix."""
    key = "_".join(raw.split()) if " " in raw else raw
    if unit:
        key += "_" + re.sub(r"\W+", "_", unit).strip("_")
    return key


def _pairs(text: str) -> list[tuple[str, float]]:
    return [(_key(m.group("key"), m.group("unit")), float(m.group("value"))) for m in _PAIR.finditer(text)]


def _dict_pairs(text: str) -> list[tuple[str, float]]:
    # float() reads nan, inf and Infinity in any case.
    return [(m.group("key"), float(m.group("value"))) for m in _DICT_ENTRY.finditer(text)]


_METRIC, _IGNORED = object(), object()


def _role(key: str) -> Any:
    """A printed key is a step key (its lower-case spelling), the epoch, ignored, or a metric."""
    lowered = key.lower()
    if lowered in _STEP_WORDS or lowered == "epoch":
        return lowered
    if lowered in _NOT_METRICS or _SOURCE_LOCATION.search(lowered):
        return _IGNORED
    return _METRIC


class _Reader:
    """Reads lines into LogRecords, carrying the state that spans lines (tqdm bar, last epoch)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bar_step: int | None = None
        self._bar_total = 0
        self.epoch: float | None = None
        self.config: dict[str, Any] = {}
        self._in_arguments = False
        self._roles: dict[str, Any] = {}  # key → what it is (see _role), worked out once per key
        self._block: LogRecord | None = None  # an open HF log_metrics() block
        self._epoch_base: int | None = None  # 0 when the first "Epoch [e]…" printed is epoch 0, else 1
        self._evaluating: str | None = None  # the split of the evaluation progress lines being read

    def read(self, number: int, line: str) -> list[LogRecord]:
        records = []
        if self._block is not None:
            entry = _METRICS_ENTRY.match(line)
            if entry:
                self._block_entry(entry.group("key"), entry.group("value"))
                return []
            records += self.finish()
        if "metrics" in line and "***" in line:
            header = _METRICS_HEADER.match(_ANSI.sub("", line))
            if header:
                # train metrics are the run's summary (means, totals); eval/test metrics an evaluation.
                self._block = LogRecord(line=number, pairs=[], summary=header.group("split").lower() == "train")
                return records
        if self._set_up(line):
            return records
        # A log written through a terminal keeps tqdm's carriage-return updates on one line.
        for part in line.split("\r"):
            record = self._segment(number, _ANSI.sub("", part) if "\x1b" in part else part)
            if record is not None:
                records.append(record)
        return records

    def _block_entry(self, key: str, value: str) -> None:
        try:
            number = float(value)  # nan and inf included; "2:05:47.06" (a runtime) is no number
        except ValueError:
            return
        assert self._block is not None
        self._block.pairs.append((key, number))

    def finish(self) -> list[LogRecord]:
        """The record of a log_metrics() block still open (at a line that is not one of its entries, or the end)."""
        block, self._block = self._block, None
        if block is None:
            return []
        summary = block.summary
        settled = self._settle(block)
        if settled is None:
            return []
        settled.summary = summary
        return [settled]

    def _set_up(self, line: str) -> bool:
        """Read HF Trainer's banner and printed TrainingArguments into the config; True for such a line."""
        if not self._in_arguments and " = " not in line and "Arguments(" not in line:
            return False  # the common case, decided without a regular expression
        text = _ANSI.sub("", line).rstrip()
        if self._in_arguments:
            if text.strip() == ")":
                self._in_arguments = False
                return True
            argument = _ARGUMENT.match(text)
            if argument:
                self.config[argument.group("key")] = _literal(argument.group("value"))
                return True
            self._in_arguments = False
        if _ARGUMENTS_START.search(text):
            self._in_arguments = True
            return True
        banner = _HF_BANNER.match(text)
        if banner:
            key = "_".join(re.sub(r"\(.*?\)", "", banner.group("key")).lower().split())
            self.config[key] = _literal(banner.group("value").replace(",", ""))
            return True
        return False

    def _tqdm(self, text: str) -> tuple[str, list[tuple[str, float]]]:
        """Take tqdm bars out of ``text``: note their step, return the rest and the bars' postfix pairs."""
        postfix: list[tuple[str, float]] = []
        for match in _TQDM.finditer(text):
            label = match.group("label").strip().rstrip(":").strip()
            count, total = int(match.group("count")), int(match.group("total"))
            if _TQDM_STEP_LABEL.match(label) and total >= self._bar_total:
                # The training bar counts optimizer steps; an evaluation bar (fewer batches) does not.
                self._bar_total = total
                self.bar_step = count
            epoch = re.match(r"(?i)epoch\s+(\d+)", label)
            if epoch:
                self.epoch = float(epoch.group(1))
            meta = match.group("meta") or ""
            postfix += [(k, v) for k, v in _pairs(meta) if "=" in meta]
        return _TQDM.sub(" | ", text), postfix

    def _segment(self, number: int, text: str) -> LogRecord | None:
        if text[:1] in "IWEF" and text[1:2].isdigit():
            text = _GLOG_PREFIX.sub("", text, count=1)
        if "%|" in text:
            text, pairs = self._tqdm(text)
        else:
            pairs = []
        record = LogRecord(line=number, pairs=pairs)
        dict_start = _DICT_START.search(text) if "{" in text else None
        if dict_start:
            entries = _dict_pairs(text[dict_start.start():])
            record.pairs += entries
            record.summary = any(key == _HF_SUMMARY_MARK for key, _ in entries)
            text = text[:dict_start.start()]
        if text[:1] == "T" and _KERAS_SAMPLES.match(text):
            return None
        mm = _MM_EPOCH.search(text) if "Epoch" in text and "[" in text else None
        mm = mm or (_EPOCH_OF_STEP.search(text) if "poch" in text and "/" in text else None)
        epoch_only = _EPOCH_FRACTION.search(text) if not mm and "poch" in text and "/" in text else None
        if epoch_only:
            record.epoch = float(epoch_only.group("epoch"))
            text = text[:epoch_only.start()] + " | " + text[epoch_only.end():]
        if mm:
            mode = ((mm.groupdict().get("mode")) or "train").lower()
            record.epoch = float(mm.group("epoch"))
            if mode == "train":
                record.step = self._epoch_step(int(mm.group("epoch")), int(mm.group("inner")), int(mm.group("total")))
            else:
                record.split = _EVAL_MODES.get(mode, mode)
            text = text[:mm.start()] + " | " + text[mm.end():]
        evaluation = _EVAL_PROGRESS.match(text) if "[" in text else None
        if evaluation:
            record.split = self._evaluating = _EVAL_MODES.get(evaluation.group("mode").lower(), "val")
            text = " | " + text[evaluation.end():]
        elif self._evaluating and _EVAL_SUMMARY.match(text):
            record.split = self._evaluating  # " * Acc@1 76.130 Acc@5 92.862" closes the evaluation
        elif mm:
            self._evaluating = None
        mm_iter = _MM_ITER.search(text) if "Iter" in text else None
        if mm_iter:
            mode = (mm_iter.group("mode") or "train").lower()
            if mode == "train":
                record.step = int(mm_iter.group("step"))
            else:
                record.split = _EVAL_MODES.get(mode, mode)
            text = text[:mm_iter.start()] + " | " + text[mm_iter.end():]
        summary = _SET_SUMMARY.match(text) if " set" in text else None
        if summary:
            record.split = _SUMMARY_MODES[summary.group("mode").lower()]
            text = " | " + text[summary.end():]
        counts = _COUNT_ACCURACY.search(text) if "/" in text else None
        if counts and int(counts.group("total")) > 0:
            record.pairs.append(("accuracy", int(counts.group("correct")) / int(counts.group("total"))))
            text = text[:counts.start()] + " | " + text[counts.end():]
        caffe_test = _CAFFE_TEST_OUTPUT.search(text) if "Test net output" in text else None
        if caffe_test:
            record.split = "val"
            text = text[caffe_test.end():]
        prose_lr = _PROSE_LR.search(text) if ("earning rate" in text or "lr" in text) else None
        if prose_lr:
            group = prose_lr.group("group")
            # Lightning's spelling of a param group's lr (pg1 is group 0): the name table reads it.
            record.pairs.append(("lr" if group in (None, "0") else f"lr-optimizer/pg{int(group) + 1}", float(prose_lr.group("value"))))
            text = text[:prose_lr.start()] + " | " + text[prose_lr.end():]
        validation = _MEGATRON_VALIDATION.search(text) if "validation loss at" in text else None
        if validation:
            record.step = int(validation.group("step"))
            record.split = "val"
            text = text[validation.end():]
            # "lm loss value: 2.3E+00" is the validation lm loss; its PPL stays a metric of its own.
            record.pairs += [(key[: -len("_value")] if key.endswith("_value") else key, value) for key, value in _pairs(text)]
        else:
            record.pairs += _pairs(text)
        return self._settle(record)

    def _epoch_step(self, epoch: int, inner: int, total: int) -> int:
        """The optimizer step of batch ``inner`` of ``total`` in ``epoch``: epochs count from 1 (MMCV,
        "Epoch [1/5]") unless the first one printed is epoch 0 (the ImageNet example)."""
        if self._epoch_base is None:
            self._epoch_base = 0 if epoch == 0 else 1
        return (epoch - self._epoch_base) * total + inner

    def _settle(self, record: LogRecord) -> LogRecord | None:
        """Move step and epoch keys out of the pairs; None when no metric is left."""
        metrics = []
        step_keys: dict[str, float] = {}
        roles = self._roles
        for key, value in record.pairs:
            role = roles.get(key)
            if role is None:
                role = roles[key] = _role(key)
            if role is _METRIC:
                metrics.append((key, value))
            elif role == "epoch":
                record.epoch = value
            elif role is not _IGNORED:
                step_keys.setdefault(role, value)
        if record.step is None:
            for key in STEP_KEYS:
                if key in step_keys:
                    record.step = whole_step(step_keys[key], f"{self.path} line {record.line}")
                    break
        if record.epoch is not None:
            self.epoch = record.epoch
        if not metrics:
            # A line that names its step and holds no metric ("Iteration 4000, Testing net (#0)", as
            # Caffe announces an evaluation) is kept as a marker: the step-less lines after it are at it.
            if record.step is not None and not record.split:
                record.pairs = []
                return record
            return None
        record.pairs = metrics
        record.epoch = self.epoch if record.epoch is None else record.epoch
        record.bar_step = self.bar_step
        return record


def _pattern_records(path: Path, lines: list[str], pattern: re.Pattern) -> list[LogRecord]:
    records = []
    for number, line in enumerate(lines, start=1):
        match = pattern.search(line)
        if not match:
            continue
        groups = {name: value for name, value in match.groupdict().items() if value is not None}
        pairs = []
        for name, value in groups.items():
            if name in ("step", "epoch"):
                continue
            try:
                pairs.append((name, float(value)))
            except ValueError:
                raise ImportInputError(f"{path} line {number}: group {name!r} matched {quoted(value)}, not a number") from None
        if not pairs:
            continue
        record = LogRecord(line=number, pairs=pairs)
        if "step" in groups:
            try:
                step = int(groups["step"]) if groups["step"].strip().isdigit() else float(groups["step"])
            except ValueError:
                raise ImportInputError(f"{path} line {number}: group 'step' matched {quoted(groups['step'])}, "
                                       "not a number") from None
            record.step = whole_step(step, f"{path} line {number}")
        if "epoch" in groups:
            record.epoch = float(groups["epoch"])
        records.append(record)
    return records


def _is_evaluation(record: LogRecord) -> bool:
    """All of a record's metrics belong to an evaluation split (HF's eval dict, a val line)."""
    if record.split in ("val", "test"):
        return True
    return all(map_metric(key).split in ("val", "test") for key, _ in record.pairs)


def _steps_per_epoch(records: list[LogRecord]) -> float | None:
    """Optimizer steps per epoch from the training records that came right after a new tqdm bar and
    print an epoch (HF's dicts do): the median of bar count / epoch; None without such a record."""
    rates = []
    seen: int | None = None
    for record in records:
        if record.bar_step is None or record.bar_step == seen or _is_evaluation(record):
            continue
        seen = record.bar_step
        if record.epoch is not None and record.epoch > 0 and record.bar_step > 0:
            rates.append(record.bar_step / record.epoch)
    return float(statistics.median(rates)) if rates else None


def _next_bar_steps(records: list[LogRecord]) -> dict[int, int]:
    """Index -> the bar count of the first later training record under another bar than its own."""
    found: dict[int, int] = {}
    nearest: int | None = None  # the bar of the nearest later training record that has one
    beyond: int | None = None  # the nearest later bar other than ``nearest``
    for index in range(len(records) - 1, -1, -1):
        record = records[index]
        after = nearest if nearest != record.bar_step else beyond
        if after is not None:
            found[index] = after
        if record.bar_step is not None and not _is_evaluation(record) and record.bar_step != nearest:
            nearest, beyond = record.bar_step, nearest
    return found


def _assign_steps(records: list[LogRecord], log_every: int) -> str:
    """Give every record a step (see the module doc); returns how steps were found, for run.json."""
    logged = any(r.step is not None for r in records if r.pairs)
    if not logged:
        records = [r for r in records if r.pairs]  # step markers only matter between logged steps
    from_bar = not logged and any(r.bar_step is not None for r in records)
    per_epoch = _steps_per_epoch(records) if from_bar else None
    counter = 0
    last: int | None = None
    used_bar: int | None = None
    group_epoch: float | None = None
    group_names: set = set()
    next_bar = _next_bar_steps(records) if per_epoch is not None else {}
    # A log of evaluations only (a --pattern that takes the "Test set:" line, the validation line of each
    # epoch) has no training record to hang them on: each is a record of its own, not all at the first step.
    only_evaluations = not logged and all(_is_evaluation(r) or r.summary for r in records if r.pairs)
    for index, record in enumerate(records):
        if record.step is not None:
            last = record.step
            continue
        if logged:
            # A line without a step between lines with one: the step before it (the first, at the start).
            record.step = last if last is not None else next(r.step for r in records if r.step is not None)
            continue
        # A training record with no bar since the last one, or none yet (HF prints its dicts with the
        # epoch, and a log may keep only some of tqdm's lines): the step its epoch gives, at the bar's rate.
        by_epoch = (from_bar and per_epoch is not None and record.epoch is not None and not _is_evaluation(record)
                    and not record.summary and (record.bar_step is None or record.bar_step == used_bar))
        if by_epoch:
            # Below the step of the next bar (a printed epoch has two decimals: 0.24 of 10,687
            # steps per epoch is any of a hundred steps), above the step before.
            estimate = round(record.epoch * per_epoch)
            ceiling = next_bar.get(index)
            if ceiling is not None:
                estimate = min(estimate, ceiling - 1)
            record.step = last = max(estimate, (last or 0) + 1)
            continue
        if from_bar and record.bar_step is not None:
            record.step = last = used_bar = record.bar_step
            continue
        if only_evaluations or not (_is_evaluation(record) or record.summary) or last is None:
            names = {map_metric(key) for key, _ in record.pairs}
            if (record.epoch is not None and record.epoch == group_epoch and float(record.epoch).is_integer()
                    and names.isdisjoint(group_names) and last is not None):
                # Lines of one epoch holding different metrics (a per-epoch log: "Epoch: 5 | Train Loss …",
                # then "Updating learning rate to …") are one record, not one step each.
                group_names |= names
                record.step = last
                continue
            group_epoch, group_names = record.epoch, names
            counter += 1
            last = counter * log_every
        record.step = last
    if logged:
        return "logged"
    if from_bar:
        return "tqdm bar count"
    if log_every == 1:
        return "record numbers: the log prints no step"
    return f"record number × {log_every} (logging cadence)"


# Bytes of a log's start searched for a NUL: text never holds one, binary files almost always do.
_BINARY_SNIFF_BYTES = 65536


def log_text(path: Path, data: bytes) -> str:
    """The text of a terminal log's bytes: UTF-8 (bytes that are not become U+FFFD), or UTF-16
    when a byte-order mark says so (PowerShell's ``python train.py > train.log`` writes UTF-16LE).

    Raises:
        ImportInputError: the file holds a NUL byte in its first 64 KiB and no UTF-16 mark: a
            binary file (a database, a checkpoint, a gzipped log), whose stray ``key: value``
            bytes would otherwise import as metrics, and on a re-import replace a good run.
    """
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    if b"\x00" in data[:_BINARY_SNIFF_BYTES]:
        hint = " (gzip: decompress it first)" if data.startswith(b"\x1f\x8b") else ""
        raise ImportInputError(f"{path} is a binary file, not a text log{hint}")
    return data.decode("utf-8-sig" if data.startswith(codecs.BOM_UTF8) else "utf-8", errors="replace")


# A log is read as a training log when it prints its steps (a step key, a tqdm
# bar), or gives a metric the names map (loss, accuracy, lr, grad_norm, any
# train/val/eval/test key) or one whose name holds "loss" (kohya's avr_loss),
# or prints one key at this many steps (a reward, a perplexity). Otherwise any
# text of "word number" lines reads as key/value pairs: /etc/services gave 275
# one-off "metrics" (its most repeated name, echo, 3 times) and imported as a
# run that recorded nothing.
_MIN_REPEATS_OF_A_METRIC = 5


def _reads_as_training_log(series: list, steps: str) -> bool:
    """Whether what a log gave looks like a training log's (see above); ``steps`` is
    :func:`_assign_steps`' account of where the steps came from."""
    if not steps.startswith("record number"):
        return True
    return any(one.key.split != "user" or "loss" in one.key.name.lower()
               or len(np.unique(one.step)) >= _MIN_REPEATS_OF_A_METRIC for one in series)


def parse(source: RunSource, progress: Progress) -> ParsedRun:
    path = source.path
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImportInputError(f"unreadable file {path}: {error.strerror or error}") from None
    text = log_text(path, data)
    options = source.handle or {}
    lines = text.split("\n")
    config: dict[str, Any] = {}
    if options.get("pattern") is not None:
        records = _pattern_records(path, lines, _compile(options["pattern"]))
    else:
        reader = _Reader(path)
        config = reader.config
        records = []
        position = 0
        for number, line in enumerate(lines, start=1):
            position += len(line) + 1  # characters: the bar's bytes, near enough
            if number % _PROGRESS_EVERY == 0:
                progress.advance(path, min(position, len(data)))
            records += reader.read(number, line)
        records += reader.finish()
    log_every = options.get("log_every")
    notes = []
    if log_every is None:
        printed = _LOGGING_STEPS.search(text)
        log_every = int(printed.group(1)) if printed else 1
        if printed:
            notes.append(f"logging cadence {log_every} from the printed logging_steps")
    if config:
        notes.append("config from the printed HF Trainer banner and TrainingArguments")
    steps = _assign_steps(records, int(log_every))
    records = [record for record in records if record.pairs]  # the step markers have done their work
    progress.advance(path, len(data))

    columns = Columns()
    epochs = Columns()
    for record in records:
        for key, value in record.pairs:
            if record.summary:
                tag: str | MetricKey = MetricKey("user", key)
            elif record.split and map_metric(key).split not in ("val", "test"):
                tag = f"{record.split}/{key}"
            else:
                tag = key
            columns.add(tag, record.step, value)
        if record.epoch is not None and not math.isnan(record.epoch):
            epochs.add("epoch", record.step, record.epoch)
    epoch_columns = epochs.arrays().get("epoch")
    series = series_from_columns(
        columns.arrays(),
        epoch_steps=None if epoch_columns is None else epoch_columns[0],
        epoch_values=None if epoch_columns is None else epoch_columns[1],
    )
    if series and options.get("pattern") is None and not _reads_as_training_log(series, steps):
        raise ImportInputError(
            f"{path} reads as no training log: no step, no loss, accuracy or lr, and no value printed "
            f"{_MIN_REPEATS_OF_A_METRIC} times or more (for another format pass --pattern REGEX)")
    return ParsedRun(source=source, series=series, config=config, env={"logger": "terminal log"},
                     extra_source={"steps": steps, "notes": notes, "pattern": options.get("pattern")})
