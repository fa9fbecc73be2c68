"""The ``traindoctor`` command (docs/design.md, "CLI").

Exit codes: 0 ok, 1 findings at or above ``--fail-on``, 2 usage or input
error, reported as one line on stderr. Heavy modules (Streamlit, DuckDB,
the importers) are imported inside the command that needs them, so
``traindoctor --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

EXIT_OK, EXIT_FINDINGS, EXIT_INPUT = 0, 1, 2
IMPORT_KINDS = ("csv", "tensorboard", "lightning", "hf", "wandb", "mlflow", "jsonl", "log")
FAIL_ON = ("info", "warning", "critical")


# C0 and C1 control characters (ESC, BEL, the CSI introducer, …) but not the
# newline and tab that lay out a report: a run, layer or metric name holding
# "\x1b[2J" or an OSC 52 clipboard write must print as text, not act.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_text(text: str) -> str:
    """``text`` with every control character but newline and tab shown as an escape (``\\x1b``).

    Example:
        >>> terminal_text("run\\x1b[2J")
        'run\\\\x1b[2J'
    """
    return _CONTROL_CHARACTERS.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def say(text: str = "", *, file=None) -> None:
    """Print one block of human-readable output, control characters escaped."""
    print(terminal_text(str(text)), file=file or sys.stdout)


class CommandError(Exception):
    """An input or usage problem, reported as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise CommandError(f"{message} (see '{self.prog} --help')")


def _store_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store", metavar="DIR", default=None,
        help="the store folder, or an object-store URL (s3://bucket/prefix, gs://..., az://...) "
             "(default: $TRAINDOCTOR_STORE, else ./traindoctor_runs; an older ./runs store "
             "is still read while ./traindoctor_runs does not exist)",
    )


def port_number(text: str) -> int:
    """``--port``: a TCP port from 1 to 65535 (argparse reports the ValueError as one line)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: give a number from 1 to 65535") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"invalid port {port}: give a number from 1 to 65535")
    return port


RUNS_HELP = """\
Filters (--filter, repeatable; every filter must hold):
  KEY=VALUE  KEY!=VALUE  KEY<VALUE  KEY<=VALUE  KEY>VALUE  KEY>=VALUE  KEY~TEXT (contains, any case)
  has:critical  has:warning  has:info    a cached finding at that severity or above
  has:RULE                               a cached finding of that rule (has:loss_spike)
Keys: name, run_id, status, project, steps, num_steps, started, finished, wall_time_s;
  a metric's last value as SPLIT.NAME (val.loss, train.loss, val.accuracy), its best as
  best.SPLIT.NAME; any hyperparameter by its config key (lr, batch_size, optimizer.betas; also
  config.KEY); critical, warning, info (cached findings per severity) and diagnosed.
A VALUE that reads as a number compares as a number (lr<1e-3); text compares exactly with = and
!=; started and finished also take a date or time in UTC ('started>=2026-11-30 08:00'). A run
without the KEY never matches. Findings come from the cache: 'traindoctor diagnose
--all' diagnoses the rest.
Sort (--sort KEY, or --sort=-KEY for descending; default newest first): any key above.
Examples:
  traindoctor runs --filter status=running
  traindoctor runs --filter 'lr<1e-3' --filter has:critical --sort val.loss --limit 10
  traindoctor runs --sort=-val.accuracy --limit 5
