"""Live diagnosis: how soon the probe raises a doomed run's problem, what stopping saves, what a check costs.

Trains the sample scenarios that go wrong (``sample_runs/make_runs.py``:
divergence, lr too high, exploding gradients, loss spikes, a forgotten
``model.train()``; plus AMP skipped steps, made here: fp16 autocast on the
CPU with a GradScaler, and from step 150 on a layer's gradient overflows at
every step) with live checks on, twice each:

- to the end (``stop_on=None``): the diagnosis of the full run places the
  problem (its first step: the offline onset), the run's ``live_finding``
  events say when the live check raised it (step and wall time);
- with ``stop_on="critical"``: how many of the planned steps were saved.

Per scenario it prints the offline onset, the live raise step, the lag in
steps, seconds and flushes (live checks that saw the onset before the one
that raised it, plus that one: the target for a critical problem is ≤ 2),
and the share of planned steps saved; then whether the healthy sample runs
(trained) and the healthy corpus runs (``tests/data/corpus``, replayed at a
flush every 20 steps) raise anything live at warning or above, how many
live findings the diagnosis of the finished runs does not confirm, and the
cost of one flush's live check with 1,000 and with 100,000 steps recorded.

    OMP_NUM_THREADS=1 python benchmarks/live_detection.py
    python benchmarks/live_detection.py --only divergence amp-overflow --skip-healthy
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from unittest import mock

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sample_runs import make_runs  # noqa: E402
from traindoctor.diagnosis import diagnose  # noqa: E402
from traindoctor.diagnosis.finding import SEVERITY_RANK  # noqa: E402
from traindoctor.diagnosis.live import LiveDiagnosis, finding_from_detail, replay, unconfirmed  # noqa: E402
from traindoctor.probe import Probe  # noqa: E402
from traindoctor.store.reader import Store  # noqa: E402
from traindoctor.store.run_data import load_run  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "corpus"
AMP_OVERFLOW_FROM = 150
# The scenario → the rule its problem is (the one whose onset and raise are compared).
SCENARIOS = {
    "divergence": "divergence",
    "amp-overflow": "amp_skipped_steps",
    "exploding-gradients": "exploding_gradients",
    "loss-spikes": "loss_spike",
    "lr-too-high": "lr_too_high",
    "forgot-model-train": "eval_mode_during_training",
}
HEALTHY = ["healthy-mlp-adamw", "healthy-mlp-sgd", "healthy-cnn", "transformer-warmup", "sweep-lr-0.003",
           "sweep-lr-0.03"]


def amp_overflow(store: Path, name: str) -> None:
    """fp16 autocast with a GradScaler on the digits MLP; from step 150 a layer's gradient overflows every step."""
    make_runs._seed(17)
    data = make_runs.digits(seed=17)
    model = make_runs.mlp([64, 128, 10])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu")
    criterion = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(17)
    config = {"model": "mlp-128", "optimizer": "Adam", "lr": 1e-3, "amp": "float16",
              "note": f"a layer's fp16 gradient overflows at every step from step {AMP_OVERFLOW_FROM}"}
    with make_runs.Probe(run=name, store=store, config=config, num_classes=10, project="live-detection") as probe:
        probe.watch(model, optimizer, scaler=scaler)
        step = 0
        for epoch in range(25):
            order = torch.randperm(len(data.x_train), generator=generator)
            for start in range(0, len(order), 64):
                index = order[start:start + 64]
                step += 1
                with torch.autocast("cpu", dtype=torch.float16):
                    loss = criterion(model(data.x_train[index]), data.y_train[index])
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if step >= AMP_OVERFLOW_FROM:  # as a layer whose fp16 activations overflow would
                    model[0].weight.grad[0, 0] = float("inf")
                scaler.step(optimizer)
                scaler.update()
                probe.step(loss=loss, epoch=epoch)
                if probe.should_stop:
                    return


BUILDERS: dict[str, Callable[[Path, str], None]] = {scenario.name: scenario.make for scenario in make_runs.SCENARIOS}
BUILDERS["amp-overflow"] = amp_overflow


@dataclass
class Check:
    """One live check: the last step it saw and when it ran (Unix seconds)."""

    step: int
    wall: float


@contextlib.contextmanager
def recorded(checks: list[Check], **probe_options) -> Iterator[None]:
    """Every Probe the scenarios make gets ``probe_options``; every live check is noted in ``checks``."""
    original = LiveDiagnosis.check

    def noted(self):
        found = original(self)
        checks.append(Check(self.window.last_step or 0, time.time()))
        return found

    with mock.patch.object(make_runs, "Probe", functools.partial(Probe, **probe_options)), \
            mock.patch.object(LiveDiagnosis, "check", noted):
        yield


def train(name: str, store: Path, **probe_options) -> tuple[str, list[Check], float]:
    """Train one scenario into ``store``; its run id, its live checks and the seconds it took."""
    checks: list[Check] = []
    started = time.perf_counter()
    with recorded(checks, **probe_options):
        BUILDERS[name](store, name)
    return Store(store).resolve(name), checks, time.perf_counter() - started


