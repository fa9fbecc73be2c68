"""Cold start of the ``traindoctor`` command: CPU time of the short commands a user types.

Each command runs in a fresh process (the installed ``traindoctor`` script,
so interpreter start-up counts, as it does for a user) and is measured with
``os.wait4``: user + system CPU seconds and peak RSS of that process alone.
CPU time, not wall time, because a shared machine's load inflates wall time;
each figure is the median of ``--repeats`` runs.

The package's modules are byte-compiled first (``compileall`` over the
folders the installed package maps to), as ``pip install`` leaves a wheel:
an editable install on a machine with ``PYTHONDONTWRITEBYTECODE=1`` (this
one) would otherwise compile every traindoctor module from source in every
process, 0.07–0.17 s of CPU no user of the wheel pays. ``--no-compile``
measures that state instead: it removes the package's own bytecode and runs
the commands with ``PYTHONDONTWRITEBYTECODE=1``.

- ``traindoctor --version``;
- ``traindoctor runs`` on the demo store (``sample_runs/store``), its summaries already written;
- ``traindoctor import csv`` of a 2,000-step log (train loss and lr every
  step, val loss and accuracy every 100 steps: 4,040 values) into an empty
  store (it diagnoses the imported run in the same process and caches the
  findings), then ``traindoctor diagnose`` of it (answered from the cache);
  and the same with ``import --no-diagnose``, whose ``diagnose`` computes;
- for scale, the floor under import + diagnose: a bare interpreter, and one
  that imports numpy and pyarrow (what the two commands load: the rules work
  on numpy columns and the run is read with pyarrow, ``store.run_tables``;
  neither command loads pandas or DuckDB), with one OpenBLAS thread as the
  command sets.

With ``--peer "CMD {log}"`` the same log is also given to a peer tool (a
log linter installed in its own environment), for comparison. Target
(issue 13): import + diagnose of a short log in at most 0.5 s of CPU.

Usage: python benchmarks/cli_start.py [--repeats N] [--peer "CMD {log}"] [--no-compile]
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import math
import os
import random
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from child_usage import Usage, checked, measure, traindoctor_command  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEMO_STORE = REPO / "sample_runs" / "store"
TARGET_IMPORT_AND_DIAGNOSE_S = 0.5
# What the command itself does before numpy loads (traindoctor.cli._one_blas_thread), then the libraries.
LIBRARIES_CODE = "import os; os.environ.setdefault('OPENBLAS_NUM_THREADS', '1'); import numpy, pyarrow"
LOG_STEPS = 2000


def write_log(path: Path, steps: int = LOG_STEPS) -> int:
    """A tidy CSV training log: a decaying noisy loss and a constant lr every step, val every 100."""
    rng = random.Random(0)
    rows = ["step,split,name,value"]
    for step in range(1, steps + 1):
        rows.append(f"{step},train,loss,{2.3 * math.exp(-step / 500) + 0.1 + 0.05 * rng.random():.6f}")
        rows.append(f"{step},train,lr,0.1")
        if step % 100 == 0:
            rows.append(f"{step},val,loss,{2.3 * math.exp(-step / 500) + 0.2:.6f}")
            rows.append(f"{step},val,accuracy,{1 - math.exp(-step / 500):.6f}")
    path.write_text("\n".join(rows) + "\n")
    return len(rows) - 1


# The installed package and its subpackages (each maps to a folder of the repository).
PACKAGES = ("traindoctor", "traindoctor.store", "traindoctor.diagnosis", "traindoctor.probe", "traindoctor.dashboard")


def compile_package() -> list[str]:
    """Byte-compile the installed package's source folders (as a wheel's install does); returns them."""
    folders = sorted({folder for name in PACKAGES
                      for folder in importlib.util.find_spec(name).submodule_search_locations or ()})
    for folder in folders:
        if not compileall.compile_dir(folder, quiet=1):
            sys.exit(f"cli_start: could not byte-compile {folder}")
    return folders


def remove_package_bytecode() -> None:
    """The package's own ``__pycache__`` folders removed, and no process writing them again."""
    for name in PACKAGES:
        for folder in importlib.util.find_spec(name).submodule_search_locations or ():
            for cache in Path(folder).rglob("__pycache__"):
                shutil.rmtree(cache, ignore_errors=True)
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"  # the commands inherit it


