"""Live diagnosis: the rules that need only recorded history, run while the run trains.

The probe hands every value it writes (host numbers: the copy its flush
made anyway) to a :class:`LiveDiagnosis` and calls
:meth:`LiveDiagnosis.check` after each flush. The check runs the *live*
rules (those whose record has ``live``; ``docs/rules.md`` marks them) on a
:class:`~traindoctor.store.run_data.RunData` built from a bounded
:class:`HistoryWindow`, and returns the findings it has not reported
before. They are the very functions the offline diagnosis runs: a run
shorter than the window is judged live exactly as ``diagnose()`` judges the
run so far, and a longer one on its first losses and its recent history.

- :func:`reportable`: which of a rule's findings a live check reports (warning
  or critical, and settled: a loss spike once it has recovered, …).
- :func:`live_findings`: the live rules' reportable findings on a whole run
  (``traindoctor watch`` calls it on what the store holds so far).
- :class:`SeenFindings`: each problem reported once (by rule, severity and
  step span), so a divergence that keeps going is not reported at every flush.
- :func:`replay`: a stored run fed through a :class:`LiveDiagnosis` as if it
  were flushed every N steps (tests and benchmarks: what would live have said?).

What one check costs is bounded by the window, not by the run's length
(``benchmarks/live_detection.py`` prints it at 1,000 and 100,000 steps).
"""

from __future__ import annotations

import json
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from traindoctor.diagnosis.common import layer_values
from traindoctor.diagnosis.engine import RECORDS, diagnose, drop_explained, sort_findings
from traindoctor.diagnosis.finding import SEVERITY_RANK, Finding
from traindoctor.diagnosis.memo import MemoisedRun
from traindoctor.diagnosis.records import RuleFunction
from traindoctor.store.frames import Curve, Table, is_missing, to_float
from traindoctor.store.run_data import EVENT_COLUMNS, SCALAR_COLUMNS, LayerFrame, RunData

# The rules that run live, by id, in the catalogue's order.
LIVE_RULES: dict[str, RuleFunction] = {rule_id: record.function for rule_id, record in RECORDS.items()
                                       if record.live is not None}
# The training series the live rules read (their records' inputs): the window keeps these and no other.
LIVE_SERIES: tuple[str, ...] = tuple(dict.fromkeys(
    name for rule_id in LIVE_RULES for name in RECORDS[rule_id].inputs if name not in ("events", "confusion")))
# Series recorded at every step once per param group (layer ``group<i>``): kept like global series, one per group.
GROUP_SERIES = ("lr",)

# Live checks report warnings and critical findings; info hints wait for the diagnosis of the whole run.
MIN_SEVERITY = "warning"
# The first 128 records of the training loss stay in the window for the whole
# run: the starting level (divergence and loss spikes judge against the median
# of the first 5) and the early level (vanishing_gradients compares the first
# 10 % of what it is given, here about the 128 of 128 + 896 records, with the last 20 %).
LOSS_HEAD_RECORDS = 128
# The last 896 records of each series: 18 times the 50-record running levels
# of the gradient and loss-spike rules, and a rebound of the loss
# (lr_too_high) within about 900 steps. With the head, 1,024 records: full
# after about 1,000 steps, and what a check costs stays flat from there.
WINDOW_RECORDS = 896
# The last 32 per-layer records: 1,600 steps at the probe's default
# layer_every of 50 (the band test needs 20 records live, the
# first/last-ratio test 3).
LAYER_WINDOW_RECORDS = 32
# The last 256 events of each kind (the mode rules count them; the AMP rule
# reads amp_step_skipped only when no amp_skipped values were recorded).
EVENT_WINDOW = 256
# At most 10 live findings per rule and severity in a run (the loss-spike rule
# lists at most 10 spikes too): a run that spikes hundreds of times needs one
# piece of advice, not hundreds, and the bookkeeping stays bounded.
MAX_FINDINGS_PER_RULE = 10


