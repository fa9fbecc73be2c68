"""Live diagnosis in the probe: findings written once and handed over, stop_on, should_stop, raise_on_stop."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from traindoctor.diagnosis import diagnose
from traindoctor.diagnosis.live import replay, unconfirmed
from traindoctor.probe import Probe
from traindoctor.probe.core import ProbeError, TrainingStopped
from traindoctor.store.reader import Store
from traindoctor.store.run_data import load_run
from tests.probe.conftest import make_batches, make_model, read_run

BROKEN_AT = 30  # the model's weights become NaN after this step: every later loss is NaN


def _train(probe: Probe, steps: int, *, broken_at: int | None = BROKEN_AT, eval_every: int | None = None,
           forget_train: bool = False) -> int:
    """A small classifier trained under ``probe``; returns the steps taken (it stops when the probe asks)."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    probe.watch(model, optimizer)
    batches = make_batches(16)
    for step in range(1, steps + 1):
        x, y = batches[step % len(batches)]
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if broken_at is not None and step == broken_at:
            with torch.no_grad():
                model[0].weight.fill_(float("nan"))
        probe.step(loss=loss, epoch=0)
        if eval_every and step % eval_every == 0:
            model.eval()
            with torch.no_grad(), probe.evaluate("val") as evaluation:
                x, y = batches[0]
                logits = model(x)
                evaluation.update(logits, y, loss=torch.nn.functional.cross_entropy(logits, y))
            if not forget_train:
                model.train()
        if probe.should_stop:
            return step
    return steps


def _probe(tmp_path, **options) -> Probe:
    """A probe that checks at every flush (live_budget=None), so that findings are raised at known steps."""
    settings = dict(run="live", store=tmp_path, num_classes=3, flush_every_steps=8, flush_every_s=3600,
                    layer_every=5, handle_sigterm=False, strict=True, live_budget=None)
    return Probe(**{**settings, **options})


@pytest.fixture
def slow_checks(monkeypatch):
    """Every live check takes at least 0.2 s: at the default 2 % budget the next may come 10 s later."""
    import time

    from traindoctor.diagnosis.live import LiveDiagnosis

    check = LiveDiagnosis.check

    def slow(self):
        time.sleep(0.2)
        return check(self)

    monkeypatch.setattr(LiveDiagnosis, "check", slow)


def _checks(probe: Probe) -> int:
    return probe._live.checks


def test_the_budget_spaces_the_checks_of_a_loop_that_flushes_every_step(tmp_path, slow_checks):
    with _probe(tmp_path, flush_every_steps=1, live_budget=0.02) as probe:
        _train(probe, 60, broken_at=None)
        during = _checks(probe)
    # 60 flushes: the first is checked, the next within 10 s of it are not; close checks what they left.
    assert during == 1 and _checks(probe) == 2
    with _probe(tmp_path / "every", flush_every_steps=1) as probe:  # live_budget=None: one check a flush
        _train(probe, 12, broken_at=None)
        assert _checks(probe) == 12


def test_a_non_finite_loss_is_checked_at_its_flush_whatever_the_budget(tmp_path, slow_checks):
    handed = []
    with _probe(tmp_path, live_budget=0.02, on_finding=handed.append, stop_on="critical") as probe:
        taken = _train(probe, 80)
    # As at every flush: NaN losses from step 31, the third of them in the flush of step 40.
    assert [(f.rule, f.severity) for f in handed] == [("divergence", "critical")] and taken == 40
    _, _, events, _ = read_run(tmp_path)
    assert [entry["raised_step"] for entry in _live_events(events)] == [40]


def test_a_check_the_budget_put_off_is_made_at_close(tmp_path, slow_checks):
    with _probe(tmp_path, live_budget=0.02) as probe:
        _train(probe, 24, broken_at=None, eval_every=4, forget_train=True)  # steps taken in eval mode
        assert probe.live_findings == []  # checked at the flush of step 4 only, before the mistake
    assert [f.rule for f in probe.live_findings] == ["eval_mode_during_training"]
    _, _, events, _ = read_run(tmp_path)
    assert [entry["raised_step"] for entry in _live_events(events)] == [24]


