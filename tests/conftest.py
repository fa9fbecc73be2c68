"""Fixtures shared across the test folders."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for the test, as CI runs (make test): a reduction's order, and so the
    curves a test trains, do not vary with the machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
