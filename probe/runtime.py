"""Process-level plumbing for the probe: distributed ranks and the SIGTERM handler."""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable

from traindoctor.store.format import new_run_id


def distributed_context(run_id: str | None) -> tuple[int, int, str | None]:
    """(rank, world_size, run_id) from torch.distributed, sharing rank 0's run id.

    When a process group is initialised, rank 0's id (given or new) is sent
    to every rank with ``broadcast_object_list``: a collective, so every rank
    must create its Probe. Without one: (0, 1, run_id).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1, run_id
    rank, world_size = dist.get_rank(), dist.get_world_size()
    shared = [run_id or new_run_id()] if rank == 0 else [None]
    device = None
    if dist.get_backend() == "nccl":
        import torch

        device = torch.device("cuda", torch.cuda.current_device())
    dist.broadcast_object_list(shared, src=0, device=device)
    return rank, world_size, shared[0]


class Terminated(BaseException):
    """Raised in the main thread by the probe's SIGTERM handler inside a ``with Probe``.

    A BaseException, so ``except Exception`` in the training loop does not
    swallow it; the probe re-delivers SIGTERM with the default action after
    recording the crash, so the process ends as it would have.
    """


class SigtermHandler:
    """Installs a SIGTERM handler in the main thread and restores the previous one.

    ``on_signal(frame)`` is called first; it returns True to ask for a
    :class:`Terminated` exception (the probe is inside its ``with`` block and
    the previous action was the default one).
    """

    def __init__(self, on_signal: Callable[[Any], bool]) -> None:
        self._on_signal = on_signal
        self.previous: Any = None
        self.installed = False

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if previous == signal.SIG_IGN or previous is None:
            return  # SIGTERM is ignored (or set from C): leave it so.
        self.previous = previous
        signal.signal(signal.SIGTERM, self._handle)
        self.installed = True

    def _handle(self, signum: int, frame: Any) -> None:
        raise_terminated = self._on_signal(frame)
        previous = self.previous
        if callable(previous):
            previous(signum, frame)
        elif raise_terminated:
            raise Terminated("SIGTERM received")
        else:
            self.deliver_default()

    def deliver_default(self) -> None:
        """Restore the default action and re-send SIGTERM to this process."""
        import os

        self.uninstall()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    def uninstall(self) -> None:
        if not self.installed:
            return
        self.installed = False
        try:
            if signal.getsignal(signal.SIGTERM) == self._handle:
                signal.signal(signal.SIGTERM, self.previous)
        except ValueError:  # not in the main thread any more
            pass
