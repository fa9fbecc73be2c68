"""Live diagnosis: the window answers as the rows do, each finding once, and live agrees with the finished run."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from traindoctor.diagnosis import diagnose
from traindoctor.diagnosis.common import layer_values
from traindoctor.diagnosis.engine import RECORDS
from traindoctor.diagnosis.finding import Finding
from traindoctor.diagnosis.live import (
    LIVE_RULES,
    LIVE_SERIES,
    HistoryWindow,
    LiveDiagnosis,
    SeenFindings,
    finding_from_detail,
    live_findings,
    replay,
    reportable,
    unconfirmed,
)
from traindoctor.store.frames import Curve
from traindoctor.store.reader import Store
from traindoctor.store.run_data import LayerFrame, RunData, load_run
from tests.diagnosis.factories import full_run

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_runs" / "store"
CORPUS = REPO / "tests" / "data" / "corpus"
# The sample runs' problems a live check must raise (the benchmark's scenarios), by run name.
LIVE_SCENARIOS = {
    "divergence": {"divergence", "exploding_gradients"},
    "exploding-gradients": {"exploding_gradients"},
    "loss-spikes": {"loss_spike"},
    "lr-too-high": {"lr_too_high"},
    "forgot-model-train": {"eval_mode_during_training"},
}
HEALTHY_SAMPLES = ["healthy-mlp-adamw", "healthy-mlp-sgd", "healthy-cnn", "transformer-warmup", "sweep-lr-0.003",
                   "sweep-lr-0.03"]


def _finding(rule: str, severity: str = "warning", start: int | None = 10, end: int | None = 20, title: str = "t",
             **evidence) -> Finding:
    return Finding(rule=rule, severity=severity, title=title, message="m", advice="a", step_start=start,
                   step_end=end, evidence=evidence)


def test_the_live_rules_are_the_ones_that_need_only_recorded_history():
    assert sorted(LIVE_RULES) == sorted([
        "divergence", "loss_spike", "lr_too_high", "exploding_gradients", "vanishing_gradients",
        "update_ratio_out_of_band", "amp_skipped_steps", "eval_mode_during_training", "train_mode_during_eval"])


# ------------------------------------------------------------------ the window


def _feed(window: HistoryWindow, run: RunData, every: int) -> None:
    """Hand a window a run's values in flush-sized chunks, as the probe does."""
    live = LiveDiagnosis(window=window)
    replay(run, every_steps=every, live=_NoChecks(live))


class _NoChecks:
    """A LiveDiagnosis stand-in that takes the values and judges nothing (replay's feeding only)."""

    def __init__(self, live: LiveDiagnosis) -> None:
        self.live = live

    def add_scalars(self, **columns):
        self.live.add_scalars(**columns)

    def add_event(self, *args, **kwargs):
        self.live.add_event(*args, **kwargs)

    def check(self):
        return []


def assert_same_curve(got: Curve, expected: Curve) -> None:
    """Same type, name, steps and values (dtypes included; NaN equals NaN)."""
    assert type(got) is type(expected) is Curve and got.name == expected.name
    assert got.index.dtype == expected.index.dtype and got.dtype == expected.dtype
    np.testing.assert_array_equal(got.index.to_numpy(), expected.index.to_numpy())
    np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())


def assert_same_layer_frame(got: LayerFrame, expected: LayerFrame) -> None:
    """Same steps, layers and grid (dtypes and shapes included; NaN equals NaN)."""
    assert type(got) is type(expected) is LayerFrame and got.columns == expected.columns
    assert got.index.dtype == expected.index.dtype and got.values.dtype == expected.values.dtype
    np.testing.assert_array_equal(got.index, expected.index)
    assert got.values.shape == expected.values.shape
    np.testing.assert_array_equal(got.values, expected.values)


@pytest.mark.parametrize("sizes", [dict(), dict(loss_head=8, records=40, layer_records=4, events=2)],
                         ids=["everything-kept", "evicting"])
