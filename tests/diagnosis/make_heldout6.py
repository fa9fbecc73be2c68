"""Train the sixth program hold-out (issue #12) into its own store, tests/data/heldout6, with its labels.

Three program families written on 2026-11-30 (from the rules of 6ed0da9 on)
by an engineer who changes no rule, and never shown to those who do, unlike
the 24 families of the tuning corpus and the fifteen of the earlier
hold-outs in model kind, data, loss, optimizer, schedule and logging cadence
(``HELD_OUT6``; each module's docstring says what it trains): a 2-D
ConvNet on synthetic textures (12 classes, label smoothing 0.1, batch
augmentation, Lookahead-SGD written in the module, PolynomialLR, the step's
values every 5 steps), a BERT-style masked-token encoder on key-value
records (dynamic masking, loss on the masked positions only, AdEMAMix
written in the module, warm-up-stable-decay with a 1-sqrt cool-down,
12-step window means) and an LSTM-attention forecaster trained with a
Gaussian negative log-likelihood (regression, centred RMSprop and AMSGrad,
ReduceLROnPlateau, epoch means from epoch 6). Their runs are kept out of
``tests/data/corpus`` and their modules out of ``FAMILY_MODULES``, so that
leave-one-family-out over the corpus, threshold tuning and the corpus tests
never see them. Every run's run.json carries the probe's parameter layout
(``env.model.shapes``, ``tied``, ``frozen``; make_corpus's ``probe_layout``).
Labels come from how each run was built (make_corpus's ``Spec``), checked
against a healthy twin (``tests/diagnosis/heldout_twins.py --family
conv2d_textures mlm_records forecast_gnll``), never from what the diagnosis
says; they are written as ``tests/data/heldout6/corpus_labels.json`` in the
corpus's format, so that::

    python benchmarks/diagnosis_accuracy.py --corpus tests/data/heldout6 \\
        --families conv2d_textures mlm_records forecast_gnll

scores them held out by family. About 7 minutes of one CPU core for the 38 runs (428 s measured).

Usage::

    python tests/diagnosis/make_heldout6.py [--out tests/data/heldout6] [--only NAME ...] [--missing]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELD_OUT6 = ("conv2d_textures", "mlm_records", "forecast_gnll")
DEFAULT_OUT = ROOT / "tests" / "data" / "heldout6"


def heldout6_specs() -> list:
    """Every run of the three families (make_corpus.Spec), each with its family.

    Raises:
        ValueError: two runs share a name.
    """
    from tests.diagnosis import make_corpus

    return make_corpus.checked_specs(make_corpus.family_specs(HELD_OUT6))


def main(argv: list[str] | None = None) -> int:
    from tests.diagnosis import make_corpus

    return make_corpus.train_cli(argv, heldout6_specs, DEFAULT_OUT, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