"""


def build_parser() -> argparse.ArgumentParser:
    from traindoctor import __version__

    parser = _Parser(prog="traindoctor", description="Diagnose PyTorch training runs.")
    parser.add_argument("--version", action="version", version=f"traindoctor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    ui = commands.add_parser("ui", help="open the dashboard on a store (binds 127.0.0.1)")
    _store_arg(ui)
    ui.add_argument("--port", type=port_number, default=8501, help="TCP port, 1-65535 (default 8501)")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind; set it to expose the dashboard on purpose")

    demo = commands.add_parser("demo", help="open the dashboard on the bundled sample runs")
    demo.add_argument("--port", type=port_number, default=8501, help="TCP port, 1-65535 (default 8501)")
    demo.add_argument("--host", default="127.0.0.1")

    runs = commands.add_parser(
        "runs", help="list, filter and sort the runs in a store (from the run catalog)",
        description="List the runs in a store from its run catalog (one small summary per run; "
                    "no segment is opened).", epilog=RUNS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _store_arg(runs)
    runs.add_argument("--filter", dest="filters", action="append", default=[], metavar="EXPR",
                      help="keep runs matching EXPR (see below); repeat to require several")
    runs.add_argument("--sort", metavar="KEY", default=None, help="sort by KEY; --sort=-KEY for descending (default: newest first)")
    runs.add_argument("--limit", metavar="N", type=int, default=None, help="show at most N runs")
    runs.add_argument("--json", action="store_true", help="print JSON instead of a table")

    diagnose = commands.add_parser(
        "diagnose", help="diagnose runs against the rules",
        description="Diagnose runs against the rules. Findings are cached per run content and diagnosis "
                    "engine version: a run diagnosed before answers from the cache.")
    diagnose.add_argument("runs", nargs="*", metavar="RUN", help="run id or name (the newest run with that name)")
    _store_arg(diagnose)
    diagnose.add_argument("--all", action="store_true", help="every run in the store")
    diagnose.add_argument("--latest", type=int, metavar="N", default=None, help="the N newest runs")
    diagnose.add_argument("--json", action="store_true", help="print the JSON report")
    diagnose.add_argument("--fail-on", choices=FAIL_ON, default=None,
                          help="exit 1 when a finding is at or above this severity")
    diagnose.add_argument("--no-cache", action="store_true", help="diagnose again, ignoring (and refreshing) the cache")

    importer = commands.add_parser(
        "import", help="import runs logged by other tools",
        description="Import runs logged by other tools. Importing the same source again is skipped; "
                    "a changed source replaces its earlier import. csv: a tidy file with columns "
                    "step,split,name,value and optional epoch,layer,wall_time, or a column per metric "
                    "(step or epoch,train_loss,val_loss,...). tensorboard: a log folder "
                    "(every folder holding event files becomes a run) or one event file. lightning: a "
                    "CSVLogger version folder (metrics.csv + hparams.yaml) or its metrics.csv. hf: an HF "
                    "Trainer output folder, a checkpoint folder or a trainer_state.json. wandb: a local W&B run "
                    "folder (run-*/ or offline-run-*/), its .wandb file, or a wandb/ folder of runs. mlflow: a "
                    "tracking URI or a local mlruns/ folder or SQLite file (default: MLflow's own default). "
                    "jsonl: one JSON object per line. log: a terminal log (HF Trainer dicts, nanoGPT, "
                    "Megatron-LM, fairseq, MMEngine, key=value and key: value lines).")
    importer.add_argument("kind", choices=IMPORT_KINDS)
    importer.add_argument("path", metavar="PATH", nargs="?", default=None,
                          help="what to import (for mlflow: TRACKING_URI, optional)")
    _store_arg(importer)
    importer.add_argument("--run", metavar="NAME", default=None, help="name for the imported run")
    importer.add_argument("--num-classes", type=int, default=None,
                          help="classes of the task: lets the rules compare the first loss with ln N")
    importer.add_argument("--task", metavar="KIND[:N]", default=None,
                          help="what the loss measures: classification[:C], lm[:V] (language modelling over V "
                               "tokens), regression or unknown; overrides what the source says (an HF config.json, "
                               "a Lightning hparams.yaml). Without a task, no rule judges the loss level")
    importer.add_argument("--no-diagnose", action="store_true",
                          help="leave the imported runs undiagnosed (by default they are diagnosed in this process "
                               "and their findings cached, so 'traindoctor diagnose' answers at once)")
    importer.add_argument("--no-progress", action="store_true",
                          help="no progress bar (shown by default only when stderr is a terminal)")
    importer.add_argument("--experiment", metavar="NAME", default=None, help="mlflow: only this experiment's runs")
    importer.add_argument("--run-id", metavar="ID", default=None, help="mlflow: only this run")
    importer.add_argument("--pattern", metavar="REGEX", default=None,
                          help="log: a regular expression with named groups: step (optional), epoch (optional) "
                               "and metrics, e.g. 'it (?P<step>\\d+) loss (?P<loss>\\S+)'")
    importer.add_argument("--log-every", metavar="N", type=int, default=None,
                          help="log: optimizer steps between records, for logs that print no step "
                               "(HF Trainer's logging_steps; read from the log when it prints it)")

    watch = commands.add_parser(
        "watch", help="follow running runs: a live table, each new finding once, diagnose's exit codes",
        description="Follow running runs (all running runs when no RUN is named): a table of step, loss and "
                    "last finding per run, and each new finding printed once as it appears: the probe's live "
                    "findings, and the live rules run on what the store holds so far; when a run ends, its "
                    "whole diagnosis. Exits when the runs end, or at once when a finding meets --fail-on.")
    watch.add_argument("runs", nargs="*", metavar="RUN", help="run id or name (default: every running run)")
    _store_arg(watch)
    watch.add_argument("--fail-on", choices=("warning", "critical"), default=None,
                       help="exit 1 as soon as a finding is at or above this severity")
    watch.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds between polls (default 2)")
    watch.add_argument("--notify-command", metavar="CMD", default=None,
                       help="run CMD (split like a shell would, run without one) for each new finding, "
                            "with the finding as JSON on its stdin")
    watch.add_argument("--wait", type=float, default=0.0, metavar="S",
                       help="wait up to S seconds for the store and the named runs (or, with no RUN, a "
                            "running run) to appear, for a watch started beside a job that has not begun "
                            "recording (default 0: they must exist now)")

    compact = commands.add_parser("compact", help="merge each run's segments into one sorted file")
    _store_arg(compact)

    export = commands.add_parser("export", help="export runs to one DuckDB database file")
    export.add_argument("--duckdb", metavar="FILE", required=True,
                        help="the DuckDB database file to write (refused if it exists, unless --overwrite)")
    export.add_argument("runs", nargs="*", metavar="RUN", help="runs to export (default: all)")
    _store_arg(export)
    export.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    return parser


def _open_store(path: str | None):
    from traindoctor.store.reader import open_store

    return open_store(path)


def _open_files(path: str):
    """The store as files (``store.files``): enough to list, read and diagnose
    runs, without DuckDB or pandas (0.4 s of a short command's CPU)."""
    from traindoctor.api import store_files

    return store_files(path)


def store_root(path: str | os.PathLike | None, *, must_exist: bool = True) -> Path:
    """The store folder ``--store`` names, else the default one.

    Raises:
        CommandError: ``must_exist`` and there is no such folder ("store not
            found", exit 2: distinct from a store with no runs, and from an
            unknown run in a store that exists).
    """
    from traindoctor.store.catalog import default_store_path

    if _remote_store(path) is not None:
        return _remote_store(path)  # an object-store URL: Store(url) reads it through its mirror
    root = Path(path).expanduser() if path is not None else default_store_path()
    if must_exist and not root.is_dir():
        why = "not a folder" if root.exists() else "no such folder"
        hint = ("pass --store DIR or set $TRAINDOCTOR_STORE" if path is None and not os.environ.get("TRAINDOCTOR_STORE")
                else "check the path")
        raise CommandError(f"store not found: {root} ({why}; {hint})")
    if path is None:
        _mention_the_old_default(root)
    return root


def _mention_the_old_default(root: Path) -> None:
    """Warn (one line) when the default store is the new one and the old default ``./runs`` holds runs too:
    runs recorded before the default changed would otherwise seem gone."""
    from traindoctor.store.catalog import holds_runs
    from traindoctor.store.format import DEFAULT_STORE, OLD_DEFAULT_STORE

    if str(root) == DEFAULT_STORE and holds_runs(OLD_DEFAULT_STORE):
        warnings.warn(f"./{OLD_DEFAULT_STORE} also holds traindoctor runs (the default store before "
                      f"./{DEFAULT_STORE}): pass --store {OLD_DEFAULT_STORE} to see them", stacklevel=2)


def _remote_store(path: str | None) -> str | None:
    """The object-store URL ``--store`` (else $TRAINDOCTOR_STORE) names; None for a folder."""
    text = path if path is not None else os.environ.get("TRAINDOCTOR_STORE")
    if not text or "://" not in text:
        return None
    from traindoctor.store.fs import is_remote

    return text if is_remote(text) else None


def _catalog(path: str | None, *, must_exist: bool = True):
    """The store's run catalog: reads summaries without pandas or DuckDB."""
    from traindoctor.store.catalog import Catalog

    remote = _remote_store(path)
    if remote is not None:
        # An object store is read through its local mirror (store.fs): the
        # Store's catalog brings it up to date before each read.
        store = _open_files(remote)
        store.sync()
        return store.catalog

    # A Store (and DuckDB) only for a run whose summary needs a query: a run of
    # an older version, or a resumed one.
    return Catalog(store_root(path, must_exist=must_exist), open_store=_open_store)


def command_runs(args: argparse.Namespace) -> int:
    from traindoctor.diagnosis.cache import cached_findings_summary, engine_version
    from traindoctor.store.listing import parse_filter, query, sort_key

    if args.limit is not None and args.limit < 0:
        raise CommandError("--limit must be 0 or more")
    catalog = _catalog(args.store)
    # The table needs the listing fields (one index file); --json prints whole summaries.
    summaries = catalog.summaries() if args.json else catalog.listing()
    engine = engine_version()
    selection = query(summaries, filters=args.filters, sort=args.sort, limit=args.limit,
                      findings=lambda summary: cached_findings_summary(summary, engine))
    if args.json:
        by_id = {summary["run_id"]: summary for summary in summaries}
        print(json.dumps(strict_json([runs_json_row(by_id[row["run_id"]], row) for row in selection.rows]),
                         default=str, allow_nan=False))
        return EXIT_OK
    if not summaries:
        say(f"no runs in {catalog.name}")
        return EXIT_OK
    by_id = {summary["run_id"]: summary for summary in summaries}
    # Columns for what the user sorted and filtered by, when the table lacks them.
    extra = [sort_key(args.sort)[0]] if args.sort else []
    extra += [parse_filter(text).key for text in args.filters]
    say(format_runs_table(selection.rows, [by_id[row["run_id"]] for row in selection.rows], extra=extra))
    shown = len(selection.rows)
    footer = (f"{shown} of {selection.matched} matching runs" if shown < selection.matched
              else f"{shown} run{'' if shown == 1 else 's'}")
    if selection.matched < selection.total:
        footer += f" ({selection.total} in the store)"
    if selection.undiagnosed:
        footer += f"; {selection.undiagnosed} not diagnosed yet (traindoctor diagnose --all)"
    say(footer)
    return EXIT_OK


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))) else value


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or ±Inf float, however deeply nested, as null.

    Strict JSON has no NaN, and a run's config or a finding's numbers may hold
    one (``config={"clip": float("inf")}``, a diverged metric): the output of
    ``--json`` stays parseable by any JSON reader instead of stopping.
    """
    if isinstance(value, float):
        return _finite_or_none(value)
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def runs_json_row(summary: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """One run of ``runs --json`` (docs/design.md): the runs view's columns, the
    stats, the flattened hyperparameters, last and best metrics and the cached
    findings counts (null when undiagnosed). Strict JSON: no NaN."""
    metrics = summary.get("metrics") or {}

    def last(split: str, name: str) -> Any:
        return _finite_or_none(((metrics.get(split) or {}).get(name) or {}).get("last"))

    row = {key: summary.get(key) for key in ("run_id", "name", "project", "status", "created_at", "heartbeat_at",
                                             "finished_at", "config", "env", "task", "num_classes", "source",
                                             "attempts", "last_step", "num_steps")}
    row.update(final_train_loss=last("train", "loss"), final_val_loss=last("val", "loss"),
               final_val_accuracy=last("val", "accuracy"), wall_time_s=summary.get("wall_time_s"),
               hyperparameters={k: _finite_or_none(v) for k, v in (summary.get("hyperparameters") or {}).items()},
               metrics={split: {name: {k: _finite_or_none(v) for k, v in values.items()}
                                for name, values in names.items()} for split, names in metrics.items()},
               findings={s: fields[s] for s in ("critical", "warning", "info")} if fields.get("diagnosed") else None)
    return row


# Columns of the runs table after the hyperparameters: (header, field). The training
# loss is the catalog's smoothed one (store.catalog.train_loss_tail), as on the Runs
# page: the last minibatch's is noise, and the two tables disagreed (2.23 against 2.31).
_TRAIN_LOSS_TAIL = "train_loss_tail"
_METRIC_COLUMNS = (("train loss", _TRAIN_LOSS_TAIL), ("val loss", "val.loss"), ("val acc", "val.accuracy"))
# A longer name or value is cut (with …) in the runs table: one 300-character name widened every row.
# The whole of it is in `runs --json`.
MAX_CELL_WIDTH = 40


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: wide East Asian characters and most emoji take two,
    combining marks none."""
    import unicodedata

    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def fit_cell(text: str, limit: int = MAX_CELL_WIDTH) -> str:
    """``text`` cut to at most ``limit`` terminal columns, ending in … when cut."""
    if display_width(text) <= limit:
        return text
    kept, used = [], 0
    for character in text:
        width = display_width(character)
        if used + width > limit - 1:
            break
        kept.append(character)
        used += width
    return "".join(kept) + "…"