def test_the_window_run_answers_as_runddata_computes_from_its_rows(sizes):
    window = HistoryWindow(**sizes)
    _feed(window, full_run(300), every=16)
    run = window.run_data(task={"num_classes": 2})
    # Oracle: a plain RunData over the very same long rows.
    plain = RunData(run_id="plain", name="plain", scalars=run.scalars, events=run.events)
    keys = dict.fromkeys(zip(run.scalars["split"].tolist(), run.scalars["name"].tolist(),
                             run.scalars["layer"].tolist()))
    assert len(keys) > 10
    for split, name, layer in keys:
        layer = None if layer is None or layer != layer else layer
        assert_same_curve(run.series(name, split, layer), plain.series(name, split, layer))
        assert run.has(name, split) == plain.has(name, split)
    for name in ("grad_norm", "update_ratio", "weight_norm", "loss", "lr"):
        assert run.layers(name) == plain.layers(name)
        assert_same_layer_frame(run.layer_frame(name), plain.layer_frame(name))
    for name in ("grad_norm", "update_ratio"):
        assert_same_layer_frame(layer_values(run, name), layer_values(plain, name))


def test_the_window_keeps_the_first_losses_and_the_recent_ones():
    window = HistoryWindow(loss_head=3, records=5)
    window.add_scalars(step=np.arange(1, 21), name="loss", value=np.arange(1.0, 21.0))
    assert window.run_data().series("loss").index.tolist() == [1, 2, 3, 16, 17, 18, 19, 20]


def test_the_window_stays_bounded_however_long_the_run():
    window = HistoryWindow()
    layers = tuple(f"layer{i}.weight" for i in range(10))
    for start in range(1, 50_001, 500):
        steps = np.arange(start, start + 500)
        for name in ("loss", "grad_norm", "amp_scale", "amp_skipped", "accuracy"):
            window.add_scalars(step=steps, name=name, value=1.0)
        window.add_scalars(step=np.repeat(steps, 2), name="lr", value=1e-3, layer=("group0", "group1") * 500)
        window.add_scalars(step=int(steps[0]), name="update_ratio", layer=layers, value=1e-3)
        for offset in range(3):
            window.add_event("amp_step_skipped", "", step=int(steps[offset]))
    run = window.run_data()
    # 128 first losses; 896 recent values of each global series the live rules read (accuracy is not one) and
    # of each lr group when they read the lr; 32 records of 10 layers; 256 events of the one kind.
    kept = [name for name in ("loss", "grad_norm", "amp_scale", "amp_skipped") if name in LIVE_SERIES]
    groups = 2 if "lr" in LIVE_SERIES else 0
    assert len(run.scalars) == 128 + (len(kept) + groups) * 896 + 32 * 10
    if groups:
        assert run.series("lr", layer="group1").index.tolist() == list(range(49_105, 50_001))
    assert len(run.events) == 256


def test_a_repeated_layer_record_is_gridded_as_runddata_grids_its_rows():
    """A step recorded twice (a resumed run fed again): the later value wins, but a NaN does not hide an
    earlier value (RunData.layer_frame keeps the last non-NaN value of a step and layer)."""
    window = HistoryWindow()
    window.add_scalars(step=5, name="grad_norm", layer=("a", "b"), value=[1.0, 2.0])
    window.add_scalars(step=10, name="grad_norm", layer=("a", "b"), value=[3.0, 4.0])
    window.add_scalars(step=5, name="grad_norm", layer=("a", "b"), value=[float("nan"), 5.0])
    run = window.run_data()
    plain = RunData(run_id="plain", name="plain", scalars=run.scalars)
    assert_same_layer_frame(run.layer_frame("grad_norm"), plain.layer_frame("grad_norm"))
    assert run.layer_frame("grad_norm").values.tolist() == [[1.0, 5.0], [3.0, 4.0]]
    assert_same_layer_frame(layer_values(run, "grad_norm"), layer_values(plain, "grad_norm"))
    assert_same_curve(run.series("grad_norm", layer="a"), plain.series("grad_norm", layer="a"))


