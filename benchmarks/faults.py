"""Fault matrix for the store (issue #18): what survives kills, outages and crowds.

Each case prints the rows its writers added (expected), the rows a reader
finds (kept), the difference (lost), the rows the run itself records as
dropped (``rows_dropped``), and whether the case keeps the store's promise:

- **SIGKILL** (``--kills`` times): a writer process (``RunWriter``, the
  background thread publishing every ``--flush-every-s``) is killed at a
  random moment. Kept steps must be 1..n with no gap and no step twice; only
  rows added in the last flush interval (plus ``PUBLISH_SLACK_S``) may be
  lost. A killed process records nothing, so nothing is "recorded".
- **Outage** of each kind, ``--outage-s`` long, while a writer adds rows
  at a steady rate: a file in place of the table folder (real), a full disk,
  a read-only store and a permission error (injected into the Parquet write:
  running as root, chmod blocks nothing). With the default budget nothing is
  lost; with a small budget (``--budget-rows``) every lost row is recorded.
- **Same rank**: two processes write rank 0 of one run id at once (ranks
  that share an id before ``init_process_group``). Both keep every row and
  each names the other in a warning.
- **Crowd**: ``--writers`` processes (runs of four ranks) write while a
  reader compacts every run in turn and counts rows; every count must have
  each key once and never shrink, and every row must be there at the end.

Usage: python benchmarks/faults.py [--kills 20] [--outage-s 6] [--writers 32] [--flush-every-s 2]
"""

from __future__ import annotations

import argparse
import errno
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import traindoctor.store.segments as segments  # noqa: E402
from traindoctor.store.compact import compact_run  # noqa: E402
from traindoctor.store.reader import Store  # noqa: E402
from traindoctor.store.segments import RunWriter  # noqa: E402

# A killed writer may lose the rows of its last flush interval, plus what it
# added while that flush was being written (~10 ms; a loaded machine more).
PUBLISH_SLACK_S = 0.5
# Rows a writer adds per chunk (every CHUNK_PAUSE_S): loss and grad_norm per step.
STEPS_PER_CHUNK = 10
CHUNK_PAUSE_S = 0.02
OUTAGE_KINDS = ("file-in-place-of-folder", "disk-full", "read-only", "permission-denied")
_INJECTED = {"disk-full": errno.ENOSPC, "read-only": errno.EROFS, "permission-denied": errno.EACCES}


@dataclass
class Result:
    """One case of the matrix: rows expected, kept and recorded as dropped."""

    case: str
    expected: int
    kept: int
    recorded: int | None  # rows the run records as dropped; None where nothing can record (a kill)
    allowed: int  # rows the promise lets this case lose unrecorded
    ok: bool
    note: str = ""

    @property
    def lost(self) -> int:
        return self.expected - self.kept


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=env, text=True, **kwargs)


# ------------------------------------------------------------------ SIGKILL

_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from traindoctor.store.segments import RunWriter
    root, flush_every_s, per_chunk, pause = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    writer = RunWriter(root, run_id="victim", flush_every_s=flush_every_s)
    print("ready", flush=True)
    step = 0
    while True:
        steps = np.arange(step + 1, step + per_chunk + 1)
        writer.add_scalars(step=steps, name="loss", value=steps * 0.5)
        writer.add_scalars(step=steps, name="grad_norm", value=steps * 0.25)
        step += per_chunk
        print(step, time.monotonic(), flush=True)  # CLOCK_MONOTONIC: the same clock in every process
        time.sleep(pause)