def format_runs_table(rows: list[dict[str, Any]], summaries: list[dict[str, Any]], *,
                      extra: Sequence[str] = ()) -> str:
    """The runs as an aligned text table: identity, status, steps, start time,
    key hyperparameters, the training loss's recent mean, the last validation
    metrics and cached findings; numbers to three
    significant digits (an lr reads 6.8e-02)."""
    import time

    from traindoctor.numbers import significant
    from traindoctor.store.catalog import shown_train_loss
    from traindoctor.store.listing import key_hyperparameters

    hyperparameters = key_hyperparameters(summary.get("hyperparameters") or {} for summary in summaries)
    columns: list[tuple[str, str]] = [("name", "name"), ("run_id", "run_id"), ("status", "status"),
                                      ("steps", "steps"), ("started", "started")]
    columns += [(key, key) for key in hyperparameters]
    columns += list(_METRIC_COLUMNS)
    shown = {field for _, field in columns}
    for key in extra:
        if key and key not in shown and key not in ("has",) and any(key in row for row in rows):
            columns.append((key, key))
            shown.add(key)

    def cell(row: dict[str, Any], summary: dict[str, Any], field: str) -> str:
        value = shown_train_loss(summary) if field == _TRAIN_LOSS_TAIL else row.get(field)
        if field == "started":
            return "" if value is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(value))
        if field == "steps" and isinstance(value, int):
            return f"{value:,}"
        return significant(value)

    def findings(row: dict[str, Any], summary: dict[str, Any]) -> str:
        if not row.get("diagnosed"):
            return "-"
        counted = " ".join(f"{row[s]}{s[0].upper()}" for s in ("critical", "warning", "info") if row[s])
        steps = summary.get("num_steps")
        if not counted and row.get("status") != "running" and isinstance(steps, int) and steps == 0:
            return "nothing recorded"  # as diagnose says; --fail-on warning counts it
        return counted or "ok"

    header = [fit_cell(title) for title, _ in columns] + ["findings"]
    body = [[fit_cell(cell(row, summary, field)) for _, field in columns] + [findings(row, summary)]
            for row, summary in zip(rows, summaries)]
    widths = [max(display_width(line[i]) for line in [header, *body]) for i in range(len(header))]
    numeric = [i for i, (_, field) in enumerate(columns) if field not in ("name", "run_id", "status", "started")]

    def line(values: list[str]) -> str:
        padded = []
        for i, value in enumerate(values):
            pad = " " * (widths[i] - display_width(value))
            padded.append(pad + value if i in numeric else value + pad)
        return "  ".join(padded).rstrip()

    return "\n".join(line(values) for values in [header, *body])