def reportable(findings: Iterable[Finding]) -> list[Finding]:
    """The findings a live check reports: from a live rule, warning or critical, and settled (:class:`Live`)."""
    floor = SEVERITY_RANK[MIN_SEVERITY]
    kept = []
    for finding in findings:
        record = RECORDS.get(finding.rule)
        if record is None or record.live is None or SEVERITY_RANK[finding.severity] < floor:
            continue
        if record.live.reports(finding):
            kept.append(finding)
    return kept


def live_findings(run: RunData, *, strict: bool = False) -> list[Finding]:
    """What a live check reports on ``run`` as it stands: the live rules' settled warnings and criticals.

    Pure. On a run still being written this is what the probe's own checks
    would say, with the whole history instead of a window.

    Example:
        >>> live_findings(RunData(run_id="empty", name="empty"))
        []
    """
    return reportable(diagnose(run, strict=strict, rules=LIVE_RULES))


@dataclass
class _Seen:
    severity: int
    title: str
    span: list[int] | None


class SeenFindings:
    """The findings already reported for one run, so that each problem is reported once.

    A finding is the same as one reported before when it comes from the same
    rule, at the same or a lower severity, and its steps overlap or adjoin
    the earlier one's (which then grows to cover both: a divergence that
    keeps going stays one finding). Findings about the whole run (no steps)
    are the same when their rule and title are. A more severe finding is new
    (a warning that turns critical is reported again).

    Args:
        max_per_rule: report at most this many findings per rule and
            severity (None: no limit).
    """

    def __init__(self, max_per_rule: int | None = None) -> None:
        self.max_per_rule = max_per_rule
        self._seen: dict[str, list[_Seen]] = {}

    def add(self, finding: Finding) -> bool:
        """True (and remembered) when ``finding`` is new; False when it was reported already or is over the limit."""
        severity = SEVERITY_RANK[finding.severity]
        span = finding.step_range
        seen = self._seen.setdefault(finding.rule, [])
        for earlier in seen:
            if earlier.severity < severity:
                continue
            if span is None or earlier.span is None:
                if span is None and earlier.span is None and earlier.title == finding.title:
                    return False
                continue
            if span[0] <= earlier.span[1] + 1 and span[1] + 1 >= earlier.span[0]:
                earlier.span = [min(span[0], earlier.span[0]), max(span[1], earlier.span[1])]
                return False
        if self.max_per_rule is not None and sum(s.severity == severity for s in seen) >= self.max_per_rule:
            return False
        seen.append(_Seen(severity, finding.title, None if span is None else list(span)))
        return True


class _Series:
    """One global series: its last ``size`` (step, value) pairs, and its first ``head`` pairs for good."""

    def __init__(self, size: int, head: int = 0) -> None:
        self.size, self.head = size, head
        self.steps = np.empty(0, dtype=np.int64)
        self.values = np.empty(0, dtype=np.float64)
        self.head_steps = np.empty(0, dtype=np.int64)
        self.head_values = np.empty(0, dtype=np.float64)

    def extend(self, steps: np.ndarray, values: np.ndarray) -> None:
        # O(size) per call: one copy of at most size + len(steps) numbers, whatever the run's length.
        missing = self.head - len(self.head_steps)
        if missing > 0:
            self.head_steps = np.concatenate([self.head_steps, steps[:missing]])
            self.head_values = np.concatenate([self.head_values, values[:missing]])
        self.steps = np.concatenate([self.steps, steps])[-self.size:]
        self.values = np.concatenate([self.values, values])[-self.size:]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The head records the recent ones no longer hold, then the recent ones, in recording order."""
        if not len(self.steps):
            return self.head_steps, self.head_values
        older = self.head_steps < self.steps[0]
        return (np.concatenate([self.head_steps[older], self.steps]),
                np.concatenate([self.head_values[older], self.values]))


class _LayerRecords:
    """One per-layer statistic: its last ``size`` records, each (step, layer names, values)."""

    def __init__(self, size: int) -> None:
        self.records: deque[tuple[int, tuple[str, ...], np.ndarray]] = deque(maxlen=size)

    def add(self, step: int, layers: tuple[str, ...], values: np.ndarray) -> None:
        self.records.append((int(step), layers, values))

    def frame(self) -> LayerFrame:
        """Steps × layers, as :meth:`RunData.layer_frame` builds it from the long rows: steps ascending,
        layers sorted, shape (n_steps, n_layers), NaN where a layer has no value at a step."""
        if not self.records:
            return _no_layers()
        columns = sorted({layer for _, layers, _ in self.records for layer in layers})
        position = {layer: index for index, layer in enumerate(columns)}
        steps = np.unique(np.fromiter((step for step, _, _ in self.records), dtype=np.int64))
        row = {int(step): index for index, step in enumerate(steps)}
        grid = np.full((len(steps), len(columns)), np.nan)  # (steps, layers)
        # A later record wins, NaN aside (RunData.layer_frame's grid: the last non-NaN value per step and layer).
        for step, layers, values in self.records:
            known = ~np.isnan(values)
            grid[row[step], np.asarray([position[layer] for layer in layers], dtype=np.int64)[known]] = values[known]
        return LayerFrame(steps, columns, grid)

    def rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(step, layer, value) of every kept value, as long rows."""
        if not self.records:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=object), np.empty(0)
        steps = np.concatenate([np.full(len(layers), step, dtype=np.int64) for step, layers, _ in self.records])
        layers = np.concatenate([np.asarray(layers, dtype=object) for _, layers, _ in self.records])
        values = np.concatenate([values for _, _, values in self.records])
        return steps, layers, values


