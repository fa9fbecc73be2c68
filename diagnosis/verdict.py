"""The verdict: a run's most likely cause in one line, with its evidence and the one thing to try first.

Findings come causes first (``engine.causes_first``): each consequence is
folded right after the finding that explains it (``Finding.explained_by``),
and the groups so formed are ranked by the worst severity among their
members, then findings seen in the data before configuration hints, then
causes that explain something before findings on their own, then the
engine's order (severity, then step). The verdict is the head of
the first group that holds a warning or a critical finding.

Why by group and not by the finding's own severity: a symptom is often
judged more severe than its cause (accuracy no better than the majority
class is critical; "lr too high", read off the loss curve's shape, is a
warning), and ranking findings one by one put the symptom, with advice that
fits another fault ("check the inputs and labels"), above the cause that
explains it.

Pure and light: imports no pandas and no rule, so a cached diagnosis is
rendered with its verdict without loading the engine.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from traindoctor.diagnosis.finding import SEVERITY_RANK, Finding

# A verdict is given for a group whose worst finding is at least a warning:
# info findings are hints, not causes of trouble.
VERDICT_MIN_SEVERITY = "warning"


@dataclass(frozen=True)
class Verdict:
    """The most likely cause of a run's trouble.

    Attributes:
        rule: the rule id (RULES.md) of the finding named as the cause.
        severity: the worst severity among that finding and the consequences
            folded under it (``info``, ``warning`` or ``critical``).
        sentence: the cause in one sentence, with its rule id and steps
            (optimizer steps), e.g. ``Loss climbed back after its best: lr
            too high (lr_too_high, steps 431–500).``
        evidence: what was seen, with its numbers (the finding's message).
        try_first: the one thing to try first: the first clause of the
            finding's advice.
        step_start, step_end: the optimizer steps the finding concerns; None
            when it concerns the whole run.
        explains: the rules of the findings folded under it (its
            consequences), in the engine's order, each once.
        index: the position of the finding in the list the verdict was taken from.
    """

    rule: str
    severity: str
    sentence: str
    evidence: str
    try_first: str
    step_start: int | None
    step_end: int | None
    explains: tuple[str, ...]
    index: int

    def to_dict(self) -> dict[str, Any]:
        """The ``verdict`` object of ``diagnose --json`` (docs/design.md)."""
        data = asdict(self)
        data["explains"] = list(self.explains)
        return data


def groups(findings: Sequence[Finding]) -> list[list[int]]:
    """The positions of ``findings`` grouped by cause: each group is a finding
    that no other explains (``explained_by`` None) followed by the
    consequences folded right after it, in the given order.

    A consequence at the very start of the list (its cause missing) starts a
    group of its own.

    Example:
        >>> a = Finding("lr_too_high", "warning", "t", "m", "a")
        >>> b = Finding("loss_spike", "warning", "t", "m", "a", explained_by="lr_too_high")
        >>> groups([a, b, a])
        [[0, 1], [2]]
    """
    grouped: list[list[int]] = []
    for index, finding in enumerate(findings):
        if finding.explained_by is None or not grouped:
            grouped.append([index])
        else:
            grouped[-1].append(index)
    return grouped


# Rules that judge how the optimizer was set up (weight decay on biases and
# norm weights, Adam's betas and eps against the seeds' advice), not what the
# run's curves show: at equal severity a problem seen in the data comes first.
# A run whose model learned nothing got "Weight decay on biases" as its
# verdict because that finding concerns the whole run and sorted first.
CONFIGURATION_HINTS = frozenset({"weight_decay_on_norm_and_bias", "adam_hyperparameters"})


def group_rank(members: Sequence[Finding]) -> tuple[int, int, int]:
    """The sort key of a group (its head first, then its consequences): the
    worst severity among its members, then a finding seen in the data before
    a configuration hint (``CONFIGURATION_HINTS``), then whether the head
    explains any (a cause before a finding on its own); smaller sorts first."""
    worst = max(SEVERITY_RANK[f.severity] for f in members)
    return -worst, 1 if members[0].rule in CONFIGURATION_HINTS else 0, 0 if len(members) > 1 else 1


def ranked_groups(findings: Sequence[Finding]) -> list[list[int]]:
    """:func:`groups`, most likely cause first (:func:`group_rank`; ties keep the given order)."""
    return sorted(groups(findings), key=lambda positions: group_rank([findings[i] for i in positions]))


def steps_text(finding: Finding) -> str:
    """``steps 431–500``, ``step 44``, ``up to step 90`` or ``whole run``."""
    if finding.step_range is None:
        return "whole run"
    if finding.step_start is None:
        return f"up to step {finding.step_end}"
    start, end = finding.step_range
    return f"step {start}" if start == end else f"steps {start}–{end}"


def first_advice(advice: str) -> str:
    """The one thing to try first: the advice's first sentence, cut at its first ``;`` outside parentheses.

    Example:
        >>> first_advice("Lower the lr (×0.3 to ×0.1) or decay it; clip gradients.")
        'Lower the lr (×0.3 to ×0.1) or decay it.'
    """
    text = " ".join(advice.split())
    if not text:
        return ""
    sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z(])", text, maxsplit=1)[0]
    depth, end = 0, len(sentence)
    for index, character in enumerate(sentence):
        depth += {"(": 1, ")": -1}.get(character, 0)
        if character == ";" and depth <= 0:  # a ';' in code quoted in parentheses does not end the clause
            end = index
            break
    return sentence[:end].rstrip(" .") + "."


def verdict(findings: Sequence[Finding]) -> Verdict | None:
    """The most likely cause among a run's ``findings`` (module doc), None when
    no group holds a warning or critical finding.

    Args:
        findings: one run's findings as ``diagnose()`` returns them (causes
            first, consequences folded under their cause).

    Example:
        >>> cause = Finding("lr_too_high", "warning", "Loss climbed back after its best: lr too high",
        ...                 "The loss reached 0.1, then climbed back to 2.", "Lower the lr; clip gradients.",
        ...                 step_start=431, step_end=500, explains=("no_better_than_baseline",))
        >>> symptom = Finding("no_better_than_baseline", "critical", "No better than the majority class", "m",
        ...                   "Check the inputs.", explained_by="lr_too_high")
        >>> found = verdict([cause, symptom])
        >>> found.rule, found.severity, found.try_first
        ('lr_too_high', 'critical', 'Lower the lr.')
        >>> found.sentence
        'Loss climbed back after its best: lr too high (lr_too_high, steps 431–500).'
    """
    findings = list(findings)
    for positions in ranked_groups(findings):
        members = [findings[i] for i in positions]
        worst = max(members, key=lambda f: SEVERITY_RANK[f.severity]).severity
        if SEVERITY_RANK[worst] < SEVERITY_RANK[VERDICT_MIN_SEVERITY]:
            return None
        head = members[0]
        title = head.title.rstrip(" .")
        return Verdict(rule=head.rule, severity=worst, sentence=f"{title} ({head.rule}, {steps_text(head)}).",
                       evidence=" ".join(head.message.split()), try_first=first_advice(head.advice),
                       step_start=head.step_start, step_end=head.step_end,
                       explains=tuple(dict.fromkeys(f.rule for f in members[1:])), index=positions[0])
    return None