def _runs_to_diagnose(args: argparse.Namespace, catalog) -> list[str]:
    """Run ids for ``diagnose``'s RUN arguments, --all or --latest N (in that order, without repeats)."""
    if not (args.runs or args.all or args.latest is not None):
        raise CommandError("the following arguments are required: RUN (or --all, or --latest N)")
    if args.latest is not None and args.latest < 1:
        raise CommandError("--latest must be 1 or more")
    chosen = [catalog.resolve(run) for run in args.runs]
    if args.all or args.latest is not None:
        newest_first = sorted(catalog.listing(), key=lambda s: (s.get("created_at") or 0.0, s["run_id"]), reverse=True)
        chosen += [s["run_id"] for s in (newest_first if args.all else newest_first[:args.latest])]
    return list(dict.fromkeys(chosen))


def command_diagnose(args: argparse.Namespace) -> int:
    from traindoctor.diagnosis.cache import cached_diagnosis, diagnose_cached, engine_version
    from traindoctor.diagnosis.finding import SEVERITY_RANK
    from traindoctor.diagnosis.report import interrupted_by_user, json_report, recorded_nothing, text_report

    catalog = _catalog(args.store)
    run_ids = _runs_to_diagnose(args, catalog)
    if not run_ids:  # --all or --latest N on a store without runs
        if args.json:
            print(json.dumps(json_report([])))
        else:
            say(f"no runs in {catalog.name}")
        return EXIT_OK
    engine = engine_version()
    # One store for every run that misses the cache, made on the first miss.
    store = None
    items = []
    for run_id in run_ids:
        summary = catalog.summary(run_id)
        diagnosis = None if args.no_cache else cached_diagnosis(catalog, summary, engine)
        if diagnosis is None:
            store = store or _open_files(str(catalog.root))
            diagnosis = diagnose_cached(catalog, summary, store=store, use_cache=False, engine=engine)
        items.append((diagnosis, diagnosis.findings))
    if args.json:
        print(json.dumps(strict_json(json_report(items)), indent=2, default=str, allow_nan=False))
    else:
        say(text_report(items))
    if args.fail_on:
        threshold = SEVERITY_RANK[args.fail_on]
        # A crashed run counts as a critical finding: its findings cover only what was recorded
        # (one its user stopped with Ctrl-C does not). An ended run that recorded no step counts as a
        # warning: nothing vouches for it.
        if any(SEVERITY_RANK[f.severity] >= threshold for _, findings in items for f in findings) or (
                threshold <= SEVERITY_RANK["critical"]
                and any(d.status == "crashed" and not interrupted_by_user(d) for d, _ in items)) or (
                threshold <= SEVERITY_RANK["warning"]
                and any(d.status != "running" and recorded_nothing(d) for d, _ in items)):
            return EXIT_FINDINGS
    return EXIT_OK