class HistoryWindow:
    """A bounded, host-side history of one run: what a live check sees.

    It keeps the series the live rules read (:data:`LIVE_SERIES`, in every
    split: a NaN evaluation loss counts toward divergence): the first
    ``loss_head`` training losses for good (the starting level), the last
    ``records`` values of each global series and of each param group's
    series (``lr``), the last ``layer_records`` records of each per-layer
    training statistic, and the last ``events`` events of each kind.
    Everything else handed to it is ignored. Its size, and so the cost of a
    check, does not grow with the run.

    Args:
        loss_head: first training losses kept for the whole run.
        records: last values kept per global (or per-group) series.
        layer_records: last records kept per per-layer statistic.
        events: last events kept per kind.
    """

    def __init__(self, *, loss_head: int = LOSS_HEAD_RECORDS, records: int = WINDOW_RECORDS,
                 layer_records: int = LAYER_WINDOW_RECORDS, events: int = EVENT_WINDOW) -> None:
        self._records = records
        # (split, name, layer or None) → series, made when its first value comes.
        self._series: dict[tuple[str, str, str | None], _Series] = {
            ("train", "loss", None): _Series(records, head=loss_head)}
        self._layers = {name: _LayerRecords(layer_records) for name in LIVE_SERIES if name not in GROUP_SERIES}
        self._events: dict[str, deque[tuple[Any, float, str, str]]] = {}
        self._event_window = events
        self.last_step: int | None = None
        # Empty tables, made once (a check runs often): the ones a RunData holds when given none.
        empty = RunData(run_id="", name="")
        self._no_events, self._no_confusion = empty.events, empty.confusion

    def add_scalars(self, *, step: Any, name: str, value: Any, split: str = "train", layer: Any = None,
                    epoch: Any = None, wall_time: Any = None) -> None:
        """Take values as :meth:`~traindoctor.store.segments.RunWriter.add_scalars` does (scalars broadcast).

        ``layer`` None is a global series; for a per-group series (``lr``)
        one layer name per row; for a per-layer statistic a tuple of names
        with one ``step`` is one record, and per-row arrays of steps and
        layers are grouped by step. ``epoch`` and ``wall_time`` are accepted
        and unused.
        """
        if name not in LIVE_SERIES or (layer is not None and split != "train"):
            return
        steps = np.atleast_1d(np.asarray(step, dtype=np.int64))
        if layer is None or name in GROUP_SERIES:
            rows = max(len(steps), 1 if layer is None or isinstance(layer, str) else len(layer))
            steps = np.broadcast_to(steps, (rows,))
            values = np.broadcast_to(np.asarray(value, dtype=np.float64), (rows,))
            groups = np.broadcast_to(np.asarray(layer if layer is None or isinstance(layer, str) else tuple(layer),
                                                dtype=object), (rows,))
            for group in dict.fromkeys(groups.tolist()):
                chosen = groups == group if group is not None else slice(None)
                self._kept(str(split), name, group).extend(steps[chosen], values[chosen])
            if len(steps):
                self._last(int(steps.max()))
            return
        layers = (layer,) if isinstance(layer, str) else tuple(layer)
        values = np.broadcast_to(np.asarray(value, dtype=np.float64), (len(layers),))
        if np.ndim(step) == 0:
            self._layers[name].add(int(step), layers, np.array(values))
            self._last(int(step))
            return
        names = np.asarray(layers, dtype=object)
        steps = np.broadcast_to(steps, (len(layers),))
        for each in dict.fromkeys(steps.tolist()):  # per step, in recording order
            chosen = steps == each
            self._layers[name].add(each, tuple(names[chosen]), np.array(values[chosen]))
            self._last(each)

    def _kept(self, split: str, name: str, layer: str | None) -> _Series:
        key = (split, name, layer)
        if key not in self._series:
            self._series[key] = _Series(self._records)
        return self._series[key]

    def add_event(self, kind: str, detail: str = "", *, step: int | None = None,
                  wall_time: float | None = None) -> None:
        """Keep one event (its kind's last ``events``)."""
        queue = self._events.setdefault(str(kind), deque(maxlen=self._event_window))
        queue.append((step, float("nan") if wall_time is None else float(wall_time), str(kind), str(detail)))

    def _last(self, step: int) -> None:
        self.last_step = step if self.last_step is None else max(self.last_step, step)

    def run_data(self, *, run_id: str = "live", name: str = "live", task: Mapping[str, Any] | None = None,
                 env: Mapping[str, Any] | None = None) -> MemoisedRun:
        """The window as a run the rules take (a fresh memo, status ``running``).

        Its ``scalars`` hold every kept value as long rows (what a rule
        reading the frame sees), and its ``series``, ``has``, ``layers`` and
        ``layer_frame`` answer from the kept arrays without scanning those
        rows; the memo starts with each per-layer statistic's
        ``layer_values``. A test checks both give what :class:`RunData`
        computes from the rows.
        """
        series: dict[tuple[str, str, str | None], tuple[np.ndarray, np.ndarray]] = {}
        step_parts, split_parts, name_parts, layer_parts, value_parts = [], [], [], [], []
        for (split, series_name, layer), kept in self._series.items():
            steps, values = kept.arrays()
            series[(split, series_name, layer)] = (steps, values)
            step_parts.append(steps)
            value_parts.append(values)
            split_parts.append(np.full(len(steps), split, dtype=object))
            name_parts.append(np.full(len(steps), series_name, dtype=object))
            layer_parts.append(np.full(len(steps), layer, dtype=object))
        for series_name, records in self._layers.items():
            steps, layers, values = records.rows()
            step_parts.append(steps)
            value_parts.append(values)
            split_parts.append(np.full(len(steps), "train", dtype=object))
            name_parts.append(np.full(len(steps), series_name, dtype=object))
            layer_parts.append(layers)
        steps = np.concatenate(step_parts)
        columns = {
            "step": steps, "epoch": np.full(len(steps), np.nan), "wall_time": np.full(len(steps), np.nan),
            "split": np.concatenate(split_parts), "name": np.concatenate(name_parts),
            "layer": np.concatenate(layer_parts), "value": np.concatenate(value_parts),
        }
        scalars = Table({column: columns[column] for column in SCALAR_COLUMNS})
        kept_events = [event for queue in self._events.values() for event in queue]
        events = _event_table(kept_events) if kept_events else self._no_events
        frames = {layer_name: records.frame() for layer_name, records in self._layers.items() if records.records}
        run = _WindowRun(run_id=run_id, name=name, scalars=scalars, confusion=self._no_confusion, events=events,
                         task=dict(task or {}), env=dict(env or {}), status="running", kept_series=series,
                         kept_layers={layer_name: self._layers[layer_name] for layer_name in frames},
                         layer_frames=frames)
        for layer_name, frame in frames.items():
            run.seed(layer_values, (layer_name,), frame)
        return run


