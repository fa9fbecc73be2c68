"""What a rule reports: one :class:`Finding` per problem seen in a run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITIES = ("info", "warning", "critical")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Finding:
    """One diagnosis of one run.

    Attributes:
        rule: the rule id, exactly as in RULES.md (``lr_too_high``, …).
        severity: ``info``, ``warning`` or ``critical``.
        title: a short headline.
        message: what was seen, with the numbers that triggered the rule.
        advice: what to try, drawn from the seeds.
        step_start, step_end: the optimizer steps the finding concerns (the
            dashboard shades them); None when it concerns the whole run.
        evidence: the numbers behind the message, JSON-serialisable.
        source: where the rule of thumb comes from (seed or paper).
        explains: the rules of the findings of this diagnosis that this
            finding explains (its record's ``explains``): they follow it,
            folded under it. Empty for a finding that explains nothing.
        explained_by: the rule of the finding this one is a consequence of
            and is folded under; None for a cause or a finding on its own.
    """

    rule: str
    severity: str
    title: str
    message: str
    advice: str
    step_start: int | None = None
    step_end: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    explains: tuple[str, ...] = ()
    explained_by: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        # Read back from JSON (the findings cache) the rules come as a list: one finding, one value.
        object.__setattr__(self, "explains", tuple(self.explains))

    @property
    def step_range(self) -> tuple[int, int] | None:
        """(first, last) step the finding concerns; one given bound stands for
        both; None when it concerns the whole run."""
        if self.step_start is None and self.step_end is None:
            return None
        start = self.step_start if self.step_start is not None else self.step_end
        end = self.step_end if self.step_end is not None else self.step_start
        return start, end

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of DESIGN.md's ``diagnose --json``."""
        data = asdict(self)
        data["explains"] = list(self.explains)
        return data
