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

import sys
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
    from tests.diagnosis import make_corpus

    return make_corpus.train_cli(argv, heldout3_specs, DEFAULT_OUT, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