def test_the_window_run_holds_tables_with_the_store_dtypes():
    window = HistoryWindow()
    window.add_scalars(step=[1, 2], name="loss", value=[2.0, 1.9])
    window.add_event("amp_step_skipped", "skipped", step=2, wall_time=5.0)
    run = window.run_data()
    assert {name: run.scalars[name].dtype.kind for name in run.scalars.columns} == {
        "step": "i", "epoch": "f", "wall_time": "f", "split": "O", "name": "O", "layer": "O", "value": "f"}
    assert {name: run.events[name].dtype.kind for name in run.events.columns} == {
        "step": "i", "wall_time": "f", "kind": "O", "detail": "O"}
    assert run.events["kind"].tolist() == ["amp_step_skipped"] and run.events["step"].tolist() == [2]
    assert HistoryWindow().run_data().events.empty


def test_values_the_live_rules_do_not_read_are_not_kept():
    window = HistoryWindow()
    window.add_scalars(step=[1, 2], name="accuracy", value=0.5, split="val")
    window.add_scalars(step=1, name="weight_norm", layer=("w",), value=1.0)
    window.add_scalars(step=[1, 2], name="loss", value=[1.0, float("nan")], split="val")
    run = window.run_data()
    assert set(zip(run.scalars["split"], run.scalars["name"])) == {("val", "loss")}


# ------------------------------------------------------------- what is reported


@pytest.mark.parametrize(
    "finding, reported",
    [
        (_finding("loss_spike", recovered=True), True),
        (_finding("loss_spike", recovered=False), False),
        (_finding("loss_spike", "info", recovered=True), False),
        (_finding("divergence", "critical", kind="non_finite", non_finite_steps=2), False),
        (_finding("divergence", "critical", kind="non_finite", non_finite_steps=3), True),
        (_finding("divergence", "critical", kind="rise", steps_above=99), False),
        (_finding("divergence", "critical", kind="rise", steps_above=100), True),
        (_finding("lr_too_high", kind="rebound", rebound_fraction=0.5), True),
        (_finding("lr_too_high", kind="rebound", rebound_fraction=2.2), False),
        (_finding("lr_too_high", kind="rebound", rebound_fraction=0.5, after_spike=True), False),
        (_finding("lr_too_high", kind="plateau", rebound_fraction=0.5), False),
        (_finding("update_ratio_out_of_band", side="above", records=200, longest_stretch=19), False),
        (_finding("update_ratio_out_of_band", side="above", records=20, longest_stretch=20), True),
        (_finding("update_ratio_out_of_band", side="below", records=200), False),
        (_finding("exploding_gradients"), True),
        (_finding("amp_skipped_steps", "critical"), True),
        (_finding("overfitting"), False),
        (_finding("train_longer", "info"), False),
    ],
    ids=["spike-recovered", "spike-ongoing", "spike-info", "non-finite-2", "non-finite-3", "rise-99", "rise-100",
         "rebound", "rebound-above-start", "rebound-after-spike", "plateau", "band-19-in-a-row", "band-20-in-a-row",
         "below-band", "exploding", "amp", "not-live", "info"],
)
def test_a_live_check_reports_settled_warnings_and_criticals_of_live_rules(finding, reported):
    assert reportable([finding]) == ([finding] if reported else [])


