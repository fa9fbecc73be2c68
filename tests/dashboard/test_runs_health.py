"""The Runs page's data (#17): a health column, worst first; a smoothed training loss from the run
catalog; the hyperparameters that vary most across the listed runs."""

from __future__ import annotations

import numpy as np
import pytest

from traindoctor.dashboard import data
from traindoctor.diagnosis.finding import Finding
from traindoctor.store.catalog import TRAIN_LOSS_TAIL, Catalog
from traindoctor.store.reader import Store
from traindoctor.store.segments import RunWriter


def write_losses(store, name: str, losses, *, config=None, start: int = 1, run_id: str | None = None,
                 flush_every: int = 0) -> str:
    """A run of training losses at steps start, start+1, … (one segment per ``flush_every`` steps)."""
    writer = RunWriter(store, name=name, run_id=run_id, config=config or {"lr": 0.1}, background=False)
    losses = np.asarray(losses, dtype=float)
    chunk = flush_every or len(losses)
    for first in range(0, len(losses), chunk):
        steps = np.arange(start + first, start + min(first + chunk, len(losses)))
        writer.add_scalars(step=steps, name="loss", value=losses[first:first + chunk])
        writer.flush()
    writer.close()
    return writer.run_id


@pytest.mark.parametrize(("count", "flush_every"), [(1000, 0), (1000, 97), (120, 0)],
                         ids=["one-file", "many-segments", "short-run-last-10-percent"])
