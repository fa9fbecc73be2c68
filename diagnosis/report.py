"""The diagnosis as text for a terminal and as DESIGN.md's ``diagnose --json`` object (pure)."""

from __future__ import annotations

import textwrap
from typing import Any, Iterable

from traindoctor.diagnosis.finding import SEVERITIES, SEVERITY_RANK, Finding
from traindoctor.store.run_data import RunData

WIDTH = 100
_HEADINGS = {"critical": "CRITICAL", "warning": "WARNING", "info": "INFO"}


def worst_severity(findings: Iterable[Finding]) -> str | None:
    """The most severe level among ``findings`` (``critical`` > ``warning`` > ``info``), None when there are none."""
    ranks = [SEVERITY_RANK[f.severity] for f in findings]
    return SEVERITIES[max(ranks)] if ranks else None


def _steps(finding: Finding) -> str:
    if finding.step_range is None:
        return "whole run"
    if finding.step_start is None:
        return f"up to step {finding.step_end}"
    start, end = finding.step_range
    return f"step {start}" if start == end else f"steps {start}–{end}"


def _wrap(label: str, text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=f"      {label}", subsequent_indent=" " * (6 + len(label))) or []


def _run_section(run: RunData, findings: list[Finding]) -> list[str]:
    header = f"{run.name} ({run.run_id})" if run.name != run.run_id else run.run_id
    lines = [header, "=" * min(len(header), WIDTH)]
    if not findings:
        lines.append("  No findings: nothing in this run breaks the rules of thumb.")
        return lines
    counts = ", ".join(f"{sum(f.severity == s for f in findings)} {s}" for s in reversed(SEVERITIES)
                       if any(f.severity == s for f in findings))
    lines.append(f"  {len(findings)} finding(s): {counts}")
    for severity in reversed(SEVERITIES):
        group = [f for f in findings if f.severity == severity]
        if not group:
            continue
        lines.append("")
        lines.append(f"  {_HEADINGS[severity]}")
        for finding in group:
            lines.append(f"    [{finding.rule}] {finding.title} ({_steps(finding)})")
            lines += _wrap("", finding.message)
            lines += _wrap("advice: ", finding.advice)
            if finding.source:
                lines += _wrap("source: ", finding.source)
    return lines


def text_report(items: list[tuple[RunData, list[Finding]]]) -> str:
    """A readable report: one section per run, findings grouped by severity (critical first).

    Example:
        >>> from traindoctor.diagnosis import RunData
        >>> print(text_report([(RunData(run_id="r1", name="r1"), [])]))
        r1
        ==
          No findings: nothing in this run breaks the rules of thumb.
    """
    sections = ["\n".join(_run_section(run, findings)) for run, findings in items]
    return "\n\n".join(sections)


def json_report(items: list[tuple[RunData, list[Finding]]]) -> dict[str, Any]:
    """DESIGN.md's ``diagnose --json`` object: ``{"runs": [{"run_id", "name", "findings": [...]}]}``."""
    return {"runs": [{"run_id": run.run_id, "name": run.name, "findings": [f.to_dict() for f in findings]}
                     for run, findings in items]}