@dataclass(eq=False)
class _WindowRun(MemoisedRun):
    """A window's run: :class:`RunData`'s lookups answered from the kept arrays (no scan of the long rows).

    Anything the arrays do not answer directly (steps out of order, a
    question about series the window does not hold by name) falls back to
    :class:`RunData`'s own code on the rows.
    """

    kept_series: dict[tuple[str, str, str | None], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False)
    kept_layers: dict[str, _LayerRecords] = field(default_factory=dict, repr=False)
    layer_frames: dict[str, LayerFrame] = field(default_factory=dict, repr=False)

    def series(self, name: str, split: str = "train", layer: str | None = None) -> Curve:
        kept = self.kept_series.get((split, name, layer))
        if kept is None and layer is not None and split == "train" and name in self.kept_layers:
            pairs = [(step, float(values[layers.index(layer)])) for step, layers, values in
                     self.kept_layers[name].records if layer in layers]
            kept = (np.array([step for step, _ in pairs], dtype=np.int64),
                    np.array([value for _, value in pairs], dtype=np.float64))
        if kept is None:
            return super().series(name, split, layer)
        steps, values = kept
        if not len(steps):
            return Curve(np.empty(0, dtype="float64"), np.empty(0, dtype="int64"), name)
        if len(steps) > 1 and not bool(np.all(np.diff(steps) > 0)):
            return super().series(name, split, layer)  # steps out of order or repeated: by the rows
        return Curve(values.copy(), steps.copy(), name)  # a copy: a rule may change it

    def has(self, name: str, split: str = "train") -> bool:
        return (any(key[:2] == (split, name) and len(kept[0]) for key, kept in self.kept_series.items())
                or (split == "train" and name in self.kept_layers))

    def layers(self, name: str, split: str = "train") -> list[str]:
        if split == "train" and name in self.kept_layers:
            return list(dict.fromkeys(layer for _, layers, _ in self.kept_layers[name].records for layer in layers))
        return super().layers(name, split)

    def layer_frame(self, name: str, split: str = "train") -> LayerFrame:
        frame = self.layer_frames.get(name) if split == "train" else None
        if frame is None:
            return super().layer_frame(name, split)
        return LayerFrame(frame.index.copy(), list(frame.columns), frame.values.copy())  # a rule may change it


