"""CPU time and peak memory of one child process, for the command-line benchmarks.

``os.wait4`` returns the finished child's own resource usage: its user +
system CPU seconds and its maximum resident set size, unaffected by other
children (``getrusage(RUSAGE_CHILDREN)`` sums CPU over every child so far and
keeps the largest ``ru_maxrss`` of them all). Linux reports ``ru_maxrss`` in KiB.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Usage:
    """One child's cost: CPU seconds (user + system), wall seconds, peak RSS in MB, exit code, output."""

    cpu_s: float
    wall_s: float
    max_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def measure(argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
            timeout_s: float = 600.0) -> Usage:
    """Run ``argv`` to completion (killed after ``timeout_s``) and return what it cost."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env, cwd=cwd, text=True)
        timer = threading.Timer(timeout_s, process.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        return Usage(usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024, process.returncode,
                     out.read(), err.read())
