"""The rule catalogue (``docs/rules.md``), written from the rules' records.

Every rule with its severities, inputs, evidence chart, the rules that
explain it away, whether it also runs live during training, its thresholds (the named constants with their values and
the comments that say where each number comes from) and its source. A test
compares the committed file with this module's output, so it never goes
stale. Regenerate it with::

    python -m traindoctor.diagnosis.catalogue > docs/rules.md
"""

from __future__ import annotations

import ast
import inspect
import io
import sys
import tokenize
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from traindoctor.diagnosis.engine import RECORDS, RULE_MODULES
from traindoctor.diagnosis.records import RuleRecord, docstring_sections

COMMAND = "python -m traindoctor.diagnosis.catalogue > docs/rules.md"


@dataclass(frozen=True)
class Constant:
    """A module-level constant of a rule module, with the comment that explains it.

    Attributes:
        name: the constant's name.
        value: its value.
        literal: its value as the source writes it (``5e-3``, ``1.0 / 3.0``).
        computed: the source computes it (an expression, not a number).
        comment: the comment block above it (shared by the constants that
            follow the block) and any comment on its own line, joined.
        module: the module that defines it.
    """

    name: str
    value: Any
    literal: str
    computed: bool
    comment: str
    module: str

    def shown(self) -> str:
        """``NAME = literal``, with the value when the source computes it (``1.0 / 3.0 (= 0.3333)``)."""
        value = f" (= {self.value:.4g})" if self.computed else ""
        return f"{self.name} = {self.literal}{value}"


def module_constants(module: ModuleType) -> dict[str, Constant]:
    """The UPPER_CASE constants a module assigns at top level, in source order, with their comments.

    A constant's comment is the nearest block of whole-line comments above it,
    reached across the constants assigned in between (one block often explains
    several: ``# ...for at least 5 records and 2 % of the run`` covers the two
    constants below it) but not across a blank line or other code; plus a
    comment at the end of its own line.
    """
    source = inspect.getsource(module)
    lines = source.splitlines()
    whole_line: dict[int, str] = {}
    trailing: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row, column = token.start
            text = token.string.lstrip("#").strip()
            (whole_line if not lines[row - 1][:column].strip() else trailing)[row] = text
    assignments: list[tuple[str, str, bool, int, int]] = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id.isupper() and node.value is not None:
                literal = ast.get_source_segment(source, node.value) or ""
                computed = not isinstance(node.value, ast.Constant)
                assignments.append((target.id, literal, computed, node.lineno, node.end_lineno or node.lineno))
    assigned_rows = {row for *_, first, last in assignments for row in range(first, last + 1)}
    constants = {}
    for name, literal, computed, first, last in assignments:
        block: list[str] = []
        row = first - 1
        while row >= 1 and row in assigned_rows and not block:
            row -= 1
        while row >= 1 and row in whole_line:
            block.insert(0, whole_line[row])
            row -= 1
        own = [trailing[row] for row in range(first, last + 1) if row in trailing]
        comment = " — ".join(part for part in (" ".join(block), " ".join(own)) if part)
        constants[name] = Constant(name, getattr(module, name), literal, computed, comment, module.__name__)
    return constants


