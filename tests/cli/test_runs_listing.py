"""``traindoctor runs --filter/--sort/--limit`` (read from the run catalog only) and the CLI's cold start."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from traindoctor.cli import main
from traindoctor.diagnosis.cache import Diagnosis, keep
from traindoctor.diagnosis.finding import Finding
from traindoctor.store.catalog import Catalog
from traindoctor.store.segments import RunWriter

# name -> (lr, status, val loss, severity of a cached finding or None, diagnosed)
RUNS = {
    "adam-small": (1e-4, "finished", 0.40, None, True),
    "adam-large": (0.06796311435460393, "finished", 0.90, "critical", True),
    "sgd-mid": (1e-2, "crashed", 0.55, "warning", True),
    "sgd-live": (3e-4, "running", 0.70, None, False),
}


@pytest.fixture
def store(tmp_path):
    """Four runs with different lr, status, val loss and cached findings; ``sgd-live`` is still writing."""
    writers = []
    for index, (name, (lr, status, val_loss, severity, diagnosed)) in enumerate(RUNS.items()):
        writer = RunWriter(tmp_path, run_id=f"2026010{index}-000000-{index:06x}", name=name,
                           config={"lr": lr, "optimizer": name.split("-")[0]}, background=False)
        writer.add_scalars(step=np.arange(1, 11 + index), name="loss", value=np.linspace(2, 1, 10 + index))
        writer.add_scalars(step=10 + index, name="loss", split="val", value=val_loss)
        writer.flush()
        if status != "running":
            writer.close(status)
        else:
            writers.append(writer)
        if diagnosed:
            catalog = Catalog(tmp_path)
            summary = catalog.summary(writer.run_id)
            findings = [] if severity is None else [
                Finding(rule="loss_spike", severity=severity, title="t", message="m", advice="a")]
            keep(catalog, Diagnosis(run_id=writer.run_id, name=name, findings=findings,
                                    fingerprint=summary["fingerprint"]))
    yield tmp_path
    for writer in writers:
        writer.close()


def listed(capsys, store, *args) -> list[str]:
    """Names ``runs --json`` prints for these arguments, in order."""
    assert main(["runs", "--store", str(store), "--json", *args]) == 0
    return [row["name"] for row in json.loads(capsys.readouterr().out)]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--filter", "status=running"], ["sgd-live"]),
        (["--filter", "lr<1e-3"], ["sgd-live", "adam-small"]),
        (["--filter", "lr>=1e-2", "--sort", "lr"], ["sgd-mid", "adam-large"]),
        (["--filter", "name~ADAM", "--sort", "name"], ["adam-large", "adam-small"]),
        (["--filter", "optimizer=sgd", "--filter", "status!=running"], ["sgd-mid"]),
        (["--filter", "has:critical"], ["adam-large"]),
        (["--filter", "has:warning", "--sort", "name"], ["adam-large", "sgd-mid"]),
        (["--filter", "has:loss_spike", "--sort", "name"], ["adam-large", "sgd-mid"]),
        (["--filter", "diagnosed=false"], ["sgd-live"]),
        (["--filter", "val.loss<0.6", "--sort", "val.loss"], ["adam-small", "sgd-mid"]),
        (["--sort", "lr"], ["adam-small", "sgd-live", "sgd-mid", "adam-large"]),
        (["--sort=-lr", "--limit", "2"], ["adam-large", "sgd-mid"]),
        (["--sort", "steps", "--limit", "1"], ["adam-small"]),
        ([], ["sgd-live", "sgd-mid", "adam-large", "adam-small"]),  # newest first
        (["--filter", "lr<0", "--limit", "3"], []),
    ],
    ids=["status", "lr-below", "lr-at-least-sorted", "name-contains-any-case", "two-filters-and",
         "has-critical", "has-warning-or-worse", "has-rule", "undiagnosed", "metric", "sort-ascending",
         "sort-descending-limit", "sort-steps", "default-newest-first", "nothing-matches"],
)
def test_filter_sort_and_limit(capsys, store, args, expected):
    assert listed(capsys, store, *args) == expected


def test_the_table_shows_numbers_to_significant_digits_and_cached_findings(capsys, store):
    assert main(["runs", "--store", str(store), "--filter", "name=adam-large"]) == 0
    out = capsys.readouterr().out
    assert "6.8e-02" in out and "0.0679" not in out
    assert "1C" in out  # one critical finding, from the cache
    assert "1 run (4 in the store)" in out


def test_the_table_says_which_runs_are_not_diagnosed(capsys, store):
    assert main(["runs", "--store", str(store)]) == 0
    assert "1 not diagnosed yet" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, fragment",
    [(["--filter", "lr"], "cannot read filter"), (["--filter", "lrr<1"], "no run has a field 'lrr'"),
     (["--sort", "nothing"], "no run has a field 'nothing'"), (["--limit", "-1"], "--limit"),
     # These matched every run: "<3" and "" compared as text, which every number passes.
     (["--filter", "lr<<3"], "one operator, then the value"), (["--filter", "batch_size>="], "has no value"),
     (["--filter", "lr=>0.1"], "one operator, then the value"),
     # These matched no run, silently: a finding no rule can raise.
     (["--filter", "has:loss_spikes"], "unknown finding 'loss_spikes' in filter 'has:loss_spikes'; did you mean "
                                       "has:loss_spike?"),
     (["--filter", "has:nonsense"], "use has:critical, has:warning, has:info or has:RULE"),
     # A time compared with a date: it matched nothing, silently, or needed the exact second.
     (["--filter", "started>yesterday"], "started takes a date or time in UTC"),
     (["--filter", "started=2026-11-30"], "compare started with <, <=, > or >=")],
    ids=["no-operator", "unknown-key", "unknown-sort-key", "negative-limit", "doubled-operator", "no-value",
         "swapped-operator", "misspelt-rule", "unknown-finding", "not-a-date", "date-equality"],
)
def test_bad_queries_are_one_line_errors(capsys, store, args, fragment):
    assert main(["runs", "--store", str(store), *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_help_documents_the_filter_grammar(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["runs", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for fragment in ("KEY=VALUE", "KEY<VALUE", "has:critical", "lr<1e-3", "--sort=-KEY"):
        assert fragment in out


def test_version(capsys):
    from traindoctor import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"traindoctor {__version__}"


def test_diagnose_all_and_latest_use_the_cache(capsys, store):
    assert main(["diagnose", "--store", str(store), "--latest", "2", "--json"]) == 0
    names = [run["name"] for run in json.loads(capsys.readouterr().out)["runs"]]
    assert names == ["sgd-live", "sgd-mid"]
    assert main(["diagnose", "--store", str(store), "--all", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["runs"]) == len(RUNS)


HEAVY = ("pandas", "duckdb", "pyarrow", "numpy", "traindoctor.diagnosis.engine")


def loaded_by(argv: list[str]) -> set[str]:
    code = ("import sys, json\nfrom traindoctor.cli import main\n"
            f"code = main({argv!r})\n"
            f"print(json.dumps([code, [m for m in {list(HEAVY)!r} if m in sys.modules]]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    code, modules = json.loads(result.stdout.strip().splitlines()[-1])
    assert code == 0
    return set(modules)


def test_listing_and_a_cached_diagnosis_load_no_pandas_duckdb_or_rules(tmp_path):
    """Cold start: what these commands answer from the catalog and the cache needs none of them."""
    writer = RunWriter(tmp_path, name="short", config={"lr": 0.1}, background=False)
    writer.add_scalars(step=np.arange(1, 101), name="loss", value=np.linspace(2, 1, 100))
    writer.close()
    assert main(["diagnose", "--store", str(tmp_path), "short"]) == 0  # computed and cached here
    assert loaded_by(["runs", "--store", str(tmp_path)]) == set()
    assert loaded_by(["diagnose", "--store", str(tmp_path), "short"]) == set()
    assert loaded_by(["runs", "--store", str(tmp_path), "--filter", "lr>0.01"]) == set()


def test_the_listing_knows_every_rule_the_diagnosis_has():
    """store.listing keeps its own list of rule ids (the store layer does not import the diagnosis)."""
    from traindoctor.diagnosis.engine import RULES
    from traindoctor.store.listing import RULE_IDS

    assert sorted(RULE_IDS) == sorted(RULES)


def test_a_long_or_wide_name_does_not_break_the_table(tmp_path, capsys):
    """A 300-character name is cut to MAX_CELL_WIDTH columns (with …), and a wide emoji counts as two
    columns, so every row's next column starts at the same place."""
    from traindoctor.cli import MAX_CELL_WIDTH, display_width
    from traindoctor.store.segments import RunWriter

    for name in ("x" * 300, "résumé-🚀-run", "plain"):
        writer = RunWriter(tmp_path, name=name, config={"lr": 0.1}, background=False)
        writer.add_scalars(step=[1, 2], name="loss", value=[1.0, 0.5])
        writer.close()
    assert main(["runs", "--store", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("x" * (MAX_CELL_WIDTH - 1) + "…") for line in lines)
    run_id_columns = {display_width(re.split(r"\d{8}-\d{6}-", line)[0]) for line in lines[1:4]}
    assert len(run_id_columns) == 1, lines


def test_a_run_that_recorded_no_training_step_reads_nothing_recorded_not_ok(tmp_path, capsys):
    # The findings column said 'ok' for a run `diagnose` calls NOTHING RECORDED (an eval-only log).
    writer = RunWriter(tmp_path, name="evals-only", background=False)
    writer.add_scalars(step=np.array([100, 200]), value=np.array([2.0, 1.5]), split="val", name="loss")
    writer.close("finished")
    assert main(["diagnose", "--all", "--store", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["runs", "--store", str(tmp_path)]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("evals-only")]
    assert row.endswith("nothing recorded")
    # ... and import's line said '; no findings' for a log of eval metrics only.
    log = tmp_path / "evals.csv"
    log.write_text("step,split,name,value\n100,val,loss,2.0\n200,val,loss,1.5\n")
    assert main(["import", "csv", str(log), "--store", str(tmp_path / "imported")]) == 0
    assert capsys.readouterr().out.rstrip().endswith("; nothing recorded: no training loss to judge")


@pytest.mark.parametrize(("query", "expected"), [
    ("started>=2026-11-30", ["late"]),
    ("started<2026-11-30 00:00", ["early"]),
    ("started>2026-11-29T09:59:59+00:00", ["late", "early"]),
    ("started<=1796032800", ["late", "early"]),  # Unix seconds, as before
], ids=["date", "date-and-time", "with-offset", "unix-seconds"])
def test_started_filters_take_a_date_as_the_table_shows_it(tmp_path, capsys, query, expected):
    # `--filter 'started>2026-11-30'` matched no run, silently: started is Unix seconds, shown as a UTC date.
    for name, started in (("early", 1796032800 - 86400), ("late", 1796032800)):  # 2026-11-29/30 10:00 UTC
        writer = RunWriter(tmp_path, name=name, created_at=started, background=False)
        writer.add_scalars(step=[1, 2], name="loss", value=[1.0, 0.5])
        writer.close()
    assert listed(capsys, tmp_path, "--filter", query) == expected


def test_a_probe_run_without_config_lists_and_filters_by_the_optimizer_lr(tmp_path, capsys):
    """Regression: `Probe(run=...)` without config= had no lr in the runs table, and `--filter 'lr<1'`
    said no run has a field 'lr'. The lr comes from the optimizer the probe saw: a scheduler's base lr
    (initial_lr), not the warm-up's 0 it held at watch()."""
    import torch

    from traindoctor import Probe

    for name, warm_up in (("plain", False), ("warmed", True)):
        model = torch.nn.Linear(4, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, step / 10)) if warm_up else None
        with Probe(run=name, store=tmp_path, handle_sigterm=False) as probe:
            probe.watch(model, optimizer)
            for _ in range(3):
                optimizer.zero_grad()
                loss = model(torch.randn(8, 4)).pow(2).mean()
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                probe.step(loss=loss)
    capsys.readouterr()
    assert main(["runs", "--store", str(tmp_path), "--filter", "lr<1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    rows = rows["runs"] if isinstance(rows, dict) else rows
    assert sorted((row["name"], row["hyperparameters"]["lr"]) for row in rows) == [("plain", 0.05), ("warmed", 0.05)]


@pytest.mark.parametrize("text", ["val.loss>abc", "steps<=many"])
def test_ordering_a_number_field_by_text_is_an_error(capsys, store, text):
    """Regression: 'val.loss>abc' compared the text 'nan' with 'abc' and listed a diverged run; an
    ordering filter on a field that holds numbers needs a number."""
    capsys.readouterr()
    assert main(["runs", "--store", str(store), "--filter", text]) == 2
    assert "holds numbers; compare it with a number" in capsys.readouterr().err


@pytest.mark.parametrize("args, expected", [
    (["--filter", "train.loss=nan"], ["nan"]),
    (["--filter", "name=nan"], ["nan"]),
    (["--filter", "kind=nan"], ["nan"]),
    (["--filter", "train.loss!=nan"], ["healthy"]),
    (["--filter", "train.loss<nan"], []),
], ids=["metric-is-nan", "name-is-nan", "config-text-is-nan", "metric-is-not-nan", "nan-orders-nothing"])
def test_a_nan_filter_finds_the_runs_that_hold_nan(tmp_path, capsys, args, expected):
    """Regression: NaN equals nothing, itself included, so 'train.loss=nan' (the diverged runs) and
    'name=nan' listed no run at all."""
    for index, (name, last_loss) in enumerate((("nan", float("nan")), ("healthy", 0.5))):
        writer = RunWriter(tmp_path, run_id=f"2026010{index}-000000-{index:06x}", name=name, config={"kind": name},
                           background=False)
        writer.add_scalars(step=np.arange(1, 11), name="loss", value=np.r_[np.linspace(2, 1, 9), last_loss])
        writer.close("finished")
    assert listed(capsys, tmp_path, *args) == expected


@pytest.mark.parametrize(("last", "shown"), [(5.8e-09, "3.6"), (float("nan"), "nan")],
                         ids=["thrashing-mean-of-the-last-10", "diverged-nan"])
def test_the_table_shows_the_training_loss_as_the_runs_page_does_not_its_last_minibatch(tmp_path, capsys, last,
                                                                                        shown):
    """Regression: `runs` printed the last minibatch's loss (5.8e-09 for a run thrashing around 4), the
    Runs page the mean of the last logged losses (issue #17): one store, two training losses. A run
    whose last loss is NaN reads nan, not the mean of its last finite losses."""
    losses = np.r_[np.full(99, 4.0), last]
    writer = RunWriter(tmp_path, run_id="20260101-000000-000000", name="thrashing", background=False)
    writer.add_scalars(step=np.arange(1, 101), name="loss", value=losses)
    writer.close("finished")
    assert main(["runs", "--store", str(tmp_path)]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    cells = dict(zip(re.split(r"\s{2,}", header.strip()), re.split(r"\s{2,}", row.strip())))
    assert cells["train loss"] == shown
