"""``traindoctor.diagnose``: the diagnosis of a run, from a store or from ``RunData``."""

from __future__ import annotations

import os

from traindoctor.diagnosis import diagnose as diagnose_run_data
from traindoctor.diagnosis.finding import Finding
from traindoctor.store.run_data import RunData, load_run


def diagnose(run: RunData | str, *, store: str | os.PathLike | None = None, strict: bool = False) -> list[Finding]:
    """The findings of one run, most severe first (critical, warning, info), then by step.

    Args:
        run: a :class:`RunData`, or a run_id or name (the newest run with that
            name) in ``store``.
        store: the store (a folder or an object-store URL) when ``run`` is a
            name; default ``$TRAINDOCTOR_STORE``, else ``./traindoctor_runs``
            (``./runs``, the old default, when only it holds runs).
        strict: re-raise a rule's own error instead of logging and skipping it.

    Raises:
        UnknownRunError: no run in ``store`` has that id or name.
        StoreError: ``store`` is not a readable store.

    Example:
        >>> from traindoctor import diagnose, RunData
        >>> diagnose(RunData(run_id="empty", name="empty"))
        []
    """
    if not isinstance(run, RunData):
        run = load_run(store_files(store), run)
    return diagnose_run_data(run, strict=strict)


def store_files(path: str | os.PathLike | None):  # noqa: ANN201
    """The store as files (``store.files.StoreFiles``): enough to list, read and diagnose runs, without DuckDB
    or pandas (0.4 s of a short command's CPU); DuckDB is opened only for a run summary the files' footers
    cannot give. ``path`` None: ``reader.open_store``'s choice (``$TRAINDOCTOR_STORE`` when it is a URL, else
    the default folder).

    Raises:
        StoreError: an object store that cannot be reached, or whose extra is not installed.
    """
    from traindoctor.store.catalog import default_store_path
    from traindoctor.store.files import StoreFiles

    if path is None and "://" in os.environ.get("TRAINDOCTOR_STORE", ""):
        path = os.environ["TRAINDOCTOR_STORE"]
    return StoreFiles(path if path is not None else default_store_path(), open_query_store=_query_store)


def _query_store(root):  # noqa: ANN001, ANN202
    """The DuckDB store, opened only for a run summary the files' footers cannot give."""
    from traindoctor.store.reader import Store

    return Store(root)
