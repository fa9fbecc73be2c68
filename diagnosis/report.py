"""The diagnosis as text for a terminal and as the ``diagnose --json`` object of docs/design.md (pure)."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any, Iterable, Union

from traindoctor.diagnosis.finding import SEVERITIES, SEVERITY_RANK, Finding
from traindoctor.diagnosis.verdict import Verdict, steps_text, verdict

if TYPE_CHECKING:  # at run time this module needs no pandas: cached diagnoses print without it
    from traindoctor.diagnosis.cache import Diagnosis
    from traindoctor.store.run_data import RunData

    Reported = Union[RunData, Diagnosis]

WIDTH = 100
# Events that say the record itself is incomplete or mixed (store/format.py's
# EVENT_KINDS): a reader must know before trusting any finding on the run.
RECORDING_EVENTS = ("rows_dropped", "concurrent_writer", "step_without_optimizer_step")
_HEADINGS = {"critical": "CRITICAL", "warning": "WARNING", "info": "INFO"}


def worst_severity(findings: Iterable[Finding]) -> str | None:
    """The most severe level among ``findings`` (``critical`` > ``warning`` > ``info``), None when there are none."""
    ranks = [SEVERITY_RANK[f.severity] for f in findings]
    return SEVERITIES[max(ranks)] if ranks else None


def _wrap(label: str, text: str, indent: int = 6) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=" " * indent + label,
                         subsequent_indent=" " * (indent + len(label))) or []


def _finding_lines(finding: Finding, depth: int = 0) -> list[str]:
    """One finding: its headline, message, advice and source, indented ``depth`` levels under its cause."""
    pad = 4 * depth
    if finding.explained_by is None:
        head = f"    [{finding.rule}] {finding.title} ({steps_text(finding)})"
    else:
        head = (f"{' ' * (4 + pad)}↳ {finding.severity}: [{finding.rule}] {finding.title} ({steps_text(finding)}), "
                f"explained by {finding.explained_by}")
    lines = [head]
    lines += _wrap("", finding.message, 6 + pad)
    lines += _wrap("advice: ", finding.advice, 6 + pad)
    if finding.source:
        lines += _wrap("source: ", finding.source, 6 + pad)
    return lines


def _folded(findings: list[Finding]) -> list[tuple[Finding, list[tuple[Finding, int]]]]:
    """The causes and findings on their own, each with the consequences folded under it (with their depth)."""
    groups: list[tuple[Finding, list[tuple[Finding, int]]]] = []
    depth_of: dict[str, int] = {}
    for finding in findings:  # diagnose() puts each consequence right after its cause
        if finding.explained_by is None or not groups:
            groups.append((finding, []))
            depth_of = {finding.rule: 0}
            continue
        depth = depth_of.get(finding.explained_by, 0) + 1
        depth_of.setdefault(finding.rule, depth)
        groups[-1][1].append((finding, depth))
    return groups


def crash_reason(run: "Reported") -> str | None:
    """Why a crashed run stopped, in one line: the last line of its ``crash`` event's traceback
    (``ValueError: boom``, ``KeyboardInterrupt``, a signal's name), None when it recorded none.

    A cached :class:`~traindoctor.diagnosis.cache.Diagnosis` carries it already.
    """
    if hasattr(run, "crash"):
        return getattr(run, "crash")
    events = getattr(run, "events", None)
    if events is None or events.empty:
        return None
    # A run's events Table or the Run page's events frame (pandas): both iterate their columns' values.
    details = [detail for kind, detail in zip(events["kind"], events["detail"]) if kind == "crash"]
    for detail in reversed(details):
        lines = [line.strip() for line in str(detail).splitlines() if line.strip()]
        if lines:
            return lines[-1][:300]
    return None


def interrupted_by_user(run: "Reported") -> bool:
    """Whether a crashed run was stopped by its user: its crash event ends in ``KeyboardInterrupt``
    (Ctrl-C, SIGINT). run.json says ``crashed`` (DESIGN.md's statuses); the reports say interrupted,
    and ``--fail-on`` does not count it as critical."""
    return getattr(run, "status", None) == "crashed" and crash_reason(run) == "KeyboardInterrupt"


def recording_problems(run: "Reported") -> list[dict[str, Any]]:
    """What the store recorded as lost or mixed in this run: ``rows_dropped``,
    ``concurrent_writer`` and ``step_without_optimizer_step`` events, each
    ``{"kind", "step", "detail"}`` in step order.

    A cached :class:`~traindoctor.diagnosis.cache.Diagnosis` carries them already.
    """
    kept = getattr(run, "recording_problems", None)
    if kept is not None:
        return list(kept)
    events = run.events
    if events.empty:
        return []
    return [{"kind": str(kind), "step": None if step is None or step != step else int(step), "detail": str(detail)}
            for kind, step, detail in zip(events["kind"], events["step"], events["detail"])
            if kind in RECORDING_EVENTS]


# What a status other than finished means for the findings below it.
_STATUS_LINES = {
    "crashed": "  CRASHED: the run stopped without finishing (an exception, a signal, or a heartbeat that stopped); "
               "the findings cover what was recorded",
    "running": "  RUNNING: the run is still training; the findings cover the run so far",
    "interrupted": "  INTERRUPTED: the run was stopped by its user (Ctrl-C: KeyboardInterrupt) before it finished; "
                   "the findings cover what was recorded",
}


def recorded_nothing(run: "Reported") -> bool:
    """Whether the run recorded no optimizer step: a :class:`~traindoctor.diagnosis.cache.Diagnosis`
    whose ``steps`` (the catalog's count) is 0. The rules had nothing to judge. False when the
    count is unknown (a RunData built by hand)."""
    steps = getattr(run, "steps", None)
    return isinstance(steps, int) and not isinstance(steps, bool) and steps == 0


def verdict_headline(found: Verdict | None, findings: list[Finding], status: str | None = None,
                     empty: bool = False) -> str:
    """The verdict in one line: the most likely cause's sentence, or why there is none
    (``empty``: the run recorded no step)."""
    if found is not None:
        return f"{found.severity.upper()}: {found.sentence}"
    if empty and status == "running":
        return "nothing recorded yet: no training step has reached the store."
    if empty:
        return ("NOTHING RECORDED: no training step was recorded, so nothing could be judged "
                "(did the loop call probe.step()? an imported log may hold evaluation values only).")
    if status == "interrupted":
        return "INTERRUPTED by its user (KeyboardInterrupt): no rule names a cause in what was recorded."
    if status == "crashed":
        return "CRASHED: no rule names a cause in what was recorded."
    hints = sum(f.severity == "info" for f in findings)
    return "no problem found" + (f" ({hints} hint(s) below)." if hints else ".")


def _verdict_lines(found: Verdict | None) -> list[str]:
    if found is None:
        return []
    lines = _wrap("evidence: ", found.evidence, 2) + _wrap("try first: ", found.try_first, 2)
    if found.explains:
        lines += _wrap("explains: ", ", ".join(found.explains), 2)
    return lines


def _run_section(run: "Reported", findings: list[Finding]) -> list[str]:
    header = f"{run.name} ({run.run_id})" if run.name != run.run_id else run.run_id
    found = verdict(findings)
    empty = recorded_nothing(run)
    status = "interrupted" if interrupted_by_user(run) else getattr(run, "status", None)
    header = f"{header}: {verdict_headline(found, findings, status, empty)}"
    lines = [header, "=" * min(len(header), WIDTH), *_verdict_lines(found)]
    if status in _STATUS_LINES:
        lines += textwrap.wrap(_STATUS_LINES[status], WIDTH, subsequent_indent="    ")
    reason = crash_reason(run) if status == "crashed" else None
    if reason:
        lines += textwrap.wrap(f"  it stopped on: {reason}", WIDTH, subsequent_indent="    ")
    problems = recording_problems(run)
    if problems:
        lines.append(f"  RECORDING: {len(problems)} problem(s) with this run's record; findings may miss what was lost "
                     "or misread what was recorded")
        for problem in problems:
            where = f" (step {problem['step']})" if problem["step"] is not None else ""
            lines += _wrap(f"[{problem['kind']}]{where} ", problem["detail"])
    if not findings:
        lines.append("  No findings: no step to judge." if empty else
                     "  No findings: nothing in this run breaks the rules of thumb.")
        return lines
    counts = ", ".join(f"{sum(f.severity == s for f in findings)} {s}" for s in reversed(SEVERITIES)
                       if any(f.severity == s for f in findings))
    lines.append(f"  {len(findings)} finding(s): {counts}")
    groups = _folded(findings)
    for severity in reversed(SEVERITIES):
        # A group heads under its worst member: a warning cause of a critical symptom is critical trouble.
        group = [(cause, under) for cause, under in groups
                 if worst_severity([cause, *(f for f, _ in under)]) == severity]
        if not group:
            continue
        lines.append("")
        lines.append(f"  {_HEADINGS[severity]}")
        for cause, under in group:
            lines += _finding_lines(cause)
            for consequence, depth in under:
                lines += _finding_lines(consequence, depth)
    return lines


def text_report(items: list[tuple["Reported", list[Finding]]]) -> str:
    """A readable report: one section per run, its first line the verdict (``verdict.verdict``: the
    most likely cause, then its evidence and the one thing to try first), then the findings grouped
    by severity (critical first), causes first: a finding another explains is printed under it
    (``↳``), whatever its own severity, and the group heads under its worst member.

    Example:
        >>> from traindoctor.diagnosis import RunData
        >>> print(text_report([(RunData(run_id="r1", name="r1"), [])]))
        r1: no problem found.
        =====================
          No findings: nothing in this run breaks the rules of thumb.
    """
    sections = ["\n".join(_run_section(run, findings)) for run, findings in items]
    return "\n\n".join(sections)


def _verdict_dict(findings: list[Finding]) -> dict[str, Any] | None:
    found = verdict(findings)
    return None if found is None else found.to_dict()


def json_report(items: list[tuple["Reported", list[Finding]]]) -> dict[str, Any]:
    """docs/design.md's ``diagnose --json`` object (``verdict``: :meth:`Verdict.to_dict`, null when none):
    ``{"runs": [{"run_id", "name", "status", "crash", "recorded_nothing", "findings": [...],
    "recording_problems": [...]}]}``; ``status`` is ``running``, ``finished``, ``crashed`` or null
    when unknown; ``crash`` is :func:`crash_reason` for a crashed run, else null;
    ``recorded_nothing`` is :func:`recorded_nothing`."""
    return {"runs": [{"run_id": run.run_id, "name": run.name, "verdict": _verdict_dict(findings),
                      "status": getattr(run, "status", None), "recorded_nothing": recorded_nothing(run),
                      "crash": crash_reason(run) if getattr(run, "status", None) == "crashed" else None,
                      "findings": [f.to_dict() for f in findings],
                      "recording_problems": recording_problems(run)}
                     for run, findings in items]}
