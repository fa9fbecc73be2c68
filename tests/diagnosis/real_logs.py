"""The real public logs of tests/data/real_logs (#12): each run imported and diagnosed as a user would, and scored
against the label its own authors' conclusion gives (``provenance.json``; the folder's README says how).

``run_case`` imports a run with ``traindoctor import <kind> <input> [import_args]`` into a store and reads
``traindoctor diagnose --json``: the CLI's code path, end to end. ``score`` turns a case and its findings into
what the test checks and what ``benchmarks/real_logs.py`` counts.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REAL_LOGS = Path(__file__).resolve().parents[1] / "data" / "real_logs"
# A finding at or above this severity is a claim a user acts on: what a healthy run must not get.
ALARM_SEVERITIES = ("warning", "critical")


@dataclass(frozen=True)
class RealLog:
    """One run of tests/data/real_logs and its label.

    Attributes:
        name: the folder name.
        importer: the ``traindoctor import`` kind (hf, lightning, log, csv).
        input: the file to import, inside the folder.
        import_args: extra CLI arguments the source justifies (``--task lm`` where the source names the model).
        healthy: the authors found nothing wrong.
        expect_any: for a faulty run, the rules the authors' conclusion implies; finding any one of them at
            warning or critical counts as detected.
        forbid: rules that must not fire at any severity (beyond a healthy run's no-warning rule).
        provenance: the whole provenance.json.
    """

    name: str
    importer: str
    input: str
    import_args: tuple[str, ...]
    healthy: bool
    expect_any: tuple[str, ...]
    forbid: tuple[str, ...]
    provenance: dict[str, Any] = field(compare=False, repr=False)

    @property
    def folder(self) -> Path:
        return REAL_LOGS / self.name

    @property
    def held_out(self) -> bool:
        """Added after the rules were written and labelled before traindoctor ran on it (provenance ``held_out``)."""
        return "held_out" in self.provenance

    @property
    def third(self) -> bool:
        """In the third hold-out (provenance ``third_hold_out``): added after the second hold-out was scored and
        labelled, and committed, before traindoctor ran on it. Not ``held_out``: ``--set held-out`` keeps meaning
        the second hold-out's 15 runs."""
        return "third_hold_out" in self.provenance

    @property
    def fourth(self) -> bool:
        """In the fourth hold-out (provenance ``fourth_hold_out``): gathered on 2026-12-01 by a helper that never
        ran traindoctor nor read its rules, labelled from the authors' words, and scored once before anything was
        changed for it."""
        return "fourth_hold_out" in self.provenance


def real_logs(root: Path = REAL_LOGS) -> list[RealLog]:
    """Every run folder under ``root`` (one with a provenance.json), sorted by name.

    Raises:
        ValueError: a provenance.json without a label the scorer can read.
    """
    cases = []
    for provenance_file in sorted(root.glob("*/provenance.json")):
        meta = json.loads(provenance_file.read_text(encoding="utf-8"))
        label = meta.get("label") or {}
        verdict = label.get("verdict")
        if verdict not in ("healthy", "faulty") or (verdict == "faulty" and not label.get("expect_any")):
            raise ValueError(f"{provenance_file}: label needs verdict healthy, or faulty with expect_any")
        cases.append(RealLog(
            name=provenance_file.parent.name, importer=meta["importer"], input=meta["input"],
            import_args=tuple(meta.get("import_args") or ()), healthy=verdict == "healthy",
            expect_any=tuple(label.get("expect_any") or ()), forbid=tuple(label.get("forbid") or ()), provenance=meta,
        ))
    return cases


def run_case(case: RealLog, workdir: Path) -> list[dict[str, Any]]:
    """Import ``case`` into a fresh store under ``workdir`` and return ``traindoctor diagnose --json``'s findings.

    The run's files are copied first, so an importer that reads side files (an HF ``config.json``, a Lightning
    ``hparams.yaml``) sees exactly the folder's.

    Raises:
        RuntimeError: the import or the diagnosis exited non-zero (with what it printed).
    """
    from traindoctor.cli import main

    source = workdir / "input" / case.name
    shutil.copytree(case.folder, source, ignore=shutil.ignore_patterns("provenance.json"))
    store = workdir / "store"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["import", case.importer, str(source / case.input), "--store", str(store), "--run", case.name,
                     "--no-progress", "--no-diagnose", *case.import_args])
    if code != 0:
        raise RuntimeError(f"import of {case.name} exited {code}: {out.getvalue().strip()}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["diagnose", case.name, "--store", str(store), "--json", "--no-cache"])
    if code not in (0, 1):
        raise RuntimeError(f"diagnose of {case.name} exited {code}")
    return json.loads(out.getvalue())["runs"][0]["findings"]


@dataclass(frozen=True)
class Score:
    """What one run's findings mean against its label.

    Attributes:
        detected: a faulty run got one of its expected rules at warning or critical (None for healthy runs).
        alarms: the warning/critical findings as (rule, severity).
        confirmed: the alarms whose rule the label expects.
        forbidden: forbidden rules that fired (any severity), and on a healthy run every alarm.
    """

    detected: bool | None
    alarms: tuple[tuple[str, str], ...]
    confirmed: tuple[tuple[str, str], ...]
    forbidden: tuple[tuple[str, str], ...]

    @property
    def passed(self) -> bool:
        return not self.forbidden and self.detected is not False


def score(case: RealLog, findings: list[dict[str, Any]]) -> Score:
    """Score ``findings`` (diagnose --json's) against ``case``'s label."""
    alarms = tuple((f["rule"], f["severity"]) for f in findings if f["severity"] in ALARM_SEVERITIES)
    confirmed = tuple(alarm for alarm in alarms if alarm[0] in case.expect_any)
    forbidden = [(f["rule"], f["severity"]) for f in findings if f["rule"] in case.forbid]
    if case.healthy:
        forbidden += [alarm for alarm in alarms if alarm not in forbidden]
    return Score(detected=None if case.healthy else bool(confirmed), alarms=alarms, confirmed=confirmed,
                 forbidden=tuple(forbidden))
