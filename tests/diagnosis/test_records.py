"""Each rule's record says what the rule really does: the data it reads, the severities it emits, its thresholds."""

from __future__ import annotations

import types
from dataclasses import fields
from typing import Any

import numpy as np
import pytest

from traindoctor.diagnosis.engine import EXPLAINED_BY, RECORDS, RULE_MODULES, RULES, collect_records
from traindoctor.diagnosis.records import Evidence, RuleRecord, docstring_sections, rule
from traindoctor.store.run_data import RunData
from tests.diagnosis.factories import confusion_frame, full_run, make_run, noisy_decay, scalar_rows
from tests.diagnosis.setup_cases import setup_cases


class KeyRecorder(dict):
    """A ``task`` or ``env`` dict that notes each key read, as ``task.num_classes``."""

    def __init__(self, data: dict, prefix: str, seen: set[str]):
        super().__init__(data)
        self.prefix, self.seen = prefix, seen

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(f"{self.prefix}.{key}")
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.seen.add(f"{self.prefix}.{key}")
        return super().__getitem__(key)


class RecordingRun(RunData):
    """A run that notes every series it is asked for and every table (confusion, events) read."""

    def __getattribute__(self, name: str) -> Any:
        if name in ("confusion", "events"):
            # RunData's constructor reads its tables (to make them Tables) before ``seen`` is set: not a rule's read.
            seen = object.__getattribute__(self, "__dict__").get("seen")
            if seen is not None:
                seen.add(name)
        return object.__getattribute__(self, name)

    def series(self, name, split="train", layer=None):
        self.seen.add(name)
        return super().series(name, split, layer)

    def has(self, name, split="train"):
        self.seen.add(name)
        return super().has(name, split)

    def layers(self, name, split="train"):
        self.seen.add(name)
        return super().layers(name, split)

    def layer_frame(self, name, split="train"):
        self.seen.add(name)
        return super().layer_frame(name, split)


def recording(run: RunData, seen: set[str]) -> RecordingRun:
    values = {item.name: getattr(run, item.name) for item in fields(RunData)}
    values.update(task=KeyRecorder(run.task, "task", seen), env=KeyRecorder(run.env, "env", seen))
    copy = RecordingRun(**values)
    object.__setattr__(copy, "seen", seen)
    return copy


def _underfit_run() -> RunData:
    """A classifier's flat, poor plateau with train and val close: underfitting reads the train accuracy."""
    loss = np.concatenate([np.linspace(1.1, 0.7, 50), np.full(250, 0.7)])
    return make_run(loss=loss, frames=[scalar_rows("accuracy", np.full(300, 0.6)),
                                       scalar_rows("loss", [0.9, 0.75, 0.7, 0.7], steps=[75, 150, 225, 300],
                                                   split="val")], task={"num_classes": 3})


def _non_finite_run() -> RunData:
    """A transformer classifier with a lone NaN gradient norm (a skipped step), then NaN gradient norms
    and a NaN eval loss to the end: every rule that asks whether the run diverged reads them."""
    grad = np.ones(200)
    grad[50] = np.nan
    grad[150:] = np.nan
    return make_run(loss=noisy_decay(200), frames=[
        scalar_rows("grad_norm", grad), scalar_rows("amp_skipped", np.zeros(200)),
        scalar_rows("lr", np.full(200, 1e-3), layer="group0"),
        scalar_rows("loss", [1.0, 0.9, 0.85, np.nan], steps=[50, 100, 150, 200], split="val")],
        task={"num_classes": 10}, env={"model": {"has_attention": True}})


def _warmup_rebound_run() -> RunData:
    """The loss climbs back while the lr warms up to too high a peak, then falls again as it decays."""
    loss = np.concatenate([np.linspace(2.3, 1.0, 100), np.linspace(1.0, 1.8, 50), np.full(50, 1.8),
                           np.linspace(1.8, 0.4, 200)])
    lr = np.concatenate([np.linspace(1e-4, 1e-2, 200), np.linspace(1e-2, 1e-3, 200)])
    return make_run(loss=loss, frames=[scalar_rows("lr", lr, layer="group0")], task={"num_classes": 10})


def _skipped_by_events_run() -> RunData:
    """AMP skips known only from events: the rule counts them against the loss's steps."""
    return make_run(loss=noisy_decay(100), events=[("amp_step_skipped", "", step) for step in range(10, 40)])


def _named_classes_run() -> RunData:
    """A poor small class among good big ones: both class rules fire and name it."""
    matrix = np.array([[300, 5, 5], [5, 300, 5], [10, 10, 10]])
    return make_run(loss=noisy_decay(100), confusion=confusion_frame(matrix, step=100),
                    task={"num_classes": 3, "class_names": ["cat", "dog", "bird"]})