def command_import(args: argparse.Namespace) -> int:
    from traindoctor.store.importers import import_source

    if args.path is None and args.kind != "mlflow":
        raise CommandError(f"import {args.kind} needs a PATH (see 'traindoctor import --help')")
    catalog = _catalog(args.store, must_exist=False)  # an import makes the store
    results = import_source(args.kind, catalog.root, args.path, run_name=args.run, num_classes=args.num_classes,
                            task=args.task, progress=False if args.no_progress else None, experiment=args.experiment,
                            run_id=args.run_id, pattern=args.pattern, log_every=args.log_every)
    imported = [result.run_id for result in results if not result.skipped]
    if _remote_store(args.store) is not None:
        # Built in the mirror; uploaded before anything reads the bucket again.
        mirror = _open_files(_remote_store(args.store)).mirror
        for run_id in imported:
            mirror.push_run(run_id)
    verdicts = {} if args.no_diagnose else _diagnose_imported(catalog, imported)
    for result in results:
        if result.skipped:
            say(f"already imported: {result.name} ({result.run_id}) from {result.source}")
        else:
            again = "; it changed since its earlier import, which this replaces" if result.replaced else ""
            say(f"imported {result.name} ({result.run_id}): {result.rows:,} values from {result.source}"
                f"{again}{verdicts.get(result.run_id, '')}")
    return EXIT_OK


