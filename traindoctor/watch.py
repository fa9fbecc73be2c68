"""``traindoctor watch``: follow running runs in a terminal and report each new finding once.

Each poll reads every watched run afresh from the store (only when its
files or status changed): its ``live_finding`` events (what the probe's live
checks raised) and the live rules run on everything recorded so far (so a
run recorded without live checks, or imported while it grows, is covered
too); once a run has ended, its whole diagnosis. Each finding is printed
once (by rule, severity and steps: :class:`~traindoctor.diagnosis.live.SeenFindings`),
and handed to ``--notify-command`` as JSON on its stdin.

The parts are separate: :class:`RunState` (what is known of one run),
:func:`status_line` and :func:`finding_line` (pure text), :class:`Notifier`
(the user's command) and :func:`watch` (the loop, which takes its clock,
its sleep and its output as arguments, for tests).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TextIO

from traindoctor.cli import EXIT_FINDINGS, EXIT_OK, CommandError, strict_json, terminal_text
from traindoctor.store.errors import StoreError, UnknownRunError

# A notify command that has not finished after 30 s is stopped: a hung
# mailer must not stop the watching.
NOTIFY_TIMEOUT_S = 30.0
ENDED = ("finished", "crashed")
# Clear from the cursor to the end of the screen; move the cursor up N lines to column 1.
_CLEAR_BELOW = "\x1b[J"
_LINES_UP = "\x1b[{}F"


@dataclass
class RunState:
    """What ``watch`` knows of one run.

    Attributes:
        run_id, name: the run.
        status: ``running``, ``finished`` or ``crashed`` (a stale heartbeat reads as crashed).
        step: the last step recorded (None before the first), ``loss`` the last training loss
            (NaN or ±Inf as recorded; None before the first).
        last_finding: the most recent finding printed, as a short text.
        ended: the run has ended and its whole diagnosis was reported.
        findings: every finding reported for it, in order (for the exit code).
        interrupted: a crashed run its user stopped (Ctrl-C: KeyboardInterrupt), which
            ``--fail-on`` does not count as critical.
    """

    run_id: str
    name: str
    status: str = "running"
    step: int | None = None
    loss: float | None = None
    last_finding: str = ""
    ended: bool = False
    findings: list[Any] = field(default_factory=list)
    seen: Any = None  # SeenFindings, made on first use
    files: tuple = ()  # (file names and sizes, status) when last read: unchanged means nothing new
    interrupted: bool = False


def status_line(state: RunState) -> str:
    """One line of the live table: run, status, step, loss, last finding."""
    step = "–" if state.step is None else f"{state.step:,}"
    loss = "–" if state.loss is None else f"{state.loss:.4g}"
    label = state.name if state.name == state.run_id else f"{state.name} ({state.run_id})"
    return f"{label}  {state.status}  step {step}  loss {loss}  last finding: {state.last_finding or '–'}"


def finding_line(state: RunState, finding: Any, source: str, raised_step: int | None) -> str:
    """``[critical] run: divergence at steps 129–240 (live, raised at step 140): title. message``."""
    span = finding.step_range
    where = ""
    if span is not None:
        where = f" at step {span[0]}" if span[0] == span[1] else f" at steps {span[0]}–{span[1]}"
    raised = f", raised at step {raised_step}" if raised_step is not None else ""
    label = state.name if state.name == state.run_id else f"{state.name} ({state.run_id})"
    return f"[{finding.severity}] {label}: {finding.rule}{where} ({source}{raised}): {finding.title}. {finding.message}"


def notify_argv(command: str) -> list[str]:
    """``--notify-command`` split into words (:func:`shlex.split`), its program checked now.

    A program that is not on $PATH (or a path that is not an executable
    file) is an error at the start, not one warning at the first finding,
    maybe hours later, while the pager never fires.

    Raises:
        CommandError: the command line is empty, cannot be split (unbalanced quotes), or names
            no program that can run.
    """
    import shutil

    try:
        argv = shlex.split(command)
    except ValueError as error:
        raise CommandError(f"--notify-command cannot be split into words: {error}") from None
    if not argv:
        raise CommandError("--notify-command is empty")
    if shutil.which(argv[0]) is None:
        raise CommandError(f"--notify-command: no program {argv[0]!r} "
                           + ("(not an executable file)" if os.sep in argv[0] else "on $PATH"))
    return argv


class Notifier:
    """Runs the user's ``--notify-command`` once per new finding, the finding as JSON on its stdin.

    The command line is split with :func:`shlex.split` and run without a
    shell. A command that fails (cannot start, exits non-zero, runs over
    NOTIFY_TIMEOUT_S) is reported once on stderr; watching goes on and
    later findings are still handed to it.

    Raises:
        CommandError: the command line is empty or cannot be split (unbalanced quotes), or its
            program is not found (:func:`notify_argv`).
    """

    def __init__(self, command: str, *, warn: Callable[[str], None], timeout_s: float = NOTIFY_TIMEOUT_S) -> None:
        self.argv = notify_argv(command)
        self.warn = warn
        self.timeout_s = timeout_s
        self.failures = 0

    def notify(self, payload: dict[str, Any]) -> None:
        data = json.dumps(strict_json(payload), default=str, allow_nan=False).encode("utf-8")
        try:
            result = subprocess.run(self.argv, input=data, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    timeout=self.timeout_s, check=False)
            problem = None if result.returncode == 0 else (
                f"exit status {result.returncode}: "
                + (result.stderr.decode("utf-8", "replace").strip().splitlines() or [""])[-1])
        except subprocess.TimeoutExpired:
            problem = f"still running after {self.timeout_s:g} s, stopped"
        except OSError as error:
            problem = f"{type(error).__name__}: {error}"
        if problem is not None:
            self.failures += 1
            if self.failures == 1:
                self.warn(f"traindoctor: warning: --notify-command failed ({problem}); watching goes on "
                          "(later failures are not reported)")


def _payload(state: RunState, finding: Any, source: str, raised_step: int | None, raised_at: float | None) -> dict:
    return {"run_id": state.run_id, "name": state.name, "source": source, "raised_step": raised_step,
            "raised_at": raised_at, "finding": finding.to_dict()}


def _files(store: Any, run_id: str) -> tuple:
    """The run's published files (names and sizes): unchanged means nothing new to read."""
    listing = []
    for table in ("scalars", "events"):
        for path in store.segment_files(run_id, table):
            try:
                listing.append((path.name, path.stat().st_size))
            except OSError:
                listing.append((path.name, -1))
    return tuple(sorted(listing))