""")


def sigkill_case(root: Path, rng: random.Random, flush_every_s: float, index: int,
                 slack_s: float = PUBLISH_SLACK_S) -> Result:
    """Kill a writer at a random moment; check what it had published.

    Rows added more than ``flush_every_s + slack_s`` before the kill must be
    kept: a flush is due every ``flush_every_s``, and writing it takes a little.
    """
    child = _python(_KILLED_WRITER, str(root), str(flush_every_s), str(STEPS_PER_CHUNK), str(CHUNK_PAUSE_S),
                    stdout=subprocess.PIPE)
    added: list[tuple[int, float]] = []
    try:
        assert child.stdout.readline().strip() == "ready", "the writer did not start"
        # A line cut short by the kill (one field, or none) is not a row the writer reported added.
        reader = threading.Thread(target=lambda: added.extend(
            (int(fields[0]), float(fields[1])) for fields in (line.split() for line in child.stdout)
            if len(fields) == 2), daemon=True)
        reader.start()
        started = time.monotonic()
        time.sleep(rng.uniform(0.2, 4 * flush_every_s))  # the random moment of the kill
        killed_at = time.monotonic()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        reader.join(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    rows = Store(root).scalars(["victim"])
    steps = rows.loc[rows["name"] == "loss", "step"].sort_values().tolist()
    expected_steps = added[-1][0] if added else 0
    kept_steps = len(steps)
    problems = []
    if steps != list(range(1, kept_steps + 1)):
        problems.append("a gap or a step twice")
    if not (rows["value"] == rows["step"] * np.where(rows["name"] == "loss", 0.5, 0.25)).all():
        problems.append("wrong values")
    # Steps added before (kill - flush interval - slack) must all be there.
    due = max((step for step, at in added if at < killed_at - flush_every_s - slack_s), default=0)
    lost = [(step, at) for step, at in added if step > kept_steps]
    age = killed_at - lost[0][1] if lost else 0.0  # how long before the kill the oldest lost rows were added
    if kept_steps < due:
        problems.append(f"lost rows added {age:.2f} s before the kill")
    note = "; ".join(problems) or (f"lost rows added at most {age:.2f} s before the kill" if lost else "nothing lost")
    return Result(f"sigkill #{index + 1} after {killed_at - started:.2f} s", 2 * expected_steps,
                  2 * min(kept_steps, expected_steps), None, 2 * (expected_steps - due), not problems, note)


# ------------------------------------------------------------------- outages

class Outage:
    """Makes one run's store unwritable, the way a real store fails.

    Used as a context manager (it swaps the writer's Parquet module for
    :attr:`proxy`), or by tests that install :attr:`proxy` themselves.
    Running as root, chmod blocks nothing, so read-only, permission and
    disk-full failures are injected into the Parquet write (a disk-full one
    after writing part of the file, as a full disk does).
    """

    def __init__(self, kind: str, run_dir: Path) -> None:
        self.kind, self.run_dir, self.active = kind, run_dir, False
        real = pq.write_table

        self.attempts = 0  # publish attempts while the store was down

        def write_table(table, where, **kwargs):
            if self.active:
                self.attempts += 1
            if self.active and kind in _INJECTED:
                if kind == "disk-full":
                    Path(where).write_bytes(b"PAR1" + b"\0" * 4096)  # a full disk fails partway
                raise OSError(_INJECTED[kind], os.strerror(_INJECTED[kind]))
            return real(table, where, **kwargs)

        self.proxy = SimpleNamespace(write_table=write_table, read_schema=pq.read_schema)

    def __enter__(self) -> "Outage":
        segments.pq = self.proxy
        return self

    def __exit__(self, *exc_info) -> None:
        self.end()
        segments.pq = pq

    def start(self) -> None:
        self.active = True
        if self.kind == "file-in-place-of-folder":
            folder = self.run_dir / "scalars"
            folder.rename(folder.with_name("scalars.away"))
            folder.write_text("not a folder")

    def end(self) -> None:
        if self.active and self.kind == "file-in-place-of-folder":
            folder = self.run_dir / "scalars"
            folder.unlink()
            folder.with_name("scalars.away").rename(folder)
        self.active = False


def outage_case(root: Path, kind: str, outage_s: float, flush_every_s: float,
                budget_rows: int | None = None) -> Result:
    """A writer adds rows steadily; the store fails for ``outage_s`` in the middle."""
    run_id = f"outage-{kind}" + ("-budget" if budget_rows else "")
    budget = {} if budget_rows is None else {"max_unpublished_rows": budget_rows}
    steps = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        writer = RunWriter(root, run_id=run_id, flush_every_s=flush_every_s, heartbeat_every_s=flush_every_s,
                           **budget)
        with Outage(kind, writer.run_dir) as outage:
            # (until, then): the outage lasts outage_s and at least one
            # publish attempt (a loaded machine can hold the writer back).
            schedule = [(lambda elapsed: elapsed >= 2 * flush_every_s, outage.start),
                        (lambda elapsed: elapsed >= outage_s and outage.attempts > 0, outage.end),
                        (lambda elapsed: elapsed >= 2 * flush_every_s, None)]
            for done, then in schedule:
                started = time.monotonic()
                while not done(time.monotonic() - started):
                    chunk = np.arange(steps + 1, steps + STEPS_PER_CHUNK + 1)
                    writer.add_scalars(step=chunk, name="loss", value=chunk * 0.5)
                    writer.add_scalars(step=chunk, name="grad_norm", value=chunk * 0.25)
                    steps += STEPS_PER_CHUNK
                    time.sleep(CHUNK_PAUSE_S)
                if then is not None:
                    then()
        writer.close()
    store = Store(root)
    kept = len(store.scalars([run_id]))
    meta = store.run_meta(run_id)
    recorded = sum(entry["rows"] for entry in meta.get("rows_dropped", []) if entry["table"] == "scalars")
    events = store.events([run_id], kinds=["rows_dropped"])
    expected = 2 * steps
    ok = kept + recorded == expected and len(events) == len(meta.get("rows_dropped", []))
    if budget_rows is None:
        ok = ok and recorded == 0
    failures = [str(w.message) for w in caught if "cannot be written" in str(w.message)]
    note = (f"{len(failures)} failure warning(s); " if failures else "no failure warned; ") + \
           ("store back: " + ("yes" if any("written again" in str(w.message) for w in caught) else "no"))
    label = f"outage {kind} {outage_s:g} s" + (f", budget {budget_rows:,} rows" if budget_rows else "")
    return Result(label, expected, kept, recorded, 0, ok and bool(failures), note)


# ----------------------------------------------------------------- same rank

_SAME_RANK_WRITER = textwrap.dedent("""
    import os, sys, time, warnings
    from pathlib import Path
    import numpy as np
    from traindoctor.store.segments import RunWriter
    root, tag, steps = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])

    def wait_for(condition):  # conditions, not sleeps: a loaded machine may hold either process back
        deadline = time.monotonic() + 120
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)

    def named():
        return sum("is also recording rank 0" in str(w.message) for w in caught)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        root.mkdir(parents=True, exist_ok=True)
        (root / f".ready-{tag:g}").touch()
        wait_for(lambda: len(list(root.glob(".ready-*"))) == 2)  # both start at once, as torchrun's ranks do
        writer = RunWriter(root, run_id="shared", name="shared", rank=0, flush_every_s=0.1, heartbeat_every_s=0.1)
        for first in range(1, steps + 1, 20):
            chunk = np.arange(first, min(first + 20, steps + 1))
            writer.add_scalars(step=chunk, name="loss", value=np.full(len(chunk), tag))
            time.sleep(0.05)
        wait_for(named)  # the other writer registers; this one's next heartbeat names it
        if named():
            (root / f".named-{tag:g}").touch()
        # Both stay live until each has named the other: the older writer names a
        # newcomer at its next heartbeat, which a loaded machine may delay past the
        # newcomer's last step.
        wait_for(lambda: len(list(root.glob(".named-*"))) == 2)
        writer.close()
    print(named())
