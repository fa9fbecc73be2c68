"""Train the ninth program hold-out (issue #12) into its own store, tests/data/heldout9, with its labels.

Three program families written on 2026-11-30 by an engineer who changes no
rule and never reads them, unlike the families of the tuning corpus and of
the earlier hold-outs in model kind, data, loss, optimizer, schedule and
logging cadence (``HELD_OUT9``; each module's docstring says what it
trains): a GRU classifying the next of 6 event kinds in event logs
(cross-entropy, Signum written in the module and Adam, ReduceLROnPlateau,
every 3 steps), a 1-D ConvNet autoencoder of 3-channel sensor traces (MSE
regression, AggMo written in the module and Adam, warm-up then quadratic
polynomial decay, 5-step window means) and a small transformer regressing
event counts with a Poisson log-likelihood (no task kind recorded,
AdaBound written in the module and AdamW, warm-up then inverse square
root, every 4 steps, val twice per epoch). Their runs are kept out of
``tests/data/corpus`` and their modules out of ``FAMILY_MODULES``. Labels
come from how each run was built (make_corpus's ``Spec``), checked against
a healthy twin (``tests/diagnosis/heldout_twins.py --family gru_next_event
ae_conv1d_sensors poisson_counts_transformer``), never from what the
diagnosis says; they are written as ``tests/data/heldout9/corpus_labels.json``
in the corpus's format, so that::

    python benchmarks/diagnosis_accuracy.py --corpus tests/data/heldout9 \\
        --families gru_next_event ae_conv1d_sensors poisson_counts_transformer

scores them held out by family.

Usage::

    python tests/diagnosis/make_heldout9.py [--out tests/data/heldout9] [--only NAME ...] [--missing]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELD_OUT9 = ("gru_next_event", "ae_conv1d_sensors", "poisson_counts_transformer")
DEFAULT_OUT = ROOT / "tests" / "data" / "heldout9"


def heldout9_specs() -> list:
    """Every run of the three families (make_corpus.Spec), each with its family.

    Raises:
        ValueError: two runs share a name.
    """
    from tests.diagnosis import make_corpus

    return make_corpus.checked_specs(make_corpus.family_specs(HELD_OUT9))


def main(argv: list[str] | None = None) -> int:
    from tests.diagnosis import make_corpus

    return make_corpus.train_cli(argv, heldout9_specs, DEFAULT_OUT, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