def _diagnose_imported(catalog, run_ids: list[str]) -> dict[str, str]:
    """Diagnose freshly imported runs and cache their findings: the import has
    paid for numpy and pyarrow already, so the diagnosis that usually follows
    costs a fraction of a second here instead of a second process's start-up.
    Returns run id -> a clause for the import line; an import never fails for
    its diagnosis."""
    from traindoctor.diagnosis.cache import diagnose_cached, engine_version
    from traindoctor.diagnosis.report import recorded_nothing

    if not run_ids:
        return {}
    engine = engine_version()
    store = _open_files(str(catalog.root))
    verdicts = {}
    for run_id in run_ids:
        try:
            diagnosis = diagnose_cached(catalog, catalog.summary(run_id), store=store, engine=engine)
        except Exception as error:  # a broken rule or an odd run: the import itself succeeded
            verdicts[run_id] = f"; not diagnosed ({type(error).__name__}: {error})"
            continue
        counts = [f"{sum(f.severity == s for f in diagnosis.findings)} {s}" for s in ("critical", "warning", "info")
                  if any(f.severity == s for f in diagnosis.findings)]
        # As diagnose says it: an import without a training loss (eval metrics only) vouches for nothing.
        empty = "; nothing recorded: no training loss to judge" if recorded_nothing(diagnosis) else "; no findings"
        verdicts[run_id] = f"; findings: {', '.join(counts)}" if counts else empty
    return verdicts


