"""The summary table of benchmarks/gpu_suite.sh, read from its step logs.

    python benchmarks/gpu_suite_summary.py LOGS_DIR

LOGS_DIR holds ``<step>.log`` and ``<step>.rc`` (exit status) for the steps
no_sync, probe_overhead and compare_loggers; a step whose lines are missing
shows its exit status instead (timed out, failed).
"""
import re
import sys
from pathlib import Path

logs = Path(sys.argv[1])


def status(name):
    code = int((logs / f"{name}.rc").read_text().strip() or 1)
    return "timed out" if code in (124, 137) else ("ok" if code == 0 else f"failed (exit {code})")


def text(name):
    return (logs / f"{name}.log").read_text(errors="replace")


rows = []
no_sync = text("no_sync")
passed = re.search(r"(\d+) passed", no_sync)
skipped = re.search(r"(\d+) skipped", no_sync)
verdict = ("passed" if passed and not re.search(r"\d+ failed", no_sync) else
           "skipped" if skipped else status("no_sync"))
rows.append(("no host-device sync on ordinary steps", "probe, CUDA", verdict, "passes"))

for line in text("probe_overhead").splitlines():
    found = re.match(r"(\S+) (?:\[[^\]]*\] )?\(([\d.]+)M params, (\S+)\): bare ([\d.]+) ms/step, probe ([\d.]+) ms/step, "
                     r"median ratio ([\d.]+).*?peak extra memory ([\d.]+) MiB", line)
    if found:
        model = found[1]
        target = "<= 1.01" if model.startswith("gpt2") else "<= 1.03"
        rows.append(("probe overhead (probe_overhead.py)", f"{model}, {found[2]}M",
                     f"ratio {float(found[6]):.3f} ({found[4]} vs {found[5]} ms/step), +{found[7]} MiB", target))
if not any(row[0].startswith("probe overhead") for row in rows):
    rows.append(("probe overhead (probe_overhead.py)", "gpt2, resnet18", status("probe_overhead"), "<= 1.01 / 1.03"))

for line in text("compare_loggers").splitlines():
    parts = line.split()
    if len(parts) >= 9 and parts[0] in ("gpt2-small", "resnet18") and parts[1] in ("bare-again", "probe", "tensorboard"):
        model, variant, step_ms, ratio, added = parts[0], parts[1], parts[2], parts[3], parts[7]
        rows.append((f"vs loggers: {variant}", model, f"{step_ms} ms/step, ratio {ratio}, +{added} ms", ""))
if not any(row[0].startswith("vs loggers") for row in rows):
    rows.append(("vs loggers (compare_loggers.py)", "gpt2-small, resnet18", status("compare_loggers"), ""))

widths = [max(len(row[i]) for row in rows + [("check", "model", "result", "target")]) for i in range(4)]
print()
for row in [("check", "model", "result", "target"), tuple("-" * w for w in widths), *rows]:
    print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
print(f"\nfull output: {logs}")
