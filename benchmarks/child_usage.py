"""CPU time and peak memory of one command, for the command-line benchmarks.

``os.wait4`` returns the finished child's own resource usage: its user +
system CPU seconds and its maximum resident set size (Linux: KiB).

One trap: Linux keeps a process's peak RSS across ``exec`` from the memory
image it had before, and a forked child starts with a copy of its parent's.
A command started straight from a benchmark that holds pandas and a few
stores in memory would report the benchmark's few hundred MB as its own
peak. So the command is started by a small launcher (a bare ``python -S``,
~10 MB), which waits for it with ``os.wait4`` and reports what it used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

# Runs argv (JSON, argv[1]) with stdout and stderr to files, waits with wait4,
# writes {returncode, cpu_s, max_rss_kb} to argv[4].
_LAUNCHER = """
import json, os, sys
argv, out, err, result = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
pid = os.fork()
if pid == 0:
    os.dup2(os.open(out, os.O_WRONLY), 1)
    os.dup2(os.open(err, os.O_WRONLY), 2)
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(result, "w") as handle:
    json.dump({"returncode": os.waitstatus_to_exitcode(status), "cpu_s": usage.ru_utime + usage.ru_stime,
               "max_rss_kb": usage.ru_maxrss}, handle)
"""


@dataclass(frozen=True)
class Usage:
    """One command's cost: CPU seconds (user + system), wall seconds, peak RSS in MB, exit code, output."""

    cpu_s: float
    wall_s: float
    max_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def measure(argv: Sequence[str], *, timeout_s: float = 600.0) -> Usage:
    """Run ``argv`` to completion through the launcher and return what it cost."""
    with tempfile.TemporaryDirectory(prefix="child-usage-") as folder:
        out, err, result = (Path(folder) / name for name in ("out", "err", "result.json"))
        out.touch()
        err.touch()
        start = time.perf_counter()
        subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, json.dumps(list(argv)), str(out), str(err),
                        str(result)], check=True, timeout=timeout_s, env=os.environ.copy())
        wall = time.perf_counter() - start
        report = json.loads(result.read_text())
        return Usage(report["cpu_s"], wall, report["max_rss_kb"] / 1024, report["returncode"],
                     out.read_text(errors="replace"), err.read_text(errors="replace"))


def traindoctor_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m traindoctor``."""
    script = Path(sys.executable).with_name("traindoctor")
    return [str(script)] if script.exists() else [sys.executable, "-m", "traindoctor"]


def checked(usage: Usage, what: str) -> Usage:
    """``usage``, or exit with the command's last stderr when it failed."""
    if usage.returncode != 0:
        raise SystemExit(f"{what} failed ({usage.returncode}): {usage.stderr.strip()[-800:]}")
    return usage