def _no_layers() -> LayerFrame:
    """The grid of a per-layer statistic with no values (what :meth:`RunData.layer_frame` returns for one)."""
    return LayerFrame(np.empty(0, dtype="int64"), [], np.empty((0, 0)))


def _event_table(events: Sequence[tuple[Any, float, str, str]]) -> Table:
    """Kept events, each (step, wall_time, kind, detail), as the events Table a store's run holds.

    ``step`` is int64 when every event has one; float64 with NaN for the
    missing ones when some have none; None throughout when none has one (the
    columns pandas made of the same rows).
    """
    steps = [step for step, _, _, _ in events]
    if all(step is None for step in steps):
        step_column = np.full(len(steps), None, dtype=object)
    elif any(step is None for step in steps):
        step_column = np.asarray([np.nan if step is None else step for step in steps], dtype="float64")
    else:
        step_column = np.asarray(steps, dtype="int64")
    return Table({"step": step_column,
                  "wall_time": np.asarray([wall for _, wall, _, _ in events], dtype="float64"),
                  "kind": np.asarray([kind for _, _, kind, _ in events], dtype=object),
                  "detail": np.asarray([detail for _, _, _, detail in events], dtype=object)})


class LiveDiagnosis:
    """The live checks of one run: hand it what is recorded, call :meth:`check` after each flush.

    A thin stateful wrapper (torchmetrics' pattern) around the pure
    :func:`reportable` rules: its state is the :class:`HistoryWindow` and the
    :class:`SeenFindings`. A live rule that raises is left out of this run's
    later checks, with one warning; the others go on.

    Args:
        run_id, name: the run, for the findings' messages and warnings.
        task: the run's task (``num_classes``, ``expected_initial_loss``).
        env: what is known of its set-up (``amp``).
        window: the history to judge (default: a :class:`HistoryWindow` with the default sizes).
        max_per_rule: findings reported at most per rule and severity.

    Example:
        >>> live = LiveDiagnosis(task={"num_classes": 10})
        >>> live.add_scalars(step=[1, 2, 3], name="loss", value=[2.3, float("nan"), float("nan")])
        >>> live.check()
        []
        >>> live.add_scalars(step=4, name="loss", value=float("nan"))
        >>> [finding.rule for finding in live.check()]
        ['divergence']
    """

    def __init__(self, *, run_id: str = "live", name: str = "live", task: Mapping[str, Any] | None = None,
                 env: Mapping[str, Any] | None = None, window: HistoryWindow | None = None,
                 max_per_rule: int | None = MAX_FINDINGS_PER_RULE) -> None:
        self.run_id, self.name = run_id, name
        self.task = dict(task or {})
        self.env = dict(env or {})
        self.window = window if window is not None else HistoryWindow()
        self.seen = SeenFindings(max_per_rule=max_per_rule)
        self.rules = dict(LIVE_RULES)
        self.failed: dict[str, str] = {}
        # Rule → first step of its earliest reported finding (for Live.quiet_after).
        self.onsets: dict[str, int] = {}
        self.checks = 0

    def add_scalars(self, **columns: Any) -> None:
        """Values as the run records them (see :meth:`HistoryWindow.add_scalars`)."""
        self.window.add_scalars(**columns)

    def add_event(self, kind: str, detail: str = "", *, step: int | None = None,
                  wall_time: float | None = None) -> None:
        """An event as the run records it."""
        self.window.add_event(kind, detail, step=step, wall_time=wall_time)

    def check(self) -> list[Finding]:
        """Run the live rules on the window; the findings not reported before, most severe first."""
        self.checks += 1
        run = self.window.run_data(run_id=self.run_id, name=self.name, task=self.task, env=self.env)
        found: list[Finding] = []
        for rule_id, function in list(self.rules.items()):
            try:
                found.extend(function(run))
            except Exception as error:  # odd data must not end the other checks
                del self.rules[rule_id]
                self.failed[rule_id] = f"{type(error).__name__}: {error}"
                warnings.warn(f"traindoctor live diagnosis of run {self.run_id}: rule {rule_id} failed "
                              f"({self.failed[rule_id]}); it is left out of the live checks of this run",
                              RuntimeWarning, stacklevel=2)
        new = []
        for finding in reportable(sort_findings(drop_explained(found))):
            after = [self.onsets[cause] for cause in RECORDS[finding.rule].live.quiet_after if cause in self.onsets]
            if after and finding.step_range is not None and finding.step_range[1] >= min(after):
                continue
            if self.seen.add(finding):
                new.append(finding)
                if finding.step_range is not None:
                    onset = finding.step_range[0]
                    self.onsets[finding.rule] = min(onset, self.onsets.get(finding.rule, onset))
        return new


