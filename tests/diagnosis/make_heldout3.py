"""Train the third program hold-out (issue #12) into its own store, tests/data/heldout3, with its labels.

Three program families written on 2026-11-30 (from the rules of 31be2a9 on)
by an engineer who changes no rule, and never shown to those who do, unlike the 18 families of the tuning corpus in model kind,
data, loss, optimizer, schedule and logging cadence (``HELD_OUT3``; each
module's docstring says what it trains). Their runs are kept out of
``tests/data/corpus`` and their modules out of ``FAMILY_MODULES``, so that
leave-one-family-out over the corpus, threshold tuning and the corpus tests
never see them. Labels come from how each run was built (make_corpus's
``Spec``), checked against a healthy twin (``tests/diagnosis/heldout_twins.py
--family unet_signals lstm_lm_hmm set_transformer_points``), never from what
the diagnosis says; they are written as ``tests/data/heldout3/corpus_labels.json``
in the corpus's format, so that::

    python benchmarks/diagnosis_accuracy.py --corpus tests/data/heldout3 \\
        --families unet_signals lstm_lm_hmm set_transformer_points

scores them held out by family. About 10 minutes of one CPU core for the 37 runs.

Usage::

    python tests/diagnosis/make_heldout3.py [--out tests/data/heldout3] [--only NAME ...] [--missing]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELD_OUT3 = ("unet_signals", "lstm_lm_hmm", "set_transformer_points")
DEFAULT_OUT = ROOT / "tests" / "data" / "heldout3"


def heldout3_specs() -> list:
    """Every run of the three families (make_corpus.Spec), each with its family.

    Raises:
        ValueError: two runs share a name.
    """
    from tests.diagnosis import make_corpus

    return make_corpus.checked_specs(make_corpus.family_specs(HELD_OUT3))


def main(argv: list[str] | None = None) -> int:
    import torch

    from tests.diagnosis import make_corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--only", nargs="*", help="train only these runs (others are kept)")
    parser.add_argument("--missing", action="store_true", help="train only the runs not in --out yet")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    os.nice(10)  # a background job: the machine's other users keep their share
    specs = heldout3_specs()
    chosen = [spec for spec in specs if (not args.only or spec.name in args.only)
              and not (args.missing and (args.out / spec.name / "run.json").is_file())]
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in chosen:
        shutil.rmtree(args.out / spec.name, ignore_errors=True)
        started = time.process_time()
        make_corpus.train(spec, args.out)
        print(f"trained {spec.name} ({spec.family}) in {time.process_time() - started:.1f} s CPU", flush=True)
    make_corpus.write_labels(specs, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
