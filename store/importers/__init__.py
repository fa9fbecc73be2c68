"""Bring runs logged by other tools into the store.

``import_source(kind, store_root, path)`` reads a tidy CSV, TensorBoard event
files, a Lightning CSVLogger folder, an HF Trainer ``trainer_state.json``,
local W&B run folders, MLflow runs (through a tracking URI), a JSONL file or
a terminal log, and writes one run per source. Each importer module is loaded
only when its kind is asked for, so ``import store.importers`` loads no
framework.

Example:
    >>> import_source("tensorboard", "runs", "lightning_logs/")   # doctest: +SKIP
    [ImportResult(run_id='20260101-120000-ab12cd', name='version_0', rows=1200, skipped=False, source='...')]
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from traindoctor.store.errors import StoreError
from traindoctor.store.importers.common import ImportResult, import_runs, reading_input

__all__ = ["KINDS", "KIND_OPTIONS", "ImportResult", "import_source"]

# kind → module implementing discover(path, run_name, **options) and parse(source, progress)
KINDS = {
    "csv": "traindoctor.store.importers.tidy_csv",
    "tensorboard": "traindoctor.store.importers.tensorboard",
    "lightning": "traindoctor.store.importers.lightning",
    "hf": "traindoctor.store.importers.hf",
    "wandb": "traindoctor.store.importers.wandb",
    "mlflow": "traindoctor.store.importers.mlflow",
    "jsonl": "traindoctor.store.importers.jsonl",
    "log": "traindoctor.store.importers.terminal_log",
}
# Options only some kinds take (passed to their discover()).
KIND_OPTIONS = {
    "mlflow": ("experiment", "run_id"),
    "log": ("pattern", "log_every"),
}
# The options among those that change what a source's parse produces (the rest pick sources).
_PARSE_OPTIONS = {"log": ("pattern", "log_every")}


def import_source(
    kind: str,
    store_root: str | os.PathLike,
    path: str | os.PathLike | None,
    *,
    run_name: str | None = None,
    num_classes: int | None = None,
    task: str | None = None,
    progress: bool | None = None,
    **options: Any,
) -> list[ImportResult]:
    """Import the run(s) at ``path`` into the store at ``store_root``.

    Args:
        kind: one of ``KINDS``.
        store_root: the store folder (created when the first run is written).
        path: a file or folder, as each kind accepts; for ``mlflow`` a
            tracking URI or a local store's path (None: MLflow's default).
        run_name: the run's name (a prefix when a folder holds several runs);
            by default a name derived from the path.
        num_classes: sets ``task.num_classes`` (lets the rules check the
            initial loss against ln(C) and accuracy against chance); the
            same as ``task="classification:C"``.
        task: what the loss measures, as ``--task`` takes it:
            ``classification[:C]``, ``lm[:V]``, ``regression`` or ``unknown``
            (:func:`traindoctor.store.importers.task.parse_task_option`). It
            overrides what the source states (an HF ``config.json``, a
            Lightning ``hparams.yaml``); without either, a run's task is
            what its source states, else unknown.
        progress: a progress bar on stderr; ``None`` shows one only when
            stderr is a terminal.
        options: what only some kinds take (``KIND_OPTIONS``): ``experiment``
            and ``run_id`` for mlflow, ``pattern`` and ``log_every`` for log.
            None values are ignored.

    Returns:
        One ``ImportResult`` per run; ``skipped=True`` where the same source
        (same kind, path and contents) was imported before.

    Raises:
        StoreError: with a one-line reason (``ImportInputError`` for input the
            import rules refuse); the store is then unchanged.
    """
    if kind not in KINDS:
        raise StoreError(f"unknown import kind {kind!r}: use one of {', '.join(KINDS)}")
    if run_name is not None and not str(run_name).strip():
        raise StoreError(f"--run needs a name, got {run_name!r}")
    if num_classes is not None and int(num_classes) < 1:
        raise StoreError(f"--num-classes must be a positive integer, got {num_classes}")
    given = None
    if task is not None:
        from traindoctor.store.importers.task import parse_task_option

        given = parse_task_option(task)
        if num_classes is not None and (given["kind"] != "classification"
                                        or given.get("num_classes", num_classes) != num_classes):
            raise StoreError(f"--num-classes {num_classes} contradicts --task {task}")
    options = {name: value for name, value in options.items() if value is not None}
    for name in options:
        if name not in KIND_OPTIONS.get(kind, ()):
            raise StoreError(f"--{name.replace('_', '-')} does not apply to import {kind}")
    module = importlib.import_module(KINDS[kind])
    if getattr(module, "PATH_IS_URI", False):
        # A tracking URI (or None for the tool's default): the importer checks it.
        root: Path | str = "" if path is None else os.fspath(path)
        with reading_input(root or f"the default {kind} tracking URI"):
            sources = module.discover(path, run_name, **options)
    else:
        if path is None:
            raise StoreError(f"import {kind} needs a PATH")
        root = Path(path).expanduser()
        if not root.exists():
            raise StoreError(f"unreadable file {root}: no such file or folder")
        with reading_input(root):
            sources = module.discover(root, run_name, **options)
    # Options that change how a source reads (log's pattern and cadence) are part of what was imported:
    # the same file with another --pattern is imported again, not skipped as "already imported".
    settings = {name: value for name, value in options.items() if name in _PARSE_OPTIONS.get(kind, ())}
    return import_runs(kind, store_root, sources, module.parse, root=root, num_classes=num_classes, task=given, progress=progress,
                       progress_unit=getattr(module, "PROGRESS_UNIT", "B"), settings=settings)