""")


def same_rank_case(root: Path, steps: int = 400) -> Result:
    children = [_python(_SAME_RANK_WRITER, str(root), str(tag), str(steps), stdout=subprocess.PIPE)
                for tag in (1, 2)]
    named = [int(child.communicate(timeout=600)[0].strip() or 0) for child in children]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = Store(root).query("SELECT value, count(*) AS n FROM scalars_raw GROUP BY value ORDER BY value")
    kept = dict(zip(rows["value"].astype(int), rows["n"]))
    ok = kept == {1: steps, 2: steps} and all(named)
    return Result("two writers of rank 0", 2 * steps, sum(kept.values()), None, 0, ok,
                  f"rows per writer {kept}; each named the other: {'yes' if all(named) else named}")


# -------------------------------------------------------------------- crowd

_CROWD_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from traindoctor.store.segments import RunWriter
    root, run_id, rank, chunks = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    layers = ("fc1.weight", "fc1.bias", "fc2.weight")
    with RunWriter(root, run_id=run_id, name=run_id, rank=rank, world_size=4, flush_every_s=0.05) as writer:
        for chunk in range(chunks):
            steps = np.arange(chunk * 10 + 1, chunk * 10 + 11)
            writer.add_scalars(step=steps, name="loss", value=steps * 0.1)
            for step in steps:
                writer.add_scalars(step=int(step), name="grad_norm", layer=layers, value=np.ones(3))
            time.sleep(0.02)
""")
_CROWD_COUNTS = """
    SELECT run_id, rank, count(*) AS n,
           count(DISTINCT (step, split, name, coalesce(layer, '<global>'))) AS distinct_keys
    FROM scalars GROUP BY ALL ORDER BY ALL
"""


