"""Train the fourteenth program hold-out (issue #12) into its own store, tests/data/heldout14, with its labels.

A healthy-only set measuring the false-alarm rate on training programs
nobody on the team wrote: eight program families written on 2026-12-01 by
an engineer who changes no rule and never read them, unlike every earlier
family in model kind, data, loss and loop (``HELD_OUT14``; each module's
docstring says what it trains and why its settings are the working ones):
a tabular ResNet with mixup and label smoothing under LAMB / Nesterov SGD
and cosine warm restarts, a graph attention network regressing a
molecule-like graph property (RMSprop, ReduceLROnPlateau, per-epoch
means), a 2-layer LSTM encoder-decoder with attention translating dates
to ISO (clipped Adam, warm-up + inverse square root), a PointNet
classifying 3-D point clouds (Nesterov SGD, step decay), a linear SVM
(multi-class hinge) on tf-idf bag-of-words (constant SGD then a cool-down,
25-step window means), NeuMF on implicit feedback (BCE against sampled
negatives, constant Adagrad, logged from step 200), a CLIP-style dual
encoder with a learned temperature (AdamW, warm-up + cosine) and DeepSurv
(a Cox partial likelihood on censored survival data, exponential decay).
Every run is healthy (five per family: a standard lr checked against 3x up
and down, a schedule suited to its length, trained to a sensible end); no
fault was injected, so the labels expect nothing and the families have no
twins. The runs are kept out of ``tests/data/corpus`` and the modules out
of ``FAMILY_MODULES``; the labels are written as
``tests/data/heldout14/corpus_labels.json`` in the corpus's format, so
that::

    python benchmarks/diagnosis_accuracy.py --corpus tests/data/heldout14 --families ...

counts the warnings and criticals on them (false alarms).

Usage::

    python tests/diagnosis/make_heldout14.py [--out tests/data/heldout14] [--only NAME ...] [--missing]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELD_OUT14 = ("tabresnet_mixup_sgdr", "gat_molecule_property", "lstm_attention_dates", "pointnet_shapes3d",
              "svm_hinge_bow", "ncf_implicit_bce", "clip_dual_encoder", "deepsurv_cox")
DEFAULT_OUT = ROOT / "tests" / "data" / "heldout14"


def heldout14_specs() -> list:
    """Every run of the eight families (make_corpus.Spec), each with its family.

    Raises:
        ValueError: two runs share a name.
    """
    from tests.diagnosis import make_corpus

    return make_corpus.checked_specs(make_corpus.family_specs(HELD_OUT14))


def main(argv: list[str] | None = None) -> int:
    from tests.diagnosis import make_corpus

    return make_corpus.train_cli(argv, heldout14_specs, DEFAULT_OUT, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
