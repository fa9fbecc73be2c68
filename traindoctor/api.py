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
        from traindoctor.store.reader import open_store

        run = load_run(open_store(store), run)
    return diagnose_run_data(run, strict=strict)