@pytest.mark.parametrize(
    "earlier, later, new",
    [
        (_finding("divergence", "critical", 100, 120), _finding("divergence", "critical", 100, 160), False),
        (_finding("divergence", "critical", 100, 120), _finding("divergence", "critical", 121, 160), False),
        (_finding("loss_spike", "warning", 100, 104), _finding("loss_spike", "warning", 200, 204), True),
        (_finding("amp_skipped_steps", "warning", 50, 60), _finding("amp_skipped_steps", "critical", 50, 90), True),
        (_finding("amp_skipped_steps", "critical", 50, 90), _finding("amp_skipped_steps", "warning", 50, 95), False),
        (_finding("loss_spike", "warning", 100, 104), _finding("exploding_gradients", "warning", 100, 104), True),
        (_finding("amp_skipped_steps", start=None, end=None, title="a"),
         _finding("amp_skipped_steps", start=None, end=None, title="a"), False),
        (_finding("amp_skipped_steps", start=None, end=None, title="a"),
         _finding("amp_skipped_steps", start=None, end=None, title="b"), True),
    ],
    ids=["same-onset", "adjoining", "another-spike", "turns-critical", "less-severe-again", "another-rule",
         "whole-run-again", "whole-run-other-title"],
)
def test_each_problem_is_reported_once(earlier, later, new):
    seen = SeenFindings()
    assert seen.add(earlier) is True
    assert seen.add(later) is new


def test_a_rule_reports_at_most_its_limit_per_severity_and_a_critical_always_gets_through():
    seen = SeenFindings(max_per_rule=2)
    spikes = [_finding("loss_spike", "warning", 100 * i, 100 * i + 3) for i in range(1, 5)]
    assert [seen.add(spike) for spike in spikes] == [True, True, False, False]
    assert seen.add(_finding("loss_spike", "critical", 1000, 1001)) is True


def _fixed(*findings: Finding):
    return lambda run: list(findings)


def test_spikes_after_a_reported_divergence_are_left_to_it():
    live = LiveDiagnosis()
    divergence = _finding("divergence", "critical", 100, 120, kind="non_finite", non_finite_steps=20)
    live.rules = {"divergence": _fixed(divergence)}
    assert live.check() == [divergence]
    before = _finding("loss_spike", "warning", 40, 45, recovered=True)
    after = _finding("loss_spike", "warning", 130, 135, recovered=True)
    live.rules = {"loss_spike": _fixed(before, after)}
    assert live.check() == [before]


def test_a_failing_live_rule_is_left_out_with_one_warning_and_the_others_go_on():
    live = LiveDiagnosis()
    found = _finding("exploding_gradients")

    def broken(run):
        raise ZeroDivisionError("odd data")

    live.rules = {"divergence": broken, "exploding_gradients": _fixed(found)}
    with pytest.warns(RuntimeWarning, match="rule divergence failed"):
        assert live.check() == [found]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert live.check() == []
    assert list(live.rules) == ["exploding_gradients"] and "ZeroDivisionError" in live.failed["divergence"]


def test_a_live_finding_event_detail_round_trips():
    finding = _finding("divergence", "critical", kind="rise", steps_above=120)
    assert finding_from_detail(json.dumps(finding.to_dict())) == finding
    assert finding_from_detail("not json") is None and finding_from_detail('{"rule": "x"}') is None


@pytest.mark.parametrize(
    "live, offline, expected",
    [
        ([_finding("divergence", "critical")], [_finding("divergence", "critical", 5, 300)], []),
        ([_finding("divergence", "critical")], [_finding("divergence", "info")], ["divergence"]),
        ([_finding("loss_spike")], [_finding("loss_spike", "warning", 400, 404)], []),
        ([_finding("loss_spike")], [], ["loss_spike"]),
    ],
    ids=["same-critical", "only-info-offline", "same-rule", "absent-offline"],
)
def test_unconfirmed_live_findings(live, offline, expected):
    assert [finding.rule for finding in unconfirmed(live, offline)] == expected


def test_live_findings_of_a_whole_run_are_the_live_rules_reportable_findings():
    run = load_run(Store(SAMPLES), "divergence")
    assert {(f.rule, f.severity) for f in live_findings(run)} == {
        (f.rule, f.severity) for f in reportable(diagnose(run)) if f.rule in LIVE_RULES}


# ------------------------------------------------------- live against offline


@pytest.fixture(scope="module")
def samples() -> Store:
    return Store(SAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LIVE_SCENARIOS))