def command_watch(args: argparse.Namespace) -> int:
    from traindoctor.watch import notify_argv, wait_until_watchable, watch

    if not args.interval > 0:
        raise CommandError(f"--interval must be a positive number of seconds, got {args.interval}")
    if not args.wait >= 0 or math.isinf(args.wait):
        raise CommandError(f"--wait must be a number of seconds >= 0, got {args.wait}")
    if args.notify_command is not None:
        notify_argv(args.notify_command)  # before --wait: a mistyped pager command fails now
    store = wait_until_watchable(lambda: _open_store(store_root(args.store)), args.runs, wait_s=args.wait,
                                 interval_s=args.interval)
    return watch(store, args.runs, fail_on=args.fail_on, interval_s=args.interval,
                 notify_command=args.notify_command)


def command_compact(args: argparse.Namespace) -> int:
    from traindoctor.store.compact import compact_store

    store = _open_store(store_root(args.store))
    try:
        merged = compact_store(store)
    except PermissionError as error:  # a read-only store (another user's, a mounted share)
        raise CommandError(f"cannot compact {store.name}: no permission to write "
                           f"{error.filename or 'its run folders'} (compaction writes merged files "
                           f"into each run's folders)") from None
    changed = 0
    for run_id, tables in merged.items():
        count = sum(tables.values())
        if count:
            changed += 1
            say(f"{run_id}: merged {count} segment files")
    # Runs already in one file per table (or still being written) are left as they are.
    say(f"compacted {changed} of {len(merged)} runs in {store.name}"
        + ("" if changed == len(merged) else f" ({len(merged) - changed} had nothing to merge)"))
    return EXIT_OK


def command_export(args: argparse.Namespace) -> int:
    from traindoctor.store.export import export_duckdb

    store = _open_store(store_root(args.store))
    if not args.overwrite and os.path.lexists(args.duckdb) and not os.path.isdir(args.duckdb):
        # The library's message names its own overwrite=True; the CLI's switch is --overwrite.
        raise CommandError(f"{args.duckdb} already exists: pass --overwrite to replace it, or choose another file")
    summary = export_duckdb(store, args.duckdb, args.runs or None, overwrite=args.overwrite)
    counts = ", ".join(f"{table} {summary[table]:,} rows" for table in ("runs", "scalars", "confusion", "events"))
    say(f"exported to {summary.get('path', args.duckdb)}: {counts}")
    return EXIT_OK


def command_ui(args: argparse.Namespace, store_path: str | os.PathLike | None = None) -> int:
    remote = None if store_path is not None else _remote_store(args.store)
    if remote is not None:
        _open_store(remote).sync()  # an unreachable bucket fails here, in one line, not in the page
    path = remote or store_root(store_path or args.store)
    # Before any URL is printed: a URL for a port another server holds would open that server.
    check_port_free(args.host, args.port)
    from traindoctor.dashboard.serve import run_app

    return run_app(path, host=args.host, port=args.port)


