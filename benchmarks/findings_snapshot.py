"""Every finding of the diagnosis on every run the repository holds, as one JSON file, and a comparison of two.

A check for changes that must not change what the diagnosis says (a faster
data layer, a refactor): snapshot before, snapshot after, compare. The runs:

- the tuning corpus (``tests/data/corpus``), every program hold-out
  (``tests/data/heldout3``, ``heldout4``, … as they are added), the lr×10
  runs and the bundled sample runs, each loaded from its store with
  ``load_run``;
- the real public logs (``tests/data/real_logs``) and the field cases
  (``tests/data/cases``), each imported with ``traindoctor import`` and
  diagnosed with ``diagnose --json --no-cache``, as a user would;
- the PolyPythia and BigScience runs when ``../shared/external`` is present,
  and the setup-rule cases built in ``tests/diagnosis/setup_cases.py``.

Each run's findings are kept whole (rule, severity, steps, title, message,
advice, evidence), so any change of wording or of an evidence value shows.

Usage::

    python benchmarks/findings_snapshot.py snapshot OUT.json [--only corpus,real_logs,...]
    python benchmarks/findings_snapshot.py compare A.json B.json [--rules overfitting,lr_too_high]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STORES = {
    "corpus": ROOT / "tests" / "data" / "corpus",
    # Every program hold-out, the ones added later included (heldout3, heldout4, ...).
    **{path.name: path for path in sorted((ROOT / "tests" / "data").glob("heldout*"), key=lambda p: int(p.name[7:]))
       if path.name[7:].isdigit()},
    "lr10x": ROOT / "tests" / "data" / "lr10x" / "store",
    "sample_runs": ROOT / "sample_runs" / "store",
}


def _as_dicts(findings: list[Any]) -> list[dict[str, Any]]:
    return [f if isinstance(f, dict) else f.to_dict() for f in findings]


def _store_runs(root: Path) -> Iterator[tuple[str, Callable[[], list[dict[str, Any]]]]]:
    from traindoctor.diagnosis.engine import diagnose
    from traindoctor.store.reader import open_store
    from traindoctor.store.run_data import load_run

    store = open_store(root)
    for run_id in sorted(store.run_ids()):
        yield run_id, lambda run_id=run_id: _as_dicts(diagnose(load_run(store, run_id)))


def _real_logs(workdir: Path) -> Iterator[tuple[str, Callable[[], list[dict[str, Any]]]]]:
    from tests.diagnosis.real_logs import real_logs, run_case

    for index, case in enumerate(real_logs()):
        yield case.name, lambda case=case, index=index: run_case(case, workdir / f"real{index}")


def _field_cases(workdir: Path) -> Iterator[tuple[str, Callable[[], list[dict[str, Any]]]]]:
    import contextlib
    import io

    from tests.diagnosis.test_field_cases import CASES, FIELD_CASES
    from traindoctor.cli import main

    for index, (case_id, (kind, path, extra, _)) in enumerate(sorted(FIELD_CASES.items())):
        def run(case_id=case_id, kind=kind, path=path, extra=extra, index=index) -> list[dict[str, Any]]:
            folder = workdir / f"case{index}"
            folder.mkdir(parents=True)
            source = folder / Path(path).name
            source.write_bytes((CASES / path).read_bytes())
            store = folder / "store"
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                main(["import", kind, str(source), "--store", str(store), "--run", case_id, "--no-progress",
                      "--no-diagnose", *extra])
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                main(["diagnose", case_id, "--store", str(store), "--json", "--no-cache"])
            return json.loads(out.getvalue())["runs"][0]["findings"]
        yield case_id, run


def _built_cases() -> Iterator[tuple[str, Callable[[], list[dict[str, Any]]]]]:
    from tests.diagnosis.external import EXTERNAL, external_cases
    from tests.diagnosis.setup_cases import setup_cases
    from traindoctor.diagnosis.engine import diagnose

    cases = list(setup_cases()) + (list(external_cases()) if EXTERNAL.exists() else [])
    for index, case in enumerate(cases):
        yield f"{index:03d}-{case.run.name}", lambda case=case: _as_dicts(diagnose(case.run))


def snapshot(only: set[str] | None) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sources: dict[str, Callable[[], Iterator]] = {name: (lambda root=root: _store_runs(root))
                                                       for name, root in STORES.items()}
        sources["real_logs"] = lambda: _real_logs(Path(tmp))
        sources["cases"] = lambda: _field_cases(Path(tmp))
        sources["built"] = _built_cases
        for name, source in sources.items():
            if only and name not in only:
                continue
            started = time.perf_counter()
            runs: dict[str, Any] = {}
            for run, compute in source():
                try:
                    runs[run] = compute()
                except Exception as error:  # a crash is a result to compare, not a reason to stop
                    runs[run] = {"error": f"{type(error).__name__}: {error}"}
            result[name] = runs
            print(f"{name}: {len(runs)} runs in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return result


def _of_rules(findings: Any, rules: set[str] | None) -> Any:
    if rules is None or not isinstance(findings, list):
        return findings
    return [f for f in findings if f.get("rule") in rules]


def compare(a: dict[str, Any], b: dict[str, Any], rules: set[str] | None = None) -> int:
    """Print every run whose findings differ (only those of ``rules``, when given); 1 if any does."""
    differences = 0
    for source in sorted(set(a) | set(b)):
        runs_a, runs_b = a.get(source, {}), b.get(source, {})
        for run in sorted(set(runs_a) | set(runs_b)):
            left = _of_rules(runs_a.get(run, "<absent>"), rules)
            right = _of_rules(runs_b.get(run, "<absent>"), rules)
            if left != right:
                differences += 1
                print(f"{source}/{run}:\n  A: {json.dumps(left)[:600]}\n  B: {json.dumps(right)[:600]}")
    total = sum(len(runs) for runs in a.values())
    print(f"{differences} of {total} runs differ")
    return 1 if differences else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    take = commands.add_parser("snapshot")
    take.add_argument("out", type=Path)
    take.add_argument("--only", default="", help="comma-separated sources: " + ", ".join(
        [*STORES, "real_logs", "cases", "built"]))
    both = commands.add_parser("compare")
    both.add_argument("a", type=Path)
    both.add_argument("b", type=Path)
    both.add_argument("--rules", default="", help="comma-separated rule ids: compare only their findings")
    args = parser.parse_args(argv)
    if args.command == "snapshot":
        only = {name for name in args.only.split(",") if name}
        args.out.write_text(json.dumps(snapshot(only or None), indent=1, sort_keys=True), encoding="utf-8")
        return 0
    rules = {name for name in args.rules.split(",") if name} or None
    return compare(json.loads(args.a.read_text(encoding="utf-8")), json.loads(args.b.read_text(encoding="utf-8")),
                   rules)


if __name__ == "__main__":
    raise SystemExit(main())
