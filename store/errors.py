"""The store's exceptions, and its once-only warnings, shared by the writer, the reader and the importers.

They live apart from both halves so that reading a store never imports the
writer, and writing never imports the reader.
"""

from __future__ import annotations

import threading
import warnings


class StoreError(Exception):
    """A problem with the store or its input, with a one-line message."""


class UnknownRunError(StoreError):
    """No run with that id or name."""


class OnceWarnings:
    """RuntimeWarnings given once per distinct message (thread-safe): a store read again and again
    (a dashboard's polling, a catalog listed per page) names each skipped file or rebuilt summary once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._given: set[str] = set()

    def warn(self, message: str, *, stacklevel: int) -> None:
        """``warnings.warn(message, RuntimeWarning)`` unless given before; ``stacklevel`` as for
        :func:`warnings.warn` called where this is called."""
        with self._lock:
            if message in self._given:
                return
            self._given.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)