def _decayed_to_zero_run() -> RunData:
    """lr 0 at every record although the optimizer had lr 0.1 when watched: lr_too_low reads the optimizer
    to leave it to decayed_too_early."""
    return make_run(loss=noisy_decay(50), frames=[scalar_rows("lr", np.zeros(50), layer="group0")],
                    task={"num_classes": 5}, env={"optimizer": {"type": "SGD", "param_groups": [{"lr": 0.1}]}})


def _decayed_at_once_run() -> RunData:
    """An lr x0.1 per record from the second of 18 records: decayed_too_early reads the update/weight ratios
    (still from there on) because no heading of the loss can be read before the decay."""
    steps = np.arange(50, 901, 50)
    ratio_steps = np.arange(25, 901, 25)
    return make_run(loss=np.full(18, 5.13), steps=steps,
                    frames=[scalar_rows("lr", 10.0 * 0.1 ** np.arange(18), steps=steps, layer="group0"),
                            scalar_rows("update_ratio", np.where(ratio_steps < 100, 2e-2, 1e-8), steps=ratio_steps,
                                        layer="fc.weight")])


def _sparse_warmup_run() -> RunData:
    """A log every 12 steps whose first record, 3.6x ln 10, falls in the lr's warm-up: bad_initial_loss reads
    the lr to know the first steps were small."""
    steps = 12 + 12 * np.arange(60)
    loss = np.concatenate([[3.6 * np.log(10)], np.linspace(2.0, 0.3, 59)])
    run = make_run(frames=[scalar_rows("loss", loss, steps=steps),
                           scalar_rows("lr", 3e-3 * np.minimum(1.0, steps / 100), steps=steps)],
                   task={"num_classes": 10})
    run.source = {"kind": "csv", "logging_every": 12}
    return run


RUNS = {"full": full_run(300), "full-resumed": full_run(3000, resumed=True), "underfit": _underfit_run(),
        "non-finite": _non_finite_run(), "warmup-rebound": _warmup_rebound_run(),
        "skipped-by-events": _skipped_by_events_run(), "named-classes": _named_classes_run(),
        "decayed-to-zero": _decayed_to_zero_run(), "decayed-at-once": _decayed_at_once_run(),
        "sparse-warm-up": _sparse_warmup_run(), **{case.run.name: case.run for case in setup_cases()}}


@pytest.mark.parametrize("record", list(RECORDS.values()), ids=list(RECORDS))
def test_declared_inputs_are_what_the_rule_reads(record):
    seen: set[str] = set()
    for run in RUNS.values():
        record.function(recording(run, seen))
    assert sorted(seen) == sorted(record.inputs + record.metadata)


@pytest.mark.parametrize("record", list(RECORDS.values()), ids=list(RECORDS))
def test_emitted_severities_are_declared(record):
    emitted = {finding.severity for run in RUNS.values() for finding in record.function(run)}
    assert emitted <= set(record.severities)
    assert {finding.rule for run in RUNS.values() for finding in record.function(run)} <= {record.id}


def test_records_give_the_engine_its_rules_and_what_explains_them():
    assert RULES == {rule_id: record.function for rule_id, record in RECORDS.items()}
    assert all(RULES[rule_id].__name__ == rule_id for rule_id in RULES)
    assert EXPLAINED_BY["underfitting"][0] == "divergence" and "train_longer" in EXPLAINED_BY
    assert set(EXPLAINED_BY) == {rule_id for rule_id, record in RECORDS.items() if record.explained_by}


# The maps the engine and the dashboard kept by hand before the records: the
# records reproduce them (rule → evidence chart, heatmaps outlining it,
# Classes page).
HAND_KEPT = {
    "no_better_than_baseline": (Evidence.series("accuracy"), (), True),
    "exploding_gradients": (Evidence.series("grad_norm"), ("grad_norm",), False),
    "vanishing_gradients": (Evidence.series("grad_norm"), ("grad_norm",), False),
    "amp_skipped_steps": (Evidence.series("amp_scale"), (), False),
    "update_ratio_out_of_band": (Evidence.heatmap("update_ratio"), ("update_ratio",), False),
    # Since e970cc8 it also outlines still weights (update/weight ratio exactly 0) on the ratio heatmap.
    "dead_layers": (Evidence.heatmap("grad_norm"), ("grad_norm", "update_ratio"), False),
    "lr_too_high": (Evidence.series("loss"), ("update_ratio",), False),
    "lr_too_low": (Evidence.series("loss"), ("update_ratio",), False),
    "eval_mode_during_training": (Evidence.events(), (), False),
    "train_mode_during_eval": (Evidence.events(), (), False),
    "weight_decay_on_norm_and_bias": (Evidence.events(), (), False),
    "adam_hyperparameters": (Evidence.events(), (), False),
    "underperforming_classes": (Evidence.series("loss"), (), True),
    "class_imbalance": (Evidence.series("loss"), (), True),
}