class Watcher:
    """The state of one ``traindoctor watch``: the runs, what was reported, the exit code so far."""

    def __init__(self, store: Any, run_ids: Sequence[str], *, fail_on: str | None, notifier: Notifier | None,
                 say: Callable[[str], None]) -> None:
        from traindoctor.diagnosis.finding import SEVERITY_RANK
        from traindoctor.diagnosis.live import SeenFindings

        self.store = store
        self.fail_on = fail_on
        self.notifier = notifier
        self.say = say
        self._rank = SEVERITY_RANK
        self.states = []
        for run_id in run_ids:
            meta = store.run_meta(run_id)
            self.states.append(RunState(run_id=run_id, name=str(meta.get("name") or run_id), seen=SeenFindings()))
        self.failed = False

    @property
    def done(self) -> bool:
        """Every run has ended, or a finding met --fail-on."""
        return self.failed or all(state.ended for state in self.states)

    def poll(self) -> None:
        """Read each run that changed; report what is new."""
        for state in self.states:
            if not state.ended:
                self._poll_run(state)
            if self.failed:
                return

    def _poll_run(self, state: RunState) -> None:
        from traindoctor.diagnosis import diagnose
        from traindoctor.diagnosis.live import finding_from_detail, live_findings
        from traindoctor.store.run_data import load_run

        status = self.store.run_meta(state.run_id).get("status", "running")
        files = (_files(self.store, state.run_id), status)
        if files == state.files:
            return
        # The files are marked as seen only once read: a poll cut short (an unreachable store) is redone.
        state.status = status
        run = load_run(self.store, state.run_id)
        self._progress(state, run)
        events = run.events
        for kind, detail, step, wall in zip(events["kind"], events["detail"], events["step"], events["wall_time"]):
            if kind != "live_finding":
                continue
            finding = finding_from_detail(detail)
            if finding is not None:
                step = None if step is None or step != step else int(step)
                wall = float(wall) if wall is not None and math.isfinite(wall) else None
                self._report(state, finding, "live", step, wall)
        ended = status in ENDED
        # While a run trains, only the live rules: the others judge a whole run (where it ends) and would guess.
        for finding in (diagnose(run) if ended else live_findings(run)):
            self._report(state, finding, "diagnosis" if ended else "diagnosis so far", None, None)
        if status == "crashed":
            self._report_crash(state, run)
        state.files = files
        state.ended = ended

    def _report_crash(self, state: RunState, run: Any) -> None:
        """A crashed run counts as a critical finding for --fail-on, as in ``diagnose``; one its user
        stopped with Ctrl-C (KeyboardInterrupt) does not."""
        from traindoctor.diagnosis.report import crash_reason, interrupted_by_user

        reason = crash_reason(run)
        label = state.name if state.name == state.run_id else f"{state.name} ({state.run_id})"
        if interrupted_by_user(run):
            state.interrupted = True
            self.say(f"[interrupted] {label}: stopped by its user (KeyboardInterrupt); its findings cover what "
                     "was recorded")
            state.last_finding = "[interrupted]"
            return
        self.say(f"[crashed] {label}: the run crashed" + (f" ({reason})" if reason else "")
                 + "; its findings cover what was recorded")
        state.last_finding = "[crashed]"
        if self.fail_on is not None and self._rank["critical"] >= self._rank[self.fail_on]:
            self.failed = True

    def _progress(self, state: RunState, run: Any) -> None:
        scalars = run.scalars
        if len(scalars):
            state.step = int(scalars["step"].max())
        values = run.series("loss", "train").to_numpy(dtype="float64")
        # The newest loss, NaN or ±Inf included: a diverged run showed its last finite loss
        # (or "–", as if nothing was recorded, once 64 values in a row were NaN).
        state.loss = float(values[-1]) if len(values) else None

    def _report(self, state: RunState, finding: Any, source: str, raised_step: int | None,
                raised_at: float | None) -> None:
        if not state.seen.add(finding):
            return
        state.findings.append(finding)
        # Info findings of the whole diagnosis are counted at the end, not printed one by one.
        if finding.severity == "info":
            return
        state.last_finding = f"[{finding.severity}] {finding.rule}"
        self.say(finding_line(state, finding, source, raised_step))
        if self.notifier is not None:
            self.notifier.notify(_payload(state, finding, source, raised_step, raised_at))
        if self.fail_on is not None and self._rank[finding.severity] >= self._rank[self.fail_on]:
            self.failed = True

    def exit_code(self) -> int:
        """``diagnose``'s codes: 1 when a finding met --fail-on (a crashed run counts as critical), else 0."""
        if self.fail_on is None:
            return EXIT_OK
        threshold = self._rank[self.fail_on]
        met = any(self._rank[f.severity] >= threshold for state in self.states for f in state.findings)
        crashed = threshold <= self._rank["critical"] and any(state.status == "crashed" and not state.interrupted
                                                               for state in self.states)
        return EXIT_FINDINGS if met or crashed else EXIT_OK


