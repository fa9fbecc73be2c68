"""Run every rule on a run and collect the findings, causes first: ranked by cause, then severity, then step."""

from __future__ import annotations

import logging
from dataclasses import replace
from types import ModuleType

from traindoctor.diagnosis import classes, generalisation, gradients, learning_rate, loss, setup
from traindoctor.diagnosis.finding import SEVERITY_RANK, Finding
from traindoctor.diagnosis.memo import MemoisedRun
from traindoctor.diagnosis.records import RuleFunction, RuleRecord, record_of
from traindoctor.diagnosis.verdict import ranked_groups
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
    unknown |= {consequence for record in records.values() for consequence in record.explains} - set(records)
    if unknown:
        raise ValueError(f"explained_by, explains or live quiet_after name rules that do not exist: {sorted(unknown)}")
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


# A consequence is kept but folded under the finding that explains it: a
# too-high lr explains the loss spikes and the early best epoch it causes.
# Key: the explaining rule; value: the rules it explains (warning or
# critical findings of the key only). Each rule's record says which.
EXPLAINS: dict[str, tuple[str, ...]] = {rule_id: record.explains for rule_id, record in RECORDS.items()
                                        if record.explains}
# At most 3 info findings per rule are listed (the last says how many more
# there were): one hint repeated for every small spike is noise.
MAX_INFO_PER_RULE = 3


def cap_info(findings: list[Finding]) -> list[Finding]:
    """Keep the first MAX_INFO_PER_RULE info findings of each rule (in the given order); the last kept one
    counts the rest in its message and in ``evidence["not_listed"]``."""
    info_counts: dict[str, int] = {}
    for f in findings:
        if f.severity == "info":
            info_counts[f.rule] = info_counts.get(f.rule, 0) + 1
    kept: list[Finding] = []
    seen: dict[str, int] = {}
    for f in findings:
        if f.severity != "info":
            kept.append(f)
            continue
        seen[f.rule] = seen.get(f.rule, 0) + 1
        if seen[f.rule] > MAX_INFO_PER_RULE:
            continue
        rest = info_counts[f.rule] - MAX_INFO_PER_RULE
        if seen[f.rule] == MAX_INFO_PER_RULE and rest > 0:
            f = replace(f, message=f"{f.message} {rest} more info finding(s) of this rule are not listed.",
                        evidence={**f.evidence, "not_listed": rest})
        kept.append(f)
    return kept


def causes_first(findings: list[Finding]) -> list[Finding]:
    """Each finding a cause explains (EXPLAINS) moved right after that cause, and the two linked;
    the groups so formed ranked most likely cause first (``verdict.ranked_groups``).

    A cause is a warning or critical finding whose record ``explains`` the
    other's rule, through that finding (``RuleRecord.explaining``); a
    consequence is folded under the first such cause in the given order
    (never under one of its own consequences, however far down).
    A group (a finding no other explains, with its consequences) ranks by the
    worst severity among its members, then a cause before a finding on its
    own, then the given order: a symptom judged critical (accuracy no better
    than the majority class) no longer comes before the warning that
    explains it (the lr too high).
    """
    causes = [f for f in findings if f.rule in EXPLAINS and RECORDS[f.rule].explains_through(f)]
    cause_of: dict[int, Finding] = {}

    def above(f: Finding) -> set[int]:
        """The findings ``f`` is folded under, up to its group's head."""
        seen: set[int] = set()
        while id(f) in cause_of and id(f) not in seen:
            seen.add(id(f))
            f = cause_of[id(f)]
        return seen | {id(f)}

    for f in findings:
        cause = next((c for c in causes if c is not f and f.rule in EXPLAINS[c.rule]
                      and id(f) not in above(c)), None)
        if cause is not None:
            cause_of[id(f)] = cause
    consequences: dict[int, list[Finding]] = {}
    for f in findings:
        if id(f) in cause_of:
            consequences.setdefault(id(cause_of[id(f)]), []).append(f)
    ordered: list[Finding] = []

    def emit(f: Finding, cause: Finding | None) -> None:
        under = consequences.get(id(f), [])
        ordered.append(replace(f, explains=tuple(dict.fromkeys(g.rule for g in under)),
                               explained_by=None if cause is None else cause.rule))
        for g in under:
            emit(g, f)

    for f in findings:
        if id(f) not in cause_of:
            emit(f, None)
    return [ordered[i] for positions in ranked_groups(ordered) for i in positions]


def diagnose(run: RunData, *, strict: bool = False, rules: dict[str, RuleFunction] | None = None) -> list[Finding]:
    """All findings for one run, causes first: sorted by severity (critical first) then step,
    with each consequence folded right after the finding that explains it (EXPLAINS), and
    the groups so formed ranked by their worst member (:func:`causes_first`): the first
    finding is the verdict's (``traindoctor.diagnosis.verdict``).

    Findings explained by a more specific cause are dropped (EXPLAINED_BY);
    at most MAX_INFO_PER_RULE info findings per rule are listed.
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
    return causes_first(cap_info(sort_findings(drop_explained(findings))))