def rule_constants(modules: tuple[ModuleType, ...] = RULE_MODULES) -> dict[str, Constant]:
    """Every constant of the rule modules by name.

    Raises:
        ValueError: two rule modules define a constant of the same name (a
            threshold name must say which number it is).
    """
    found: dict[str, Constant] = {}
    for module in modules:
        for name, constant in module_constants(module).items():
            if name in found:
                raise ValueError(f"{name} is defined in both {found[name].module} and {module.__name__}")
            found[name] = constant
    return found


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (``||Δw||`` would end the cell)."""
    return text.replace("|", "\\|")


def _thresholds_table(record: RuleRecord, constants: dict[str, Constant]) -> list[str]:
    """One row per comment: the constants it explains (in the record's order) and the comment."""
    rows: dict[tuple[str, str], list[str]] = {}
    for name in record.thresholds:
        constant = constants[name]
        rows.setdefault((constant.module, constant.comment), []).append(f"`{constant.shown()}`")
    lines = ["| threshold | where the number comes from |", "| --- | --- |"]
    lines += [f"| {'<br>'.join(shown)} | {_cell(comment)} |" for (_, comment), shown in rows.items()]
    return lines


def _rule_section(record: RuleRecord, constants: dict[str, Constant]) -> list[str]:
    sections = docstring_sections(record.function)
    heatmaps = ", ".join(f"`{name}`" for name in record.heatmaps if name != record.evidence.name
                         or record.evidence.chart != "heatmap")
    evidence = record.evidence.describe()
    if heatmaps:
        evidence += f"; also outlined on the {heatmaps} per-layer heatmap"
    if record.classes_page:
        evidence += "; listed on the Classes page"
    explained = ", ".join(f"`{cause}`" for cause in record.explained_by) or "–"
    explains = record.describe_explains()
    inputs = ", ".join(f"`{name}`" for name in record.inputs + record.metadata)
    lines = [f"### `{record.id}`", "", record.summary, "",
             f"- **Symptom:** {sections['Symptom']}",
             f"- **Likely cause:** {sections['Likely cause']}",
             f"- **Try:** {sections['Try']}",
             f"- **Severities:** {', '.join(record.severities)}",
             f"- **Inputs:** {inputs}",
             f"- **Evidence:** {evidence}",
             f"- **Explained away by:** {explained}",
             f"- **Explains (listed under it):** {explains}",
             f"- **Live:** {record.live.describe() if record.live else 'no: judged after the fact, on the whole run'}",
             f"- **Source:** {record.source}",
             ""]
    if record.thresholds:
        lines += _thresholds_table(record, constants) + [""]
    return lines


def catalogue_markdown(records: dict[str, RuleRecord] = RECORDS,
                       modules: tuple[ModuleType, ...] = RULE_MODULES) -> str:
    """``docs/rules.md``: an overview table, then one section per rule, grouped by rule module."""
    constants = rule_constants(modules)
    lines = ["# Rule catalogue", "",
             "Generated from the rules' records (`@rule` beside each function in `diagnosis/`) by",
             f"`{COMMAND}`; do not edit it by hand.",
             "A rule is *explained away* when a more specific cause is found as a warning or critical finding:",
             "its own finding is then dropped.",
             "A rule that *explains* others is a cause: when it is found as a warning or critical finding, their",
             "findings are kept and listed under it, causes first. The reports list at most three info findings",
             "of a rule and count the rest.",
             "A *live* rule also runs in the probe during training, at each flush, on a bounded window of the",
             "recent history; its warning and critical findings are written to the run as they appear",
             "(`live_finding` events) and can stop training (`Probe(stop_on=...)`).", "",
             "| rule | severities | inputs | evidence | explained away by | live |",
             "| --- | --- | --- | --- | --- | --- |"]
    for record in records.values():
        inputs = ", ".join(record.inputs)
        explained = ", ".join(record.explained_by) or "–"
        lines.append(f"| [`{record.id}`](#{record.id}) | {', '.join(record.severities)} | {inputs} "
                     f"| {record.evidence.describe()} | {explained} | {'yes' if record.live else '–'} |")
    lines.append("")
    for module in modules:
        members = [record for record in records.values() if record.function.__module__ == module.__name__]
        if not members:
            continue
        title = (inspect.getdoc(module) or module.__name__).splitlines()[0]
        lines += [f"## {module.__name__.rsplit('.', 1)[-1]}", "", title, ""]
        for record in members:
            lines += _rule_section(record, constants)
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> None:
    """Print the catalogue (UTF-8, whatever the terminal's encoding)."""
    sys.stdout.buffer.write(catalogue_markdown().encode("utf-8"))


if __name__ == "__main__":
    main()