def live_events(run) -> list[tuple[int, float, object]]:
    events = run.events[run.events["kind"] == "live_finding"]
    found = []
    for step, wall, detail in zip(events["step"].tolist(), events["wall_time"].tolist(), events["detail"].tolist()):
        finding = finding_from_detail(detail)
        if finding is not None:
            found.append((int(step), float(wall), finding))
    return found


def scenario_row(name: str, rule: str, root: Path) -> dict:
    full_store, stopped_store = root / "full", root / "stopped"
    run_id, checks, seconds = train(name, full_store)
    run = load_run(Store(full_store), run_id)
    offline = diagnose(run)
    mine = [f for f in offline if f.rule == rule]
    worst = max((SEVERITY_RANK[f.severity] for f in mine), default=-1)
    onset_finding = min((f for f in mine if SEVERITY_RANK[f.severity] == worst),
                        key=lambda f: f.step_start if f.step_start is not None else 0, default=None)
    raised = live_events(run)
    live = [(step, wall, f) for step, wall, f in raised if f.rule == rule]
    planned = int(run.series("loss").index.max())
    row = {"scenario": name, "rule": rule, "planned": planned, "train_s": seconds,
           "unconfirmed": [f"{f.rule}@{f.step_start}" for f in unconfirmed([f for *_, f in raised], offline)],
           "live_rules": sorted({f"{f.rule}:{f.severity}" for *_, f in raised})}
    if onset_finding is None:
        row.update(severity="–", onset=None)
    else:
        row.update(severity=onset_finding.severity, onset=onset_finding.step_start)
    if live:
        step, wall, finding = min(live, key=lambda item: (-SEVERITY_RANK[item[2].severity], item[0]))
        row.update(raised=step, live_severity=finding.severity)
        if row["onset"] is not None:
            loss = run.scalars[(run.scalars["name"] == "loss") & (run.scalars["split"] == "train")]
            walls = loss["wall_time"][loss["step"] >= row["onset"]]
            onset_wall = np.nanmin(walls) if len(walls) else np.nan
            row.update(lag_steps=step - row["onset"], lag_s=wall - float(onset_wall),
                       lag_flushes=sum(1 for check in checks if row["onset"] <= check.step <= step)
                       if step >= row["onset"] else 0)
    stopped_id, _, _ = train(name, stopped_store, stop_on="critical")
    stopped_run = load_run(Store(stopped_store), stopped_id)
    taken = int(stopped_run.series("loss").index.max())
    first_loud = min((step for step, _, f in raised if SEVERITY_RANK[f.severity] >= SEVERITY_RANK["warning"]),
                     default=None)
    row["saved_at_warning"] = None if first_loud is None else (planned - first_loud) / planned
    row.update(taken=taken, saved=(planned - taken) / planned,
               stopped_by=[json.loads(d)["finding"]["rule"] for d in
                           stopped_run.events["detail"][stopped_run.events["kind"] == "stop_requested"]])
    return row


def print_scenarios(rows: list[dict]) -> None:
    header = (f"{'scenario':22s} {'rule':26s} {'severity':9s} {'offline':>7s} {'live':>6s} {'lag':>6s} {'lag s':>6s} "
              f"{'flushes':>7s} {'planned':>7s} {'taken':>6s} {'saved':>6s} {'warning':>7s}  unconfirmed live findings")
    print(header)
    print("-" * len(header))
    for row in rows:
        def cell(key, fmt):
            value = row.get(key)
            return "–" if value is None else format(value, fmt)
        print(f"{row['scenario']:22s} {row['rule']:26s} {row['severity']:9s} {cell('onset', 'd'):>7s} "
              f"{cell('raised', 'd'):>6s} {cell('lag_steps', '+d'):>6s} {cell('lag_s', '.2f'):>6s} "
              f"{cell('lag_flushes', 'd'):>7s} {row['planned']:>7d} {row['taken']:>6d} {row['saved']:>6.0%} "
              f"{cell('saved_at_warning', '.0%'):>7s}  "
              f"{', '.join(row['unconfirmed']) or 'none'}")
    critical = [row for row in rows if row["severity"] == "critical"]
    met = [row for row in critical if row.get("lag_flushes") is not None and row["lag_flushes"] <= 2]
    print(f"Critical problems raised within two flushes of their offline onset: {len(met)} of {len(critical)}")
    for row in rows:
        print(f"  {row['scenario']}: raised live {', '.join(row['live_rules']) or 'nothing'}; "
              f"stop_on='critical' stopped on {', '.join(row['stopped_by']) or 'nothing'}")


def healthy_samples(root: Path) -> None:
    print("\nHealthy sample runs, trained with live checks (warning or critical raised live):")
    for name in HEALTHY:
        run_id, checks, seconds = train(name, root / "healthy")
        loud = [f for *_, f in live_events(load_run(Store(root / "healthy"), run_id))
                if SEVERITY_RANK[f.severity] >= SEVERITY_RANK["warning"]]
        print(f"  {name:22s} {len(checks):4d} checks  {seconds:5.1f} s  "
              f"{', '.join(f'{f.rule}@{f.step_start}' for f in loud) or 'none'}")