def check_port_free(host: str, port: int) -> None:
    """Bind ``host:port`` once and let it go, as the server is about to.

    ``SO_REUSEADDR`` as Tornado sets it, so a port left in TIME_WAIT by a
    stopped server is not taken for busy; on Linux a listening socket on the
    port still makes the bind fail.

    Raises:
        CommandError: the port is in use, or ``host`` cannot be bound.
    """
    import errno
    import socket

    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as error:
        raise CommandError(f"cannot listen on host {host!r}: {error}") from None
    with socket.socket(family, kind, protocol) as probe_socket:
        probe_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe_socket.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise CommandError(f"port {port} is already in use on {host} (another server?): "
                                   "choose another with --port N") from None
            raise CommandError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def command_demo(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    store = sample_store_path()
    if not (store.is_dir() and any(store.iterdir())):
        raise CommandError(f"the sample runs are missing at {store}: reinstall traindoctor, or in a clone run "
                           "'python sample_runs/make_runs.py'")
    if store.name == "store":  # a source checkout's sample_runs/store: its caches are ignored by git
        return command_ui(args, store_path=str(store))
    # The installed copy: its folder may be read-only and must stay as pip
    # wrote it (the dashboard writes summaries and findings caches), so the
    # demo serves a copy (1.2 MB), removed when it stops.
    with tempfile.TemporaryDirectory(prefix="traindoctor-demo-") as folder:
        copy = Path(folder) / "sample_runs"
        shutil.copytree(store, copy)
        with warnings.catch_warnings():
            # The bundled runs ship without their catalog summaries (caches, ignored by git): built
            # here, before the page reads them, which warned that each of the 23 was "written by an
            # older traindoctor" on every start.
            warnings.filterwarnings("ignore", message=r".* had no summary\.json", category=RuntimeWarning)
            _catalog(str(copy)).listing()
        return command_ui(args, store_path=str(copy))


def sample_store_path() -> Path:
    """The sample runs ``traindoctor demo`` serves: a source checkout's
    ``sample_runs/store``, else the copy installed with the package
    (``traindoctor/sample_store``, pyproject.toml's package data)."""
    package = Path(__file__).resolve().parent
    checkout = package.parent / "sample_runs" / "store"
    return checkout if checkout.is_dir() else package / "sample_store"


COMMANDS = {
    "ui": command_ui,
    "demo": command_demo,
    "runs": command_runs,
    "diagnose": command_diagnose,
    "import": command_import,
    "watch": command_watch,
    "compact": command_compact,
    "export": command_export,
}


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    say(f"traindoctor: warning: {_one_line(message)}", file=sys.stderr)


# Commands that start the dashboard's server, which inherits this process's environment.
SERVER_COMMANDS = ("ui", "demo")


def _one_blas_thread() -> None:
    """One OpenBLAS thread for this command's own process, set before numpy is first imported.

    OpenBLAS starts a thread per core when numpy is imported: 0.07 s of CPU on
    2 cores (``import numpy``: 0.18 s, 0.11 s with one thread), more on a big
    node, for a command whose numpy work is elementwise or on arrays too small
    for BLAS threads to pay. A user's own setting wins; the library import path
    never sets it (a training script keeps its threads), nor do the commands
    that start the dashboard's server. What a command starts (watch's
    ``--notify-command``) inherits it.
    """
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``traindoctor`` console command (``argv``: None reads ``sys.argv``, as
    the installed command does; a list is an in-process call, which leaves the environment alone)."""
    from traindoctor.store.errors import StoreError

    warnings.showwarning = _one_line_warning
    try:
        parser = build_parser()
        if not (sys.argv[1:] if argv is None else list(argv)):
            # `traindoctor` alone: the commands, not only "arguments are required: COMMAND".
            parser.print_help(sys.stderr)
            raise CommandError("give a COMMAND (listed above)")
        args = parser.parse_args(argv)
        if argv is None and args.command not in SERVER_COMMANDS:
            _one_blas_thread()
        return COMMANDS[args.command](args)
    except (CommandError, StoreError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as error:
        say(f"traindoctor: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `traindoctor runs | head`
        return EXIT_OK


def _one_line(error: BaseException) -> Any:
    text = str(error) or type(error).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