def crowd_case(root: Path, writers: int, chunks: int = 60) -> Result:
    """``writers`` processes (runs of four ranks) and a compacting, counting reader."""
    root.mkdir(parents=True, exist_ok=True)
    runs = [f"crowd-{index // 4:02d}" for index in range(writers)]
    children = [_python(_CROWD_WRITER, str(root), run_id, str(index % 4), str(chunks))
                for index, run_id in enumerate(runs)]
    store = Store(root)
    seen: dict[tuple[str, int], int] = {}
    anomalies: list[str] = []
    polls = compactions = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ranks 1-3 may start before rank 0 made run.json
        while any(child.poll() is None for child in children) or polls == 0:
            ids = store.run_ids()
            if ids:
                compact_run(store, ids[compactions % len(ids)])
                compactions += 1
            counts = store.query(_CROWD_COUNTS)
            polls += 1
            for run_id, rank, n, distinct in counts.itertuples(index=False):
                if n != distinct:
                    anomalies.append(f"{run_id} rank {rank}: {n - distinct} rows twice")
                if n < seen.get((run_id, rank), 0):
                    anomalies.append(f"{run_id} rank {rank}: {seen[(run_id, rank)]} rows, then {n}")
                seen[(run_id, rank)] = n
        codes = [child.wait(timeout=600) for child in children]
        final = store.query(_CROWD_COUNTS)
    per_writer = chunks * 10 * 4  # loss and three layers per step
    kept = int(final["n"].sum())
    ok = not anomalies and codes == [0] * writers and len(final) == writers and (final["n"] == per_writer).all()
    note = f"{polls} reader polls, {compactions} compactions; " + ("; ".join(anomalies[:3]) or "no anomalies")
    if any(codes):
        note += f"; writer exit codes {sorted(set(codes))}"
    return Result(f"{writers} writers + compacting reader", writers * per_writer, kept, None, 0, ok, note)


# -------------------------------------------------------------------- matrix

def run_matrix(root: Path, *, kills: int, outage_s: float, writers: int, flush_every_s: float,
               budget_rows: int, seed: int = 0, kinds=OUTAGE_KINDS, slack_s: float = PUBLISH_SLACK_S,
               report=print) -> list[Result]:
    """Every case, each in its own store under ``root``; ``report`` gets each result as it comes."""
    rng = random.Random(seed)
    results = []

    def record(result: Result) -> None:
        results.append(result)
        report(result)

    for index in range(kills):
        record(sigkill_case(root / f"kill-{index}", rng, flush_every_s, index, slack_s))
    for kind in kinds:
        record(outage_case(root / f"outage-{kind}", kind, outage_s, flush_every_s))
    record(outage_case(root / "outage-budget", kinds[0], outage_s, flush_every_s, budget_rows=budget_rows))
    record(same_rank_case(root / "same-rank"))
    record(crowd_case(root / "crowd", writers))
    return results


def format_row(result: Result) -> str:
    recorded = "-" if result.recorded is None else f"{result.recorded:,}"
    return (f"{result.case:<56} {result.expected:>9,} {result.kept:>9,} {result.lost:>7,} {recorded:>9} "
            f"{result.allowed:>8,}  {'ok' if result.ok else 'FAIL':<4}  {result.note}")


HEADER = (f"{'case':<56} {'expected':>9} {'kept':>9} {'lost':>7} {'recorded':>9} {'allowed':>8}  "
          f"{'':<4}  note")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--outage-s", type=float, default=6.0)
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--flush-every-s", type=float, default=2.0,
                        help="the writers' flush interval (2 s: the probe's and the writer's default)")
    parser.add_argument("--budget-rows", type=int, default=2000,
                        help="unpublished-row budget of the outage case that must drop rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", type=Path, help="keep the stores here (default: a temporary folder)")
    args = parser.parse_args(argv)
    print("rows: expected = added by the writers, kept = read back, recorded = the run's rows_dropped, "
          "allowed = what the case may lose unrecorded (a kill: its last flush interval)")
    print(HEADER)
    with tempfile.TemporaryDirectory(prefix="traindoctor-faults-") as scratch:
        root = args.store or Path(scratch)
        results = run_matrix(root, kills=args.kills, outage_s=args.outage_s, writers=args.writers,
                             flush_every_s=args.flush_every_s, budget_rows=args.budget_rows, seed=args.seed,
                             report=lambda result: print(format_row(result), flush=True))
    failed = [result.case for result in results if not result.ok]
    print(f"{len(results) - len(failed)} of {len(results)} cases hold" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