@pytest.mark.parametrize("budget", [0, -0.1, 1.5, "2%", float("nan")])
def test_live_budget_must_be_a_fraction(tmp_path, budget):
    with pytest.raises(ValueError, match="live_budget must be a fraction"):
        Probe(run="bad", store=tmp_path, handle_sigterm=False, live_budget=budget)
    assert list(tmp_path.iterdir()) == []


def _live_events(events):
    return [json.loads(detail) | {"raised_step": step}
            for step, detail in zip(events.loc[events["kind"] == "live_finding", "step"],
                                    events.loc[events["kind"] == "live_finding", "detail"])]


def test_a_live_finding_is_written_once_and_handed_to_on_finding(tmp_path):
    handed = []
    with _probe(tmp_path, on_finding=handed.append) as probe:
        _train(probe, 80)
    meta, _, events, _ = read_run(tmp_path)
    written = _live_events(events)
    assert [(f.rule, f.severity) for f in handed] == [("divergence", "critical")]
    assert [(entry["rule"], entry["severity"], entry["step_start"]) for entry in written] == [
        ("divergence", "critical", BROKEN_AT + 1)]
    # Raised at the first flush that holds 3 NaN losses: the flush at step 40 (flushes every 8 steps).
    assert written[0]["raised_step"] == 40
    assert probe.live_findings == handed and not probe.should_stop
    assert meta["status"] == "finished"


@pytest.mark.parametrize(
    "stop_on, forget_train, stops_at",
    # Each evaluation (every 4 steps) flushes: 3 NaN losses after step 30 are first seen at the flush of step 36,
    # the step taken in eval mode after the evaluation of step 4 at the flush of step 8.
    [("critical", False, 36), ("warning", True, 8), ("critical", True, 36), (None, False, None)],
    ids=["critical", "warning-eval-mode", "critical-ignores-warning", "never"],
)
def test_stop_on_makes_should_stop_true_at_the_flush_that_raised_the_finding(tmp_path, stop_on, forget_train,
                                                                              stops_at):
    with _probe(tmp_path, stop_on=stop_on) as probe:
        taken = _train(probe, 60, eval_every=4, forget_train=forget_train)
    _, _, events, _ = read_run(tmp_path)
    requested = events[events["kind"] == "stop_requested"]
    if stops_at is None:
        assert taken == 60 and not probe.should_stop and requested.empty
        return
    assert probe.should_stop and taken == stops_at
    detail = json.loads(requested["detail"].iloc[0])
    assert detail["stop_on"] == stop_on and detail["finding"]["rule"] == probe.stop_finding.rule


def test_raise_on_stop_raises_at_the_step_and_the_run_ends_finished_with_the_reason(tmp_path):
    with pytest.raises(TrainingStopped, match=r"divergence \(Training diverged\) met stop_on='critical'") as raised:
        with _probe(tmp_path, stop_on="critical", raise_on_stop=True) as probe:
            _train(probe, 200)
    assert raised.value.finding.rule == "divergence" and isinstance(raised.value, ProbeError)
    meta, scalars, events, _ = read_run(tmp_path)
    assert meta["status"] == "finished" and "crash" not in set(events["kind"])
    assert int(scalars["step"].max()) == 40  # nothing after the step that raised
    stopped = json.loads(events.loc[events["kind"] == "training_stopped", "detail"].iloc[0])
    assert stopped["by"] == "raise_on_stop" and stopped["finding"]["rule"] == "divergence"


def test_a_failing_on_finding_warns_once_and_training_goes_on(tmp_path):
    calls = []

    def broken(finding):
        calls.append(finding.rule)
        raise RuntimeError("the chat service is down")

    with pytest.warns(RuntimeWarning, match="on_finding raised RuntimeError: the chat service is down"):
        with _probe(tmp_path, on_finding=broken, stop_on="warning") as probe:  # strict=True: still no crash
            _train(probe, 60, eval_every=4, forget_train=True, broken_at=None)
    assert calls == ["eval_mode_during_training"] and probe.should_stop
    assert read_run(tmp_path)[0]["status"] == "finished"