def test_live_checks_raise_what_the_diagnosis_of_the_finished_run_confirms(samples, name):
    """Replayed at a flush every 20 steps (an epoch of the sample runs), as the probe would check them."""
    run = load_run(samples, name)
    raised = [finding for _, finding in replay(run, every_steps=20)]
    offline = diagnose(run)
    assert LIVE_SCENARIOS[name] <= {finding.rule for finding in raised}
    assert [(f.rule, f.severity, f.step_start) for f in unconfirmed(raised, offline)] == []
    critical_offline = {f.rule for f in offline if f.severity == "critical" and f.rule in LIVE_RULES}
    assert {f.rule for f in raised if f.severity == "critical"} == critical_offline


@pytest.mark.slow
@pytest.mark.parametrize("name", HEALTHY_SAMPLES)
def test_healthy_sample_runs_raise_nothing_live(samples, name):
    assert [(f.rule, f.severity, f.step_start) for _, f in replay(load_run(samples, name), every_steps=20)] == []


def _flush_every(run: RunData) -> int:
    """A flush every 20 steps, or every 3 % of a longer run (at most ~32 checks a run: the test's cost stays
    bounded; a real probe checks every 256 steps or 2 s, ~8 times in a 2,000-step run)."""
    loss = run.series("loss")
    return max(20, int(loss.index.max()) // 32) if len(loss) else 20


# The corpus families these replays were written on (make_corpus.ORIGINAL_FAMILIES, ~50 runs): issue
# #12's families beyond them (~80 more runs, some 20,000 steps long) would cost several CI minutes here.
REPLAYED_FAMILIES = ("digits_mlp", "synthetic_mlp", "small_tabular_mlp", "sequence_transformer")


@pytest.fixture(scope="module")
def corpus_replays() -> dict[str, tuple[dict, list[Finding], list[Finding]]]:
    """Each corpus run of REPLAYED_FAMILIES: its label, what live checks raised replaying it, what the finished
    run's diagnosis says."""
    labels = json.loads((CORPUS / "corpus_labels.json").read_text(encoding="utf-8"))
    store = Store(CORPUS)
    replays = {}
    for name, label in sorted(labels.items()):
        if label["family"] not in REPLAYED_FAMILIES:
            continue
        run = load_run(store, name)
        replays[name] = (label, [f for _, f in replay(run, every_steps=_flush_every(run))], diagnose(run))
    return replays


@pytest.mark.slow
@pytest.mark.parametrize("name", ["res_loss_spike_lr_bump"])
def test_a_jump_still_recovering_is_not_raised_live_as_an_lr_rebound(name):
    """A held-out family's run (an lr bump at step ~490, logged every 10 steps): live, the climb after the
    jump looked like a rebound that stayed; the finished run recovered, and its diagnosis says loss_spike."""
    run = load_run(Store(CORPUS), name)
    raised = [f for _, f in replay(run, every_steps=_flush_every(run))]
    assert [(f.rule, f.severity, f.step_start) for f in unconfirmed(raised, diagnose(run))] == []


# Both tests share the module's replays: one xdist worker builds them once (each worker built them: ~45 s twice).
@pytest.mark.slow
@pytest.mark.xdist_group("corpus_replays")
def test_healthy_corpus_runs_raise_nothing_live(corpus_replays):
    raised = {name: [(f.rule, f.severity, f.step_start) for f in live]
              for name, (label, live, _) in corpus_replays.items() if label["healthy"]}
    assert len(raised) >= 6 and {name: found for name, found in raised.items() if found} == {}


@pytest.mark.slow
@pytest.mark.xdist_group("corpus_replays")
def test_every_live_finding_on_the_corpus_is_confirmed_by_the_finished_run(corpus_replays):
    """What a live check raises, on any corpus run (healthy or not), the diagnosis of the whole run confirms."""
    unconfirmed_by_run = {name: [(f.rule, f.severity, f.step_start) for f in unconfirmed(live, offline)]
                          for name, (_, live, offline) in corpus_replays.items()}
    assert sum(len(live) for _, live, _ in corpus_replays.values()) >= 10  # the corpus does raise things live
    assert {name: found for name, found in unconfirmed_by_run.items() if found} == {}
