"""Bring runs logged by other tools into the store.

``import_source(kind, store_root, path)`` reads a tidy CSV, TensorBoard event
files, a Lightning CSVLogger folder or an HF Trainer ``trainer_state.json``
and writes one run per source. Each importer module is loaded only when its
kind is asked for, so ``import store.importers`` loads no framework.

Example:
    >>> import_source("tensorboard", "runs", "lightning_logs/")   # doctest: +SKIP
    [ImportResult(run_id='20260101-120000-ab12cd', name='version_0', rows=1200, skipped=False, source='...')]
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from traindoctor.store.errors import StoreError
from traindoctor.store.importers.common import ImportResult, import_runs, reading_input

__all__ = ["KINDS", "ImportResult", "import_source"]

# kind → module implementing discover(path, run_name) and parse(source, progress)
KINDS = {
    "csv": "traindoctor.store.importers.tidy_csv",
    "tensorboard": "traindoctor.store.importers.tensorboard",
    "lightning": "traindoctor.store.importers.lightning",
    "hf": "traindoctor.store.importers.hf",
}


def import_source(
    kind: str,
    store_root: str | os.PathLike,
    path: str | os.PathLike,
    *,
    run_name: str | None = None,
    num_classes: int | None = None,
    progress: bool | None = None,
) -> list[ImportResult]:
    """Import the run(s) at ``path`` into the store at ``store_root``.

    Args:
        kind: ``csv``, ``tensorboard``, ``lightning`` or ``hf``.
        store_root: the store folder (created when the first run is written).
        path: a file or folder, as each kind accepts.
        run_name: the run's name (a prefix when a folder holds several runs);
            by default a name derived from the path.
        num_classes: sets ``task.num_classes`` (lets the rules check the
            initial loss against ln(C) and accuracy against chance).
        progress: a progress bar on stderr; ``None`` shows one only when
            stderr is a terminal.

    Returns:
        One ``ImportResult`` per run; ``skipped=True`` where the same source
        (same kind, path and contents) was imported before.

    Raises:
        StoreError: with a one-line reason (``ImportInputError`` for input the
            import rules refuse); the store is then unchanged.
    """
    if kind not in KINDS:
        raise StoreError(f"unknown import kind {kind!r}: use one of {', '.join(KINDS)}")
    if num_classes is not None and int(num_classes) < 1:
        raise StoreError(f"--num-classes must be a positive integer, got {num_classes}")
    module = importlib.import_module(KINDS[kind])
    path = Path(path).expanduser()
    if not path.exists():
        raise StoreError(f"unreadable file {path}: no such file or folder")
    with reading_input(path):
        sources = module.discover(path, run_name)
    return import_runs(kind, store_root, sources, module.parse, root=path, num_classes=num_classes, progress=progress)