@pytest.mark.parametrize(
    "options, error",
    [
        (dict(stop_on="fatal"), "stop_on must be 'critical', 'warning' or None"),
        (dict(raise_on_stop=True), "raise_on_stop=True needs stop_on"),
        (dict(on_finding="print"), "on_finding must be callable"),
        (dict(live=False, stop_on="critical"), "need the live checks"),
    ],
    ids=["unknown-level", "raise-without-stop-on", "not-callable", "stop-without-live"],
)
def test_live_arguments_are_checked_at_the_call_and_leave_no_run_behind(tmp_path, options, error):
    with pytest.raises((ValueError, TypeError), match=error):
        Probe(run="bad", store=tmp_path, handle_sigterm=False, **options)
    assert list(tmp_path.iterdir()) == []


def test_live_false_records_without_live_checks(tmp_path):
    with _probe(tmp_path, live=False) as probe:
        _train(probe, 60)
    _, _, events, _ = read_run(tmp_path)
    assert "live_finding" not in set(events["kind"]) and probe.live_findings == []


def test_the_probe_raises_what_a_replay_of_its_stored_run_raises(tmp_path):
    """The probe feeds its checks what it writes: a replay of the run at the same flushes raises the same."""
    with _probe(tmp_path, flush_every_steps=8) as probe:
        _train(probe, 80)
    run = load_run(Store(tmp_path), "live")
    replayed = replay(run, every_steps=8)
    _, _, events, _ = read_run(tmp_path)
    written = [(entry["rule"], entry["severity"], entry["step_start"], entry["raised_step"])
               for entry in _live_events(events)]
    assert written == [(f.rule, f.severity, f.step_start, step) for step, f in replayed]


def test_live_findings_agree_with_the_diagnosis_of_the_finished_run(tmp_path):
    with _probe(tmp_path) as probe:
        _train(probe, 120, eval_every=10)
    offline = diagnose(load_run(Store(tmp_path), "live"))
    assert unconfirmed(probe.live_findings, offline) == []
    assert ({f.rule for f in probe.live_findings if f.severity == "critical"}
            == {f.rule for f in offline if f.severity == "critical" and f.rule == "divergence"} == {"divergence"})


def test_a_failing_live_check_turns_live_diagnosis_off_with_one_warning(tmp_path, monkeypatch):
    from traindoctor.diagnosis.live import LiveDiagnosis

    def broken(self):
        raise MemoryError("no room for the window")

    monkeypatch.setattr(LiveDiagnosis, "check", broken)
    with pytest.warns(RuntimeWarning, match="recording 'live' failed"):
        with _probe(tmp_path, strict=False) as probe:
            _train(probe, 40)
    assert "live" in probe.disabled
    _, scalars, _, _ = read_run(tmp_path)
    assert int(scalars["step"].max()) == 40  # the values are all written


@pytest.mark.slow  # a fresh interpreter imports torch and the rules: seconds on a busy 2-core machine
def test_the_probe_module_imports_no_rules_until_a_probe_with_live_checks_is_made_and_never_pandas():
    import subprocess
    import sys

    code = ("import sys, tempfile\nfrom traindoctor import Probe\n"
            "assert 'traindoctor.diagnosis.live' not in sys.modules and 'pandas' not in sys.modules\n"
            "Probe(run='x', store=tempfile.mkdtemp(), live=False, handle_sigterm=False,\n"
            "      compact_on_close=False).close()\n"
            "assert 'traindoctor.diagnosis.live' not in sys.modules\n"
            "Probe(run='y', store=tempfile.mkdtemp(), handle_sigterm=False, compact_on_close=False).close()\n"
            "assert 'traindoctor.diagnosis.live' in sys.modules\n"
            "assert 'pandas' not in sys.modules  # the live rules run on numpy alone (issue #13)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_no_warning_is_left_when_nothing_goes_wrong(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with _probe(tmp_path) as probe:
            _train(probe, 40, broken_at=None, eval_every=10)
    assert probe.live_findings == []
