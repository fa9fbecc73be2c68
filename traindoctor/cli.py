"""The ``traindoctor`` command (docs/design.md, "CLI").

Exit codes: 0 ok, 1 findings at or above ``--fail-on``, 2 usage or input
error, reported as one line on stderr. Heavy modules (Streamlit, DuckDB,
the importers) are imported inside the command that needs them, so
``traindoctor --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
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
        help="the store folder (default: $TRAINDOCTOR_STORE, else ./runs)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="traindoctor", description="Diagnose PyTorch training runs.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    ui = commands.add_parser("ui", help="open the dashboard on a store (binds 127.0.0.1)")
    _store_arg(ui)
    ui.add_argument("--port", type=int, default=8501)
    ui.add_argument("--host", default="127.0.0.1", help="address to bind; set it to expose the dashboard on purpose")

    demo = commands.add_parser("demo", help="open the dashboard on the bundled sample runs")
    demo.add_argument("--port", type=int, default=8501)
    demo.add_argument("--host", default="127.0.0.1")

    runs = commands.add_parser("runs", help="list the runs in a store")
    _store_arg(runs)
    runs.add_argument("--json", action="store_true", help="print JSON instead of a table")

    diagnose = commands.add_parser("diagnose", help="diagnose runs against the rules")
    diagnose.add_argument("runs", nargs="+", metavar="RUN", help="run id or name (the newest run with that name)")
    _store_arg(diagnose)
    diagnose.add_argument("--json", action="store_true", help="print the JSON report")
    diagnose.add_argument("--fail-on", choices=FAIL_ON, default=None,
                          help="exit 1 when a finding is at or above this severity")

    importer = commands.add_parser(
        "import", help="import runs logged by other tools",
        description="Import runs logged by other tools. Importing the same source again is skipped; "
                    "a changed source replaces its earlier import. csv: a tidy file with columns "
                    "step,split,name,value and optional epoch,layer,wall_time. tensorboard: a log folder "
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

    compact = commands.add_parser("compact", help="merge each run's segments into one sorted file")
    _store_arg(compact)

    export = commands.add_parser("export", help="export runs to one DuckDB database file")
    export.add_argument("--duckdb", metavar="FILE", required=True)
    export.add_argument("runs", nargs="*", metavar="RUN", help="runs to export (default: all)")
    _store_arg(export)
    export.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    return parser


def _open_store(path: str | None):
    from traindoctor.store.reader import open_store

    return open_store(path)


def command_runs(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    table = store.runs()
    if args.json:
        print(table.to_json(orient="records", default_handler=str))
        return EXIT_OK
    if table.empty:
        say(f"no runs in {store.root}")
        return EXIT_OK
    say(format_runs_table(table))
    return EXIT_OK


def format_runs_table(table) -> str:
    import pandas as pd

    shown = pd.DataFrame({
        "name": table["name"],
        "run_id": table["run_id"],
        "status": table["status"],
        "steps": table["last_step"].map(lambda v: "" if pd.isna(v) else f"{int(v):,}"),
        "started": pd.to_datetime(table["created_at"], unit="s", utc=True).dt.strftime("%Y-%m-%d %H:%M"),
        "train loss": table["final_train_loss"].map(lambda v: "" if pd.isna(v) else f"{v:.4g}"),
        "val loss": table["final_val_loss"].map(lambda v: "" if pd.isna(v) else f"{v:.4g}"),
        "val acc": table["final_val_accuracy"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}"),
    })
    return shown.to_string(index=False)


def command_diagnose(args: argparse.Namespace) -> int:
    from traindoctor.store.run_data import load_run
    from traindoctor.diagnosis import diagnose
    from traindoctor.diagnosis.finding import SEVERITY_RANK
    from traindoctor.diagnosis.report import json_report, text_report

    store = _open_store(args.store)
    items = []
    for run in args.runs:
        data = load_run(store, run)
        items.append((data, diagnose(data)))
    if args.json:
        print(json.dumps(json_report(items), indent=2, default=str, allow_nan=False))
    else:
        say(text_report(items))
    if args.fail_on:
        threshold = SEVERITY_RANK[args.fail_on]
        if any(SEVERITY_RANK[f.severity] >= threshold for _, findings in items for f in findings):
            return EXIT_FINDINGS
    return EXIT_OK


def command_import(args: argparse.Namespace) -> int:
    from traindoctor.store.importers import import_source

    if args.path is None and args.kind != "mlflow":
        raise CommandError(f"import {args.kind} needs a PATH (see 'traindoctor import --help')")
    store_root = _open_store(args.store).root
    results = import_source(args.kind, store_root, args.path, run_name=args.run, num_classes=args.num_classes,
                            progress=False if args.no_progress else None, experiment=args.experiment,
                            run_id=args.run_id, pattern=args.pattern, log_every=args.log_every)
    for result in results:
        if result.skipped:
            say(f"already imported: {result.name} ({result.run_id}) from {result.source}")
        else:
            say(f"imported {result.name} ({result.run_id}): {result.rows:,} values from {result.source}")
    return EXIT_OK


def command_compact(args: argparse.Namespace) -> int:
    from traindoctor.store.compact import compact_store

    store = _open_store(args.store)
    merged = compact_store(store)
    for run_id, tables in merged.items():
        count = sum(tables.values())
        if count:
            say(f"{run_id}: merged {count} segment files")
    say(f"compacted {len(merged)} runs in {store.root}")
    return EXIT_OK


def command_export(args: argparse.Namespace) -> int:
    from traindoctor.store.export import export_duckdb

    store = _open_store(args.store)
    summary = export_duckdb(store, args.duckdb, args.runs or None, overwrite=args.overwrite)
    counts = ", ".join(f"{table} {summary[table]:,} rows" for table in ("runs", "scalars", "confusion", "events"))
    say(f"exported to {summary.get('path', args.duckdb)}: {counts}")
    return EXIT_OK


def command_ui(args: argparse.Namespace, store_path: str | os.PathLike | None = None) -> int:
    from traindoctor.store.reader import default_store_path
    from traindoctor.dashboard.serve import run_app

    path = Path(store_path or args.store or default_store_path())
    return run_app(path, host=args.host, port=args.port)


def command_demo(args: argparse.Namespace) -> int:
    store = sample_store_path()
    if not (store.is_dir() and any(store.iterdir())):
        raise CommandError(f"the sample runs are missing at {store}: run 'python sample_runs/make_runs.py' in a clone")
    return command_ui(args, store_path=store)


def sample_store_path() -> Path:
    """The bundled sample store of a source checkout (``sample_runs/store``)."""
    return Path(__file__).resolve().parents[1] / "sample_runs" / "store"


COMMANDS = {
    "ui": command_ui,
    "demo": command_demo,
    "runs": command_runs,
    "diagnose": command_diagnose,
    "import": command_import,
    "compact": command_compact,
    "export": command_export,
}


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    say(f"traindoctor: warning: {_one_line(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``traindoctor`` console command."""
    from traindoctor.store.errors import StoreError

    warnings.showwarning = _one_line_warning
    try:
        args = build_parser().parse_args(argv)
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