def replay(run: RunData, *, every_steps: int, live: LiveDiagnosis | None = None) -> list[tuple[int, Finding]]:
    """Feed a recorded run through live checks as if it were flushed every ``every_steps`` steps.

    Returns each finding with the last step of the flush that raised it.
    The probe feeds the same values at its flushes; this says what its live
    checks would have raised on a run recorded before (or imported).

    Args:
        run: the run (the series the live rules read and its events are fed; the rest is not read).
        every_steps: steps between two checks.
        live: the checks to feed (default: a fresh :class:`LiveDiagnosis` with the run's task and env).
    """
    if every_steps < 1:
        raise ValueError(f"every_steps must be >= 1, got {every_steps!r}")
    live = live if live is not None else LiveDiagnosis(run_id=run.run_id, name=run.name, task=run.task, env=run.env)
    pieces = _live_pieces(run.scalars)
    events = run.events
    event_steps = np.nan_to_num(to_float(events["step"]), nan=0.0).astype(np.int64)
    last = max([int(steps.max()) for *_, steps, _, _ in pieces if len(steps)] + [int(event_steps.max(initial=0))])
    raised: list[tuple[int, Finding]] = []
    for end in range(every_steps, last + every_steps, every_steps):
        start = end - every_steps
        for split, series_name, per_layer, steps, layers, values in pieces:
            first, stop = np.searchsorted(steps, [start, end], side="right")
            if stop > first:
                live.add_scalars(step=steps[first:stop], name=series_name, value=values[first:stop], split=split,
                                 layer=tuple(layers[first:stop]) if per_layer else None)
        low = start if start > 0 else -np.inf  # the first flush also takes the events of step 0 (set-up lint)
        for index in np.flatnonzero((event_steps > low) & (event_steps <= end)):
            live.add_event(events["kind"][index], events["detail"][index], step=int(event_steps[index]),
                           wall_time=events["wall_time"][index])
        raised += [(min(end, last), finding) for finding in live.check()]
    return raised


