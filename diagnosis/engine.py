"""Run every rule on a run and collect the findings, sorted by severity then step."""

from __future__ import annotations

import logging
from types import ModuleType

from traindoctor.diagnosis import classes, generalisation, gradients, learning_rate, loss, setup
from traindoctor.diagnosis.finding import SEVERITY_RANK, Finding
from traindoctor.diagnosis.memo import MemoisedRun
from traindoctor.diagnosis.records import RuleFunction, RuleRecord, record_of
from traindoctor.store.run_data import RunData

logger = logging.getLogger(__name__)

# The modules whose @rule functions make up the diagnosis, in the order the
# catalogue lists them (RULES.md's order: curves, gradients, setup, classes).
RULE_MODULES: tuple[ModuleType, ...] = (learning_rate, loss, generalisation, gradients, setup, classes)


def collect_records(modules: tuple[ModuleType, ...]) -> dict[str, RuleRecord]:
    """Rule id → record of every function declared with ``@rule`` in ``modules``, in definition order.

    Raises:
        ValueError: two rules share an id, or a rule is explained by a rule that does not exist.
    """
    records: dict[str, RuleRecord] = {}
    for module in modules:
        for value in vars(module).values():
            record = record_of(value)
            # A module that imports another's rule (to reuse it) does not declare it again.
            if record is None or value.__module__ != module.__name__:
                continue
            if record.id in records:
                raise ValueError(f"two rules are called {record.id!r}")
            records[record.id] = record
    unknown = {cause for record in records.values() for cause in record.explained_by} - set(records)
    unknown |= {cause for record in records.values() if record.live for cause in record.live.quiet_after} - set(records)
    if unknown:
        raise ValueError(f"explained_by or live quiet_after name rules that do not exist: {sorted(unknown)}")
    return records


RECORDS: dict[str, RuleRecord] = collect_records(RULE_MODULES)

# Rule id (RULES.md, spelled exactly) → function. Each rule returns [] when
# the run lacks its inputs, so a loss-only CSV still gets the loss rules.
RULES: dict[str, RuleFunction] = {rule_id: record.function for rule_id, record in RECORDS.items()}

# A finding that only restates the symptom of a more specific cause is
# dropped when that cause is found: "more capacity" is wrong advice when the
# gradients vanish, and a diverged run's accuracy need not be compared with
# the zero-rule baseline. Key: rule dropped; value: rules that explain it
# (warning or critical findings only). Each rule's record says why.
EXPLAINED_BY: dict[str, tuple[str, ...]] = {rule_id: record.explained_by for rule_id, record in RECORDS.items()
                                             if record.explained_by}


def drop_explained(findings: list[Finding]) -> list[Finding]:
    """Remove findings whose rule is explained by a more specific warning/critical finding (EXPLAINED_BY)."""
    causes = {f.rule for f in findings if f.severity in ("warning", "critical")}
    return [f for f in findings if not set(EXPLAINED_BY.get(f.rule, ())) & causes]


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Critical first, then by first step (whole-run findings first), then rule id."""
    return sorted(findings, key=lambda f: (-SEVERITY_RANK[f.severity],
                                           f.step_start if f.step_start is not None else -1, f.rule))


def diagnose(run: RunData, *, strict: bool = False, rules: dict[str, RuleFunction] | None = None) -> list[Finding]:
    """All findings for one run, sorted by severity (critical first) then step.

    Findings explained by a more specific cause are dropped (EXPLAINED_BY).
    The rules share one per-run memo (:class:`~traindoctor.diagnosis.memo.MemoisedRun`):
    what several of them derive from the run (the divergence onset, the
    spikes, the loss profile, …) is computed once for this call.

    A rule that raises on odd data is logged and skipped so the others still
    run; ``strict=True`` re-raises instead (the tests use it so such bugs show).

    Example:
        >>> from traindoctor.diagnosis import RunData, diagnose
        >>> diagnose(RunData(run_id="empty", name="empty"))
        []
    """
    memoised = MemoisedRun.of(run)
    findings: list[Finding] = []
    for rule_id, rule in (rules or RULES).items():
        try:
            findings.extend(rule(memoised))
        except Exception:
            if strict:
                raise
            logger.warning("rule %s failed on run %s; skipped", rule_id, run.run_id, exc_info=True)
    return sort_findings(drop_explained(findings))