def corpus_runs() -> None:
    labels = json.loads((CORPUS / "corpus_labels.json").read_text(encoding="utf-8"))
    store = Store(CORPUS)
    print("\nCorpus runs, replayed at a flush every 20 steps (every 2 % of a run longer than 1,000 steps):")
    loud_healthy, unconfirmed_all, raised_all = {}, [], 0
    for name, label in sorted(labels.items()):
        run = load_run(store, name)
        loss = run.series("loss")
        raised = [f for _, f in replay(run, every_steps=max(20, int(loss.index.max()) // 50) if len(loss) else 20)]
        raised_all += len(raised)
        if label["healthy"]:
            loud_healthy[name] = raised
        unconfirmed_all += [f"{name}: {f.rule}@{f.step_start}" for f in unconfirmed(raised, diagnose(run))]
    quiet = sum(not found for found in loud_healthy.values())
    loud = "".join(f"\n    {name}: {', '.join(f.rule for f in found)}" for name, found in loud_healthy.items() if found)
    print(f"  healthy runs quiet live: {quiet} of {len(loud_healthy)}{loud}")
    print(f"  all {len(labels)} runs: {raised_all} live findings, {len(unconfirmed_all)} not confirmed by the "
          "diagnosis of the finished run" + "".join(f"\n    {line}" for line in unconfirmed_all))


def _feed(live: LiveDiagnosis, start: int, steps: int, rng: np.random.Generator, layers: tuple[str, ...]) -> None:
    """One probe flush of ``steps`` steps of a 40-tensor model (layer statistics every 50 steps)."""
    step = np.arange(start, start + steps)
    live.add_scalars(step=step, name="loss", value=2.3 * np.exp(-step / 20_000) + 0.05 * rng.random(steps))
    live.add_scalars(step=step, name="grad_norm", value=1 + 0.1 * rng.random(steps))
    live.add_scalars(step=step, name="lr", value=1e-3, layer=("group0",) * steps)
    for each in step[step % 50 == 0]:
        for name in ("grad_norm", "weight_norm", "update_ratio"):
            live.add_scalars(step=int(each), name=name, layer=layers, value=1e-3 * (1 + rng.random(len(layers))))


def check_cost(repeats: int = 30) -> None:
    """A live check (and the feeding of one flush) with 1,000 and with 100,000 steps recorded, timed alternately."""
    rng = np.random.default_rng(0)
    layers = tuple(f"layers.{i}.{kind}" for i in range(20) for kind in ("weight", "bias"))
    states = {}
    for total in (1_000, 100_000):
        live = LiveDiagnosis(task={"num_classes": 10})
        for start in range(1, total + 1, 256):
            _feed(live, start, min(256, total + 1 - start), rng, layers)
        states[total] = live
    timings: dict[int, list[float]] = {total: [] for total in states}
    feeding: dict[int, list[float]] = {total: [] for total in states}
    rows = {total: len(live.window.run_data().scalars) for total, live in states.items()}
    for _ in range(repeats):
        for total, live in states.items():  # alternate, so drifts in the machine's speed hit both alike
            started = time.perf_counter()
            live.check()  # the same history each time: the work of a check at exactly this many steps
            timings[total].append(time.perf_counter() - started)
    for _ in range(repeats):
        for total, live in states.items():
            started = time.perf_counter()
            _feed(live, total + 1, 256, rng, layers)
            feeding[total].append(time.perf_counter() - started)
    print("\nCost of one flush's live work (median of "
          f"{repeats}, a 40-tensor model, 256 steps per flush, timed alternately):")
    for total in states:
        print(f"  {total:>7,} steps recorded: check {statistics.median(timings[total]) * 1e3:6.1f} ms, "
              f"feeding {statistics.median(feeding[total]) * 1e3:5.2f} ms, window {rows[total]:,} values")
    ratio = statistics.median(timings[100_000]) / statistics.median(timings[1_000])
    print(f"  100,000 / 1,000 steps: {ratio:.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help=f"scenarios (default: {', '.join(SCENARIOS)})")
    parser.add_argument("--skip-healthy", action="store_true", help="leave out the healthy sample and corpus runs")
    parser.add_argument("--skip-cost", action="store_true", help="leave out the per-flush cost")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        rows = [scenario_row(name, SCENARIOS[name], root / name) for name in (args.only or SCENARIOS)]
        print_scenarios(rows)
        if not args.skip_healthy:
            healthy_samples(root)
            corpus_runs()
    if not args.skip_cost:
        check_cost()
    print(f"\n({time.perf_counter() - started:.0f} s; lag = live raise step − offline onset; flushes = live "
          "checks from the onset to the one that raised it, inclusive; saved = planned steps not taken with "
          "stop_on='critical'; warning = what stop_on='warning' would have saved)")


if __name__ == "__main__":
    main()