def running_run_ids(store: Any) -> list[str]:
    """The runs of ``store`` whose status is ``running`` (a stale heartbeat reads as crashed), oldest first."""
    found = []
    for run_id in store.run_ids():
        try:
            if store.run_meta(run_id).get("status") == "running":
                found.append(run_id)
        except Exception:  # a run folder being created or removed
            continue
    return found


def wait_until_watchable(open_store: Callable[[], Any], runs: Sequence[str], *, wait_s: float, interval_s: float,
                         warn: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep,
                         clock: Callable[[], float] = time.monotonic) -> Any:
    """The store to watch, once it exists and holds every run in ``runs`` (with none named: a
    running run), polling every ``interval_s`` for up to ``wait_s`` seconds (0: one look).

    A watch started beside a training job usually starts before the job's probe
    has made its run: without waiting, ``watch my-run || scancel $JOB`` would
    cancel the job for a run that was about to appear. Says once, on stderr,
    what it waits for.

    Raises:
        CommandError: the store still does not exist at the deadline ("store not found").
        UnknownRunError: a named run still does not exist at the deadline (with close matches).
    """
    warn = warn or (lambda text: print(terminal_text(text), file=sys.stderr, flush=True))
    deadline = clock() + wait_s
    said = False
    while True:
        try:
            store = open_store()
            if runs:
                for run in runs:
                    store.resolve(run)
                return store
            if running_run_ids(store) or clock() >= deadline:
                return store  # watch() says "no running runs" itself
            missing = "a running run"
        except (CommandError, UnknownRunError) as error:
            if clock() >= deadline:
                raise
            missing = str(error).split(";")[0]
        if not said:
            warn(f"traindoctor watch: waiting up to {wait_s:g} s ({missing})")
            said = True
        sleep(max(0.0, min(interval_s, deadline - clock())))