def test_train_loss_tail_is_the_mean_of_the_last_logged_losses(tmp_path, count, flush_every):
    rng = np.random.default_rng(count)
    losses = 3.0 + rng.standard_normal(count)
    losses[-1] = 5.8e-09  # the lucky last minibatch (#17)
    run_id = write_losses(tmp_path, "r", losses, flush_every=flush_every)
    wanted = min(TRAIN_LOSS_TAIL, count // 10)
    summary = Catalog(tmp_path).summary(run_id)
    assert summary["train_loss_tail"] == pytest.approx(losses[-wanted:].mean())
    assert summary["metrics"]["train"]["loss"]["last"] == pytest.approx(5.8e-09)


def test_train_loss_tail_takes_a_resumed_attempt_over_the_steps_it_redid(tmp_path):
    first = write_losses(tmp_path, "r", np.full(600, 1.0))
    write_losses(tmp_path, "r", np.full(40, 7.0), start=571, run_id=first)  # attempt 2 redoes 571-600, goes to 610
    summary = Store(tmp_path).catalog.summary(first)  # footers cannot cut attempt 1: the exact query
    assert summary["train_loss_tail"] == pytest.approx((10 * 1.0 + 40 * 7.0) / 50)  # steps 561-570, then 571-610


def test_a_summary_without_train_loss_tail_is_brought_up_to_date(tmp_path):
    import json

    run_id = write_losses(tmp_path, "r", np.arange(100.0))
    path = tmp_path / run_id / "summary.json"
    summary = json.loads(path.read_text())
    del summary["train_loss_tail"]  # as an older traindoctor wrote it
    path.write_text(json.dumps(summary))
    assert Catalog(tmp_path).summary(run_id)["train_loss_tail"] == pytest.approx(np.arange(90.0, 100.0).mean())


def _findings(*severities: str) -> list[Finding]:
    return [Finding(rule="loss_spike", severity=severity, title=f"{severity} title", message="m", advice="a")
            for severity in severities]


def test_runs_page_is_worst_first_with_a_health_column_and_the_smoothed_loss(tmp_path, monkeypatch):
    import traindoctor.diagnosis

    verdicts = {"clean": [], "warned": _findings("warning", "info"), "broken": _findings("critical", "warning"),
                "noted": _findings("info"), "pending": None}
    for name in verdicts:  # created in this order: "pending" is the newest
        write_losses(tmp_path, name, np.full(100, 2.0), config={"lr": 0.1})
    monkeypatch.setattr(traindoctor.diagnosis, "diagnose", lambda run: verdicts[run.name], raising=False)
    store = Store(tmp_path)
    data.diagnose_first(store, [run_id for run_id in store.catalog.run_ids()
                                if store.catalog.summary(run_id)["name"] != "pending"], budget_s=60)
    page = data.runs_page(store)
    # An undiagnosed run is not known to be fine: below the warnings, above the notes.
    assert list(page.rows["name"]) == ["broken", "warned", "pending", "noted", "clean"]
    health = dict(zip(page.rows["name"], page.rows["health"]))
    assert health["broken"] == "✖ critical · 1 crit, 1 warn · critical title"
    assert health["clean"] == "✔ no findings" and health["noted"].startswith("● note")
    assert list(page.rows["train_loss_tail"]) == ["2"] * 5
    assert list(data.runs_page(store, sort="health").rows["name"])[0] == "clean"


def test_a_crashed_run_is_as_bad_as_a_critical_finding_on_the_runs_page(tmp_path, monkeypatch):
    """As ``diagnose --fail-on`` counts a crash: it sorts with the critical runs and says so first."""
    import traindoctor.diagnosis

    verdicts = {"warned": _findings("warning"), "crashy": _findings("info")}
    write_losses(tmp_path, "warned", np.full(100, 2.0))
    writer = RunWriter(tmp_path, name="crashy", background=False)
    writer.add_scalars(step=np.arange(1, 51), name="loss", value=np.full(50, 2.0))
    writer.close("crashed", detail="Traceback ...\nValueError: boom")
    monkeypatch.setattr(traindoctor.diagnosis, "diagnose", lambda run: verdicts[run.name], raising=False)
    store = Store(tmp_path)
    data.diagnose_first(store, store.catalog.run_ids(), budget_s=60)
    page = data.runs_page(store)
    assert list(page.rows["name"]) == ["crashy", "warned"]
    assert page.rows["health"].iloc[0] == "✖ crashed · 1 note · info title"
    assert data.health_text(None, "crashed") == "✖ crashed · … not diagnosed yet"
    assert data.health_text({"counts": {}}, "crashed") == "✖ crashed · no findings in what was recorded"


def test_a_run_stopped_with_ctrl_c_reads_interrupted_and_sorts_below_a_warning(tmp_path, monkeypatch):
    """As ``diagnose`` says INTERRUPTED and ``--fail-on`` does not count a KeyboardInterrupt as critical;
    run.json keeps DESIGN.md's ``crashed`` status."""
    import traindoctor.diagnosis

    verdicts = {"warned": _findings("warning"), "stopped": _findings("info"), "crashy": []}
    write_losses(tmp_path, "warned", np.full(100, 2.0))
    for name, last_line in (("stopped", "KeyboardInterrupt"), ("crashy", "ValueError: boom")):
        writer = RunWriter(tmp_path, name=name, background=False)
        writer.add_scalars(step=np.arange(1, 51), name="loss", value=np.full(50, 2.0))
        writer.close("crashed", detail=f"Traceback (most recent call last):\n  ...\n{last_line}")
    monkeypatch.setattr(traindoctor.diagnosis, "diagnose", lambda run: verdicts[run.name], raising=False)
    store = Store(tmp_path)
    data.diagnose_first(store, store.catalog.run_ids(), budget_s=60)
    page = data.runs_page(store)
    assert list(page.rows["name"]) == ["crashy", "warned", "stopped"]
    health = dict(zip(page.rows["name"], page.rows["health"]))
    assert health["stopped"] == "■ interrupted · 1 note · info title"
    assert health["crashy"] == "✖ crashed · no findings in what was recorded"


def test_a_run_that_recorded_no_training_step_is_not_a_healthy_one_on_the_runs_page(tmp_path, monkeypatch):
    """An eval-only log or an add_hparams folder: `diagnose` says NOTHING RECORDED and --fail-on warning
    counts it, while the Runs page said '✔ no findings' and sorted it with the healthy runs."""
    import traindoctor.diagnosis

    write_losses(tmp_path, "clean", np.full(100, 2.0))
    write_losses(tmp_path, "noted", np.full(100, 2.0))
    writer = RunWriter(tmp_path, name="evals-only", background=False)
    writer.add_scalars(step=np.array([100, 200]), value=np.array([2.0, 1.5]), split="val", name="loss")
    writer.close("finished")
    verdicts = {"clean": [], "noted": _findings("info"), "evals-only": []}
    monkeypatch.setattr(traindoctor.diagnosis, "diagnose", lambda run: verdicts[run.name], raising=False)
    store = Store(tmp_path)
    data.diagnose_first(store, store.catalog.run_ids(), budget_s=60)
    page = data.runs_page(store)
    assert list(page.rows["name"]) == ["evals-only", "noted", "clean"]
    assert page.rows["health"].iloc[0] == "▲ nothing recorded · no training step to judge"
    assert data.health_text({"counts": {}}, "running", 0) == "✔ no findings"  # a run that has not begun yet


@pytest.mark.parametrize(("configs", "expected"), [
    ([{"lr": 0.1, "seed": 1, "warmup": 0}, {"lr": 0.01, "seed": 2, "warmup": 0}, {"lr": 0.01, "seed": 3, "warmup": 0}],
     ["seed", "lr"]),
    # HF-style: a hundred defaults nobody changed, an output folder per run, and the two that vary
    ([{**{f"arg{i}": i for i in range(100)}, "output_dir": f"out/{k}", "learning_rate": lr, "per_device_batch": bs}
      for k, (lr, bs) in enumerate([(1e-4, 8), (3e-4, 8), (1e-4, 16), (3e-4, 16)])],
     ["learning_rate", "per_device_batch"]),
    ([{"lr": 0.1}, {"lr": 0.1, "momentum": 0.9}], ["momentum"]),  # a key some runs lack varies
], ids=["entropy-order", "hf-defaults-and-paths-hidden", "missing-counts-as-a-value"])
def test_varying_hyperparameters_hides_constants_and_identifiers(configs, expected):
    assert data.varying_hyperparameters(configs) == expected
