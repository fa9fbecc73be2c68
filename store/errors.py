"""The store's one exception, shared by the writer, the reader and the importers.

It lives apart from both halves so that reading a store never imports the
writer, and writing never imports the reader.
"""

from __future__ import annotations


class StoreError(Exception):
    """A problem with the store or its input, with a one-line message."""