def watch(store: Any, runs: Sequence[str], *, fail_on: str | None = None, interval_s: float = 2.0,
          notify_command: str | None = None, out: TextIO | None = None, err: TextIO | None = None,
          terminal: bool | None = None, sleep: Callable[[float], None] = time.sleep) -> int:
    """Follow ``runs`` (ids or names; all running runs when empty) until they end or ``fail_on`` is met.

    Returns ``diagnose``'s exit codes: 1 when a finding at or above
    ``fail_on`` was reported (a crashed run counts as critical), else 0. On a terminal the table of runs is
    redrawn in place below the findings; elsewhere each change is appended
    as plain lines. Every text from the runs has its control characters
    escaped.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    terminal = out.isatty() if terminal is None else terminal

    def say(text: str) -> None:
        print(terminal_text(text), file=out, flush=True)

    def warn(text: str) -> None:
        print(terminal_text(text), file=err, flush=True)

    notifier = Notifier(notify_command, warn=warn) if notify_command is not None else None
    run_ids = [store.resolve(run) for run in runs] if runs else running_run_ids(store)
    if not run_ids:
        say(f"no running runs in {store.name}")
        return EXIT_OK
    run_ids = list(dict.fromkeys(run_ids))
    table = _Table(out, terminal)
    watcher = Watcher(store, run_ids, fail_on=fail_on, notifier=notifier,
                      say=lambda text: table.above(terminal_text(text)))
    outage = False
    while True:
        try:
            watcher.poll()
        except UnknownRunError:
            raise
        except StoreError as error:  # a bucket that stops answering for a while: a blip must not end the watch
            if not outage:           # (`watch --fail-on critical || scancel $JOB` would cancel a healthy job)
                warn(f"traindoctor watch: {str(error).rstrip('.')}; still watching")
            outage = True
            sleep(interval_s)
            continue
        if outage:
            warn(f"traindoctor watch: {store.name} answers again")
            outage = False
        table.show([terminal_text(status_line(state)) for state in watcher.states])
        if watcher.done:
            break
        sleep(interval_s)
    for state in watcher.states:
        infos = sum(f.severity == "info" for f in state.findings)
        if state.ended and infos:
            table.above(terminal_text(f"{state.name}: {infos} info finding(s): traindoctor diagnose {state.run_id}"))
    if watcher.failed:
        table.above(f"stopping: a finding met --fail-on {fail_on}")
    return watcher.exit_code()


class _Table:
    """The live table: redrawn in place on a terminal (our own escape codes only), appended lines elsewhere."""

    def __init__(self, out: TextIO, terminal: bool) -> None:
        self.out, self.terminal = out, terminal
        self.drawn = 0  # lines of the table now on screen (terminal)
        self.last: list[str] = []

    def above(self, line: str) -> None:
        """A line printed once, above the table."""
        if self.terminal and self.drawn:
            self.out.write(_LINES_UP.format(self.drawn) + _CLEAR_BELOW)
            self.drawn = 0
        self.out.write(line + "\n")
        self.out.flush()
        if self.terminal and self.last:
            self._draw(self.last)

    def show(self, lines: list[str]) -> None:
        if self.terminal:
            if self.drawn:
                self.out.write(_LINES_UP.format(self.drawn) + _CLEAR_BELOW)
            self._draw(lines)
        else:
            for line, before in zip(lines, self.last + [None] * len(lines)):
                if line != before:
                    self.out.write(line + "\n")
            self.out.flush()
        self.last = lines

    def _draw(self, lines: list[str]) -> None:
        self.out.write("".join(line + "\n" for line in lines))
        self.out.flush()
        self.drawn = len(lines)
