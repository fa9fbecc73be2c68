"""Train the tenth program hold-out (issue #12) into its own store, tests/data/heldout10, with its labels.

Three program families written on 2026-11-30 by an engineer who changes no
rule and never reads them, unlike the families of the tuning corpus and of
the earlier hold-outs in model kind, data, loss, optimizer, schedule and
logging cadence (``HELD_OUT10``; each module's docstring says what it
trains): a RealNVP normalising flow fitting an 8-D warped Gaussian mixture
by negative log-likelihood in nats per dimension (no task kind recorded,
Adam-atan2 written in the module and AdamW, one-cycle, 10-step window
means), a tiny Perceiver classifying noisy point sets into 100 classes
(cross-entropy, ADOPT written in the module and NAdam, warm-up-stable-decay,
every 5 steps) and BPR matrix factorisation ranking items for users on
implicit feedback (pairwise -log σ loss, no task kind recorded, Cautious
AdamW written in the module, Adagrad and SGD with Nesterov momentum,
MultiStepLR per epoch, per-epoch means from epoch 2). Their runs are kept
out of ``tests/data/corpus`` and their modules out of ``FAMILY_MODULES``.
Labels come from how each run was built (make_corpus's ``Spec``), checked
against a healthy twin (``tests/diagnosis/heldout_twins.py --family
realnvp_flow_mixture perceiver_point_sets bpr_matrix_factorisation``), never
from what the diagnosis says; they are written as
``tests/data/heldout10/corpus_labels.json`` in the corpus's format, so that::

    python benchmarks/diagnosis_accuracy.py --corpus tests/data/heldout10 \\
        --families realnvp_flow_mixture perceiver_point_sets bpr_matrix_factorisation

scores them held out by family.

Usage::

    python tests/diagnosis/make_heldout10.py [--out tests/data/heldout10] [--only NAME ...] [--missing]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELD_OUT10 = ("realnvp_flow_mixture", "perceiver_point_sets", "bpr_matrix_factorisation")
DEFAULT_OUT = ROOT / "tests" / "data" / "heldout10"


def heldout10_specs() -> list:
    """Every run of the three families (make_corpus.Spec), each with its family.

    Raises:
        ValueError: two runs share a name.
    """
    from tests.diagnosis import make_corpus

    return make_corpus.checked_specs(make_corpus.family_specs(HELD_OUT10))


def main(argv: list[str] | None = None) -> int:
    from tests.diagnosis import make_corpus

    return make_corpus.train_cli(argv, heldout10_specs, DEFAULT_OUT, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