def median_usage(samples: list[Usage]) -> tuple[float, float, float]:
    return (statistics.median(u.cpu_s for u in samples), statistics.median(u.wall_s for u in samples),
            max(u.max_rss_mb for u in samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peer", default=None, help='a peer command on the same log, "{log}" marking its path')
    parser.add_argument("--no-compile", action="store_true",
                        help="do not byte-compile the package first (an editable install without bytecode)")
    args = parser.parse_args()
    if args.no_compile:
        remove_package_bytecode()
    compiled = [] if args.no_compile else compile_package()
    command = traindoctor_command()
    results: dict[str, list[Usage]] = {}
    with tempfile.TemporaryDirectory(prefix="cli-start-") as folder:
        folder = Path(folder)
        log = folder / "log.csv"
        values = write_log(log)
        checked(measure([*command, "runs", "--store", str(DEMO_STORE)]), "runs (warm-up: summaries)")
        for repeat in range(args.repeats):
            store = folder / f"store-{repeat}"
            results.setdefault("--version", []).append(checked(measure([*command, "--version"]), "--version"))
            results.setdefault("runs (demo store)", []).append(
                checked(measure([*command, "runs", "--store", str(DEMO_STORE)]), "runs"))
            results.setdefault("import csv (diagnoses too)", []).append(checked(measure(
                [*command, "import", "csv", str(log), "--store", str(store), "--run", "short", "--no-progress"]),
                "import"))
            results.setdefault("diagnose (cached by import)", []).append(
                checked(measure([*command, "diagnose", "short", "--store", str(store)]), "diagnose"))
            shutil.rmtree(store, ignore_errors=True)
            results.setdefault("import csv --no-diagnose", []).append(checked(measure(
                [*command, "import", "csv", str(log), "--store", str(store), "--run", "short", "--no-progress",
                 "--no-diagnose"]), "import --no-diagnose"))
            results.setdefault("diagnose (computed)", []).append(
                checked(measure([*command, "diagnose", "short", "--store", str(store)]), "diagnose"))
            results.setdefault("python (bare interpreter)", []).append(
                checked(measure([sys.executable, "-c", "pass"]), "python"))
            results.setdefault("python: numpy, pyarrow", []).append(
                checked(measure([sys.executable, "-c", LIBRARIES_CODE]), "libraries"))
            if args.peer:
                results.setdefault(f"peer: {args.peer}", []).append(
                    measure([part.replace("{log}", str(log)) for part in shlex.split(args.peer)]))
            shutil.rmtree(store, ignore_errors=True)

    print(f"CPU seconds per command (median of {args.repeats}; log: {LOG_STEPS:,} steps, {values:,} values; "
          + (f"package byte-compiled first, as a wheel install leaves it: {', '.join(compiled)})" if compiled else
             "package NOT byte-compiled: --no-compile)"))
    print(f"{'command':34} {'CPU s':>7} {'wall s':>7} {'peak MB':>8}")
    medians = {}
    for name, samples in results.items():
        cpu, wall, rss = medians[name] = median_usage(samples)
        print(f"{name:34} {cpu:7.3f} {wall:7.3f} {rss:8.0f}")
    total = medians["import csv (diagnoses too)"][0] + medians["diagnose (cached by import)"][0]
    separate = medians["import csv --no-diagnose"][0] + medians["diagnose (computed)"][0]
    print(f"{'import + diagnose':34} {total:7.3f}   target <= {TARGET_IMPORT_AND_DIAGNOSE_S} s CPU: "
          f"{'met' if total <= TARGET_IMPORT_AND_DIAGNOSE_S else 'not met'}")
    print(f"{'  (import --no-diagnose + diagnose)':34} {separate:7.3f}   each process pays the start-up")
    floor = medians["python: numpy, pyarrow"][0]
    print(f"{'  above the libraries it needs':34} {total - floor:7.3f}   (numpy and pyarrow alone: {floor:.3f} s)")
    if not args.peer:
        print("no peer log linter given (--peer 'CMD {log}' compares one on the same log)")


if __name__ == "__main__":
    main()