@pytest.mark.parametrize("rule_id", list(RECORDS), ids=list(RECORDS))
def test_records_reproduce_the_hand_kept_dashboard_maps(rule_id):
    record = RECORDS[rule_id]
    expected = HAND_KEPT.get(rule_id, (Evidence.series("loss"), (), False))
    assert (record.evidence, record.heatmaps, record.classes_page) == expected


DEMO_DOCSTRING = """Demo.

    Symptom: s. Likely cause: c.
    Try: t.
    Source: seed 004.
    """


def demo_rule(doc: str = DEMO_DOCSTRING):
    """A fresh rule function (declaring one attaches its record, so no test shares it)."""

    def demo(run: RunData) -> list:
        return []

    demo.__doc__ = doc
    return demo


@pytest.mark.parametrize(("declare", "message"), [
    (lambda: rule(severities=("fatal",), inputs=(), evidence=Evidence.events())(demo_rule()), "severities"),
    (lambda: rule(severities=(), inputs=(), evidence=Evidence.events())(demo_rule()), "severities"),
    (lambda: rule(severities=("info",), inputs=(), evidence=Evidence.heatmap("grad_norm"))(demo_rule()), "outline"),
    (lambda: rule(severities=("info",), inputs=(), evidence=Evidence.events(), heatmaps=("loss",))(demo_rule()),
     "heatmaps"),
    (lambda: rule(severities=("info",), inputs=(), evidence=Evidence.events())(demo_rule("No sections.")),
     "docstring"),
    (lambda: Evidence.heatmap("loss"), "heatmaps"),
    (lambda: Evidence("series"), "needs a name"),
    (lambda: Evidence("table", "loss"), "one of"),
], ids=["unknown-severity", "no-severity", "evidence-heatmap-not-outlined", "unknown-heatmap", "no-sections",
        "heatmap-of-a-global-series", "series-without-name", "unknown-chart"])
def test_a_wrong_declaration_fails_when_the_rule_is_declared(declare, message):
    with pytest.raises(ValueError, match=message):
        declare()


def _rule_module(**declaration: Any) -> types.ModuleType:
    """A stand-in rule module holding one declared ``demo`` rule (collect_records reads vars() and __name__)."""
    function = rule(severities=("info",), inputs=(), evidence=Evidence.events(), **declaration)(demo_rule())
    module = types.ModuleType(function.__module__)
    module.demo = function
    return module


def test_collect_records_refuses_duplicate_ids_and_unknown_causes():
    assert list(collect_records((_rule_module(),))) == ["demo"]
    with pytest.raises(ValueError, match="two rules"):
        collect_records((_rule_module(), _rule_module()))
    with pytest.raises(ValueError, match="do not exist"):
        collect_records((_rule_module(explained_by=("nothing",)),))


def test_collect_records_skips_a_rule_imported_from_another_module():
    module = _rule_module()
    elsewhere = types.ModuleType("elsewhere")
    elsewhere.demo = module.demo
    assert collect_records((module, elsewhere)) == collect_records((module,))



@pytest.mark.parametrize(("doc", "expected"), [
    ("One.\n\nSymptom: a.\nLikely cause: b.\nTry: c.\nSource: d.", ("a.", "b.", "c.", "d.")),
    ("One.\n\nSymptom: a. Likely cause: b. Try: c (e.g. x).\nSource: seed 001 (Try: not a section).",
     ("a.", "b.", "c (e.g. x).", "seed 001 (Try: not a section).")),
    ("One.\n\nSymptom: spans\n    two lines.\nLikely cause: b.\nTry: c.\nSource: d.",
     ("spans two lines.", "b.", "c.", "d.")),
], ids=["one-per-line", "inline-and-in-brackets", "wrapped"])
def test_docstring_sections(doc, expected):
    def function():
        pass

    function.__doc__ = doc
    sections = docstring_sections(function)
    assert tuple(sections.get(name) for name in ("Symptom", "Likely cause", "Try", "Source")) == expected


def test_record_fields_are_documented():
    documented = RuleRecord.__doc__ or ""
    assert [item.name for item in fields(RuleRecord) if f"{item.name}:" not in documented] == []
    assert {record.family for record in RECORDS.values()} == {module.__name__.rsplit(".", 1)[-1]
                                                               for module in RULE_MODULES}
