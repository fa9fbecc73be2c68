"""What each rule declares about itself: one :class:`RuleRecord`, attached by :func:`rule` beside the function.

The engine (which rules run, what explains what), the dashboard (which chart
holds a finding's evidence, which heatmaps outline it, which findings the
Classes page lists) and the rule catalogue (``docs/rules.md``) all read the
records; none keeps a map of its own. Adding a rule means writing one
decorated function in a rule module.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Callable

from traindoctor.diagnosis.finding import SEVERITIES, Finding
from traindoctor.store.run_data import RunData

RuleFunction = Callable[[RunData], list[Finding]]

# The Run page's evidence charts: a global series' curve, a per-layer
# heatmap, or the run's events (set-up rules have no curve to show).
EVIDENCE_CHARTS = ("series", "heatmap", "events")
# The per-layer statistics the Run page draws as layers × steps heatmaps.
HEATMAP_NAMES = ("update_ratio", "grad_norm")
# The sections of a rule's docstring (STYLE.md: symptom, cause, what to try, source).
DOCSTRING_SECTIONS = ("Symptom", "Likely cause", "Try", "Source")


@dataclass(frozen=True)
class Evidence:
    """The chart that shows a rule's evidence on the Run page.

    Attributes:
        chart: ``series`` (the curve of a global series), ``heatmap`` (a
            per-layer statistic's layers × steps heatmap) or ``events`` (the
            run's events of the rule's kind).
        name: the series or per-layer statistic (``loss``, ``grad_norm``, …);
            None for ``events``.
    """

    chart: str
    name: str | None = None

    def __post_init__(self) -> None:
        if self.chart not in EVIDENCE_CHARTS:
            raise ValueError(f"evidence chart must be one of {EVIDENCE_CHARTS}, got {self.chart!r}")
        if self.chart == "events" and self.name is not None:
            raise ValueError("an events evidence chart takes no name")
        if self.chart != "events" and self.name is None:
            raise ValueError(f"a {self.chart} evidence chart needs a name")
        if self.chart == "heatmap" and self.name not in HEATMAP_NAMES:
            raise ValueError(f"heatmaps are drawn for {HEATMAP_NAMES}, not {self.name!r}")

    @classmethod
    def series(cls, name: str) -> "Evidence":
        """The curve of the global series ``name`` (all its splits)."""
        return cls("series", name)

    @classmethod
    def heatmap(cls, name: str) -> "Evidence":
        """The layers × steps heatmap of the per-layer statistic ``name``."""
        return cls("heatmap", name)

    @classmethod
    def events(cls) -> "Evidence":
        """The run's events whose kind is the rule's id."""
        return cls("events")

    def describe(self) -> str:
        """A short phrase for the catalogue, e.g. ``the loss curve``."""
        if self.chart == "events":
            return "the run's events"
        return f"the `{self.name}` {'curve' if self.chart == 'series' else 'per-layer heatmap'}"


def _always(finding: Finding) -> bool:
    return True


@dataclass(frozen=True)
class Live:
    """How a rule runs during training, at each probe flush (``traindoctor.diagnosis.live``).

    A live rule needs only what has been recorded so far: it is run on a
    bounded window of the run's recent history, and its warning and
    critical findings are reported as they appear. Rules that judge the run
    as a whole (where it ends, how it generalises) are not live: before the
    end they would only guess.

    Attributes:
        settled: whether a finding found on the history so far is ready to
            be reported, or could still turn out otherwise with more steps
            (a loss spike is reported once it has recovered: until then it
            may be the start of a divergence). Its docstring's first line
            is what the catalogue says; None reports every finding at once.
        quiet_after: rules after whose live finding this rule's findings
            from that finding's first step on are not reported (the spikes
            of a diverged run are its symptoms: offline, the loss-spike rule
            leaves spikes inside a divergence to the divergence rule).
    """

    settled: Callable[[Finding], bool] | None = None
    quiet_after: tuple[str, ...] = ()

    def reports(self, finding: Finding) -> bool:
        """Whether a live check reports ``finding`` now (its severity aside)."""
        return (self.settled or _always)(finding)

    def describe(self) -> str:
        """A short phrase for the catalogue."""
        text = "at each probe flush, on the recent history"
        if self.settled is not None:
            condition = (inspect.getdoc(self.settled) or "").splitlines()[0].rstrip(".")
            text += f"; reported {condition[0].lower()}{condition[1:]}"
        if self.quiet_after:
            text += f"; not reported once {' or '.join(f'`{name}`' for name in self.quiet_after)} has been"
        return text


@dataclass(frozen=True)
class RuleRecord:
    """One rule and everything the engine, the dashboard and the catalogue need to know about it.

    Attributes:
        id: the rule id of RULES.md, spelled exactly so; the function's name.
        function: the rule, a pure function of a run returning findings.
        severities: the severities its findings can have.
        inputs: what stored data it reads: series by their ``name`` (any
            split, global or per layer), and ``confusion`` or ``events`` when
            it reads those tables.
        metadata: the keys of the run's ``task`` and ``env`` it reads, as
            ``task.num_classes``, ``env.optimizer``, ….
        evidence: the chart that shows a finding's evidence on the Run page.
        classes_page: whether the Classes page lists its findings (they come
            from confusion counts).
        heatmaps: the per-layer heatmaps that outline its findings' steps
            (the evidence heatmap among them).
        explained_by: rules whose warning or critical finding makes this
            rule's finding redundant: it is dropped (a more specific cause).
        explains: rules whose findings are consequences of this rule's
            warning or critical finding: they are kept, listed under it
            (``Finding.explains``), causes first.
        explaining: which of its warning or critical findings explain
            ``explains`` (a predicate; its docstring's first line is what
            the catalogue says); None: every one. A rule whose findings
            name different causes (gradients that explode under too high an
            lr, or because they are never zeroed) explains only through the
            finding that names a cause.
        thresholds: the names of the module constants that set its
            thresholds; the catalogue prints their values and comments.
        live: how it runs during training (:class:`Live`); None when it is
            judged only after the fact, on the whole run.
    """

    id: str
    function: RuleFunction
    severities: tuple[str, ...]
    inputs: tuple[str, ...]
    metadata: tuple[str, ...]
    evidence: Evidence
    classes_page: bool
    heatmaps: tuple[str, ...]
    explained_by: tuple[str, ...]
    thresholds: tuple[str, ...]
    live: Live | None = None
    explains: tuple[str, ...] = ()
    explaining: Callable[[Finding], bool] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.severities) - set(SEVERITIES)
        if not self.severities or unknown:
            raise ValueError(f"{self.id}: severities must be among {SEVERITIES}, got {self.severities}")
        if set(self.heatmaps) - set(HEATMAP_NAMES):
            raise ValueError(f"{self.id}: heatmaps are drawn for {HEATMAP_NAMES}, not {self.heatmaps}")
        if self.evidence.chart == "heatmap" and self.evidence.name not in self.heatmaps:
            raise ValueError(f"{self.id}: its evidence heatmap {self.evidence.name!r} must outline it (heatmaps)")
        if self.explaining is not None and not self.explains:
            raise ValueError(f"{self.id}: explaining says which findings explain, but it explains no rule")
        sections = docstring_sections(self.function)
        missing = [name for name in DOCSTRING_SECTIONS if not sections.get(name)]
        if missing:
            raise ValueError(f"{self.id}: the docstring lacks {', '.join(missing)}")

    def explains_through(self, finding: Finding) -> bool:
        """Whether ``finding`` (one of this rule's) explains the rules of ``explains``: a warning or
        critical finding that ``explaining`` accepts."""
        return (finding.severity in ("warning", "critical") and bool(self.explains)
                and (self.explaining is None or self.explaining(finding)))

    def describe_explains(self) -> str:
        """The catalogue's phrase for what it explains: the rules, and with ``explaining`` through which finding."""
        text = ", ".join(f"`{consequence}`" for consequence in self.explains) or "–"
        if self.explains and self.explaining is not None:
            condition = (inspect.getdoc(self.explaining) or "").splitlines()[0].rstrip(".")
            text += f" (only {condition[0].lower()}{condition[1:]})"
        return text

    @property
    def family(self) -> str:
        """The rule module's short name (``loss``, ``learning_rate``, ``gradients``, …)."""
        return self.function.__module__.rsplit(".", 1)[-1]

    @property
    def summary(self) -> str:
        """The docstring's first line."""
        return (inspect.getdoc(self.function) or "").splitlines()[0]

    @property
    def source(self) -> str:
        """Where the rule of thumb comes from (seed or paper): the docstring's ``Source:`` section."""
        return docstring_sections(self.function)["Source"]


def docstring_sections(function: Callable) -> dict[str, str]:
    """A rule docstring's ``Symptom``, ``Likely cause``, ``Try`` and ``Source`` sections, each on one line.

    A section starts at its name followed by a colon at the start of a
    line or after a sentence, and runs to the next section.

    Example:
        >>> def demo(run):
        ...     '''Demo.
        ...
        ...     Symptom: a. Likely cause: b.
        ...     Try: c.
        ...     Source: seed 004.
        ...     '''
        >>> docstring_sections(demo)["Likely cause"]
        'b.'
    """
    text = " ".join((inspect.getdoc(function) or "").partition("\n")[2].split())
    pattern = re.compile(r"(?:^|(?<=[.)] ))(" + "|".join(map(re.escape, DOCSTRING_SECTIONS)) + r"):\s")
    sections: dict[str, str] = {}
    matches = list(pattern.finditer(text))
    for match, following in zip(matches, matches[1:] + [None]):
        end = following.start() if following is not None else len(text)
        sections[match.group(1)] = text[match.end():end].strip()
    return sections


def rule(*, severities: tuple[str, ...], inputs: tuple[str, ...], evidence: Evidence,
         metadata: tuple[str, ...] = (), classes_page: bool = False, heatmaps: tuple[str, ...] = (),
         explained_by: tuple[str, ...] = (), thresholds: tuple[str, ...] = (),
         live: Live | None = None, explains: tuple[str, ...] = (),
         explaining: Callable[[Finding], bool] | None = None) -> Callable[[RuleFunction], RuleFunction]:
    """Declare a rule: attach its :class:`RuleRecord` to the function (which is returned unchanged).

    The rule id is the function's name. The engine collects every decorated
    function of the rule modules (``traindoctor.diagnosis.engine.RULE_MODULES``).

    Example:
        >>> @rule(severities=("warning",), inputs=("loss",), evidence=Evidence.series("loss"))
        ... def demo(run):
        ...     '''A demo.
        ...
        ...     Symptom: s. Likely cause: c. Try: t. Source: seed 004.
        ...     '''
        ...     return []
        >>> demo.record.id, demo.record.source
        ('demo', 'seed 004.')
    """

    def declare(function: RuleFunction) -> RuleFunction:
        function.record = RuleRecord(  # type: ignore[attr-defined]
            id=function.__name__, function=function, severities=tuple(severities), inputs=tuple(inputs),
            metadata=tuple(metadata), evidence=evidence, classes_page=classes_page, heatmaps=tuple(heatmaps),
            explained_by=tuple(explained_by), thresholds=tuple(thresholds), live=live, explains=tuple(explains),
            explaining=explaining)
        return function

    return declare


def record_of(value: object) -> RuleRecord | None:
    """The record :func:`rule` attached to ``value``, None when it is not a declared rule."""
    record = getattr(value, "record", None)
    return record if isinstance(record, RuleRecord) else None
