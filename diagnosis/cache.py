"""Findings cached on disk: each run is diagnosed once per content and engine version.

A run's findings are kept in its folder (``store.format``'s "Findings
cache", ``.findings.json``) with the two things they depend on:

- the run's content **fingerprint** from its catalog summary (its files'
  names, and the run.json fields the rules read), which changes when a
  segment is published, a run is compacted or its config is edited;
- the **engine version** (:func:`engine_version`): a hash of the source of
  the diagnosis modules and of ``store/run_data.py``, so any change to a
  rule, a threshold or how a run is loaded invalidates every cached finding
  without anyone remembering to bump a number.

Either differing makes the cache stale and the run is diagnosed again. The
severity counts and rule ids are also written into the run's summary, so a
listing of thousands of runs shows them (and ``has:critical`` filters on
them) without reading one findings file per run.

A cache hit costs two small JSON reads and imports neither pandas, nor
DuckDB, nor the rule modules: ``traindoctor diagnose`` on a diagnosed run
answers in a few tens of milliseconds.

Example:
    >>> from traindoctor.store.catalog import Catalog              # doctest: +SKIP
    >>> catalog = Catalog("traindoctor_runs")  # doctest: +SKIP
    >>> diagnosis = diagnose_cached(catalog, catalog.summary(catalog.resolve("my-run")))  # doctest: +SKIP
    >>> diagnosis.cached, [f.rule for f in diagnosis.findings]      # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from traindoctor.diagnosis.finding import SEVERITIES, Finding
from traindoctor.store.catalog import Catalog, attach_findings, damaged_segments, read_findings, write_findings

if TYPE_CHECKING:
    from traindoctor.store.reader import Store

# Modules whose source decides the findings: every module of the diagnosis
# package but those that only present or keep them, and how a run is loaded.
_ENGINE_PACKAGES = ("traindoctor.diagnosis",)
_NOT_ENGINE = frozenset({"cache.py", "report.py", "catalogue.py"})
_ENGINE_MODULES = ("traindoctor.store.run_data",)


@functools.lru_cache(maxsize=1)
def engine_version() -> str:
    """The diagnosis engine's version: traindoctor's version and a hash of the
    source of the modules that decide findings (read, never imported).

    Example:
        >>> engine_version()[:6] == engine_version()[:6]
        True
    """
    from traindoctor import __version__

    digest = hashlib.sha256(__version__.encode())
    paths: list[Path] = []
    for package in _ENGINE_PACKAGES:
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            paths += sorted(path for path in Path(location).glob("*.py") if path.name not in _NOT_ENGINE)
    for module in _ENGINE_MODULES:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin:
            paths.append(Path(spec.origin))
    for path in paths:
        digest.update(path.name.encode())
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"?")  # a module shipped without its source: the version alone decides
    return f"{__version__}+{digest.hexdigest()[:16]}"


@dataclass(frozen=True)
class Diagnosis:
    """One run's findings, as the reports print them.

    Attributes:
        run_id, name: the run.
        findings: most severe first, as :func:`~traindoctor.diagnosis.engine.diagnose` sorts them.
        recording_problems: the run's ``rows_dropped``, ``concurrent_writer`` and
            ``step_without_optimizer_step`` events (``{"kind", "step", "detail"}``).
        fingerprint: the run content they were computed for.
        cached: read from the cache rather than computed now.
        status: ``running``, ``finished`` or ``crashed`` as a reader shows it
            (the summary's; a running run whose heartbeat stopped is crashed),
            None when unknown. Not cached: it is read afresh each time.
        crash: the last line of the run's ``crash`` event (``report.crash_reason``), None without one.
        steps: optimizer steps the run recorded (the summary's ``num_steps``; 0: the
            loop never reached ``probe.step``), None when unknown. Not cached.
    """

    run_id: str
    name: str
    findings: list[Finding] = field(default_factory=list)
    recording_problems: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: str = ""
    cached: bool = False
    status: str | None = None
    crash: str | None = None
    steps: int | None = None


def severity_counts(findings: Iterable[Finding]) -> dict[str, int]:
    """Findings per severity: ``{"info": n, "warning": n, "critical": n}``."""
    findings = list(findings)
    return {severity: sum(f.severity == severity for f in findings) for severity in SEVERITIES}


def cached_findings_summary(summary: dict[str, Any], engine: str | None = None) -> dict[str, Any] | None:
    """The summary's ``findings`` entry (counts per severity, rule ids) when it
    is current for the run's content and the engine; None when the run must
    be diagnosed (again)."""
    found = summary.get("findings")
    if not isinstance(found, dict):
        return None
    if found.get("fingerprint") != summary.get("fingerprint") or found.get("engine") != (engine or engine_version()):
        return None
    return found


def cached_diagnosis(catalog: Catalog, summary: dict[str, Any], engine: str | None = None) -> Diagnosis | None:
    """The cached findings of the run ``summary`` describes, when current; else None."""
    engine = engine or engine_version()
    kept = read_findings(catalog.root / summary["run_id"])
    if kept is None or kept.get("engine") != engine or kept.get("fingerprint") != summary.get("fingerprint"):
        return None
    if damaged_segments(catalog.root / summary["run_id"], summary.get("segments") or {}):
        return None  # read again: the reader skips the damaged file and says so, as it did not when cached
    try:
        findings = [Finding(**item) for item in kept.get("findings") or []]
    except (TypeError, ValueError):
        return None  # written by something else: diagnosed again
    return Diagnosis(run_id=summary["run_id"], name=summary.get("name") or summary["run_id"], findings=findings,
                     recording_problems=list(kept.get("recording_problems") or []),
                     fingerprint=summary["fingerprint"], cached=True, status=summary.get("status"),
                     crash=kept.get("crash"), steps=summary.get("num_steps"))


def diagnose_cached(catalog: Catalog, summary: dict[str, Any], *, store: "Store | None" = None,
                    use_cache: bool = True, engine: str | None = None) -> Diagnosis:
    """The findings of one run: from the cache when current, else computed and kept.

    Args:
        catalog: the store's catalog.
        summary: the run's current summary (``catalog.summary(run_id)``),
            taken before the run is read, so findings are never filed under a
            newer fingerprint than the data they saw.
        store: the :class:`~traindoctor.store.reader.Store` to load the run
            with on a miss (one is made otherwise); pass one to reuse it across runs.
        use_cache: False diagnoses again (and refreshes the cache).
        engine: :func:`engine_version` (computed when None).

    Raises:
        UnknownRunError: the run is gone.
    """
    engine = engine or engine_version()
    if use_cache:
        hit = cached_diagnosis(catalog, summary, engine)
        if hit is not None:
            return hit
    from traindoctor.diagnosis import diagnose  # the package's name: a test's stand-in engine replaces it there
    from traindoctor.diagnosis.report import crash_reason, recording_problems
    from traindoctor.store.run_data import load_run

    if store is None:
        from traindoctor.store.reader import Store

        store = Store(catalog.root, stale_after_s=catalog.stale_after_s)
    run = load_run(store, summary["run_id"])
    # Through JSON once, so a fresh diagnosis reads exactly as a cached one will.
    findings_json = json.loads(json.dumps([f.to_dict() for f in diagnose(run)], default=str, allow_nan=True))
    diagnosis = Diagnosis(run_id=run.run_id, name=run.name, findings=[Finding(**item) for item in findings_json],
                          recording_problems=recording_problems(run), fingerprint=summary["fingerprint"],
                          status=summary.get("status"), crash=crash_reason(run), steps=summary.get("num_steps"))
    keep(catalog, diagnosis, engine)
    return diagnosis


def keep(catalog: Catalog, diagnosis: Diagnosis, engine: str | None = None) -> bool:
    """Write ``diagnosis`` into the run's findings cache and its counts into its
    summary; False when the store cannot be written (a read-only store is
    diagnosed afresh each time)."""
    engine = engine or engine_version()
    run_dir = os.path.join(os.fspath(catalog.root), diagnosis.run_id)
    kept = write_findings(run_dir, {
        "engine": engine, "fingerprint": diagnosis.fingerprint, "name": diagnosis.name,
        "findings": [f.to_dict() for f in diagnosis.findings], "recording_problems": diagnosis.recording_problems,
        "crash": diagnosis.crash,
    })
    if kept:
        attach_findings(run_dir, diagnosis.fingerprint, {
            "engine": engine, "fingerprint": diagnosis.fingerprint, "counts": severity_counts(diagnosis.findings),
            "rules": sorted({f.rule for f in diagnosis.findings}), "top": top_finding(diagnosis.findings),
            "crash": diagnosis.crash,  # "KeyboardInterrupt": the Runs page says interrupted, not crashed
        })


def top_finding(findings: list[Finding]) -> dict[str, Any] | None:
    """``{"rule", "severity", "title"}`` of the verdict's finding (``verdict.verdict``), else of the
    first finding; None without findings. A listing shows it beside the counts; ``severity`` is
    the verdict's (the worst of the cause and its consequences)."""
    from traindoctor.diagnosis.verdict import verdict

    if not findings:
        return None
    found = verdict(findings)
    head = findings[found.index] if found is not None else findings[0]
    return {"rule": head.rule, "severity": found.severity if found is not None else head.severity,
            "title": head.title}
    return kept