def _live_pieces(scalars: Table) -> list[tuple[str, str, bool, np.ndarray, np.ndarray, np.ndarray]]:
    """The rows of the series the live rules read, as (split, name, per layer, steps, layers, values) per
    series (per-layer rows of one statistic together), rows in step order (stable), series in order of their
    first row in that order; rows without a split are left out."""
    names = scalars["name"]
    live_names = set(LIVE_SERIES)
    chosen = np.flatnonzero(np.fromiter((name in live_names for name in names.tolist()), bool, len(names)))
    chosen = chosen[np.argsort(np.asarray(scalars["step"])[chosen], kind="stable")]
    splits = np.asarray(scalars["split"], dtype=object)[chosen]
    names = np.asarray(names, dtype=object)[chosen]
    layers = np.asarray(scalars["layer"], dtype=object)[chosen]
    per_layer = np.fromiter((not is_missing(layer) for layer in layers.tolist()), bool, len(layers))
    steps = np.asarray(scalars["step"])[chosen]
    values = np.asarray(scalars["value"], dtype=np.float64)[chosen]
    keys = dict.fromkeys((split, name, bool(layered)) for split, name, layered in
                         zip(splits.tolist(), names.tolist(), per_layer.tolist()) if not is_missing(split))
    pieces = []
    for split, series_name, layered in keys:
        rows = (splits == split) & (names == series_name) & (per_layer == layered)
        pieces.append((split, series_name, layered, steps[rows].astype(np.int64), layers[rows], values[rows]))
    return pieces


def finding_from_detail(detail: str) -> Finding | None:
    """The finding a ``live_finding`` event's detail holds (its JSON), None when it is not one."""
    try:
        data = json.loads(detail)
        return Finding(**{key: data[key] for key in ("rule", "severity", "title", "message", "advice")},
                       step_start=data.get("step_start"), step_end=data.get("step_end"),
                       evidence=dict(data.get("evidence") or {}), source=str(data.get("source") or ""))
    except (TypeError, ValueError, KeyError):
        return None


def unconfirmed(live: Sequence[Finding], offline: Sequence[Finding]) -> list[Finding]:
    """The live findings the diagnosis of the finished run does not confirm.

    A live finding is confirmed by an offline finding of the same rule at
    the same or a higher severity: a live warning by a warning or critical,
    a live critical by a critical.
    """
    worst: dict[str, int] = {}
    for finding in offline:
        worst[finding.rule] = max(worst.get(finding.rule, -1), SEVERITY_RANK[finding.severity])
    return [finding for finding in live if worst.get(finding.rule, -1) < SEVERITY_RANK[finding.severity]]
