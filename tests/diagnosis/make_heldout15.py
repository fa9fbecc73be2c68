"""Train the fifteenth program hold-out into its own store, tests/data/heldout15, with its labels.

Four program families written on 2026-12-01 by an engineer who changes no
rule and never read them, unlike the families of the tuning corpus and of
the earlier hold-outs in model kind, data, loss, optimizer, schedule and
logging cadence (``HELD_OUT15``; each module's docstring says what it
trains): a siamese MLP embedding net trained with the triplet margin loss
on (anchor, positive, negative) records of 48 synthetic identities (metric
learning; Adagrad with step decay or RMSprop with cosine to zero, one mean
per epoch; task kind unknown), a small 2-D ResNet with GroupNorm
classifying synthetic 12×12 shape images into 10 classes from training
labels with 10 % noise (cross-entropy, SGD with momentum, one-cycle or
cosine to zero, every step; task: classification), a gated convolutional
language model (GLU blocks of causal 1-D convolutions) over the words of a
synthetic 500-word language (next-word cross-entropy, AdamW, warm-up then
linear decay, every 5 steps from step 25; task: language_modelling) and a
SimMIM-style masked patch model reconstructing the masked half of the 4×4
patches of synthetic 16×16 images with a small post-LN transformer (MSE on
the masked patches, AdamW with warm-up + cosine or one-cycle, Lion written
in the module and SGD in two faults, 4-step window means; task:
regression). Each family has 3 healthy runs and 5-6 fault runs. Their runs
are kept out of ``tests/data/corpus`` and their modules out of
``FAMILY_MODULES``. Labels come from how each run was built (make_corpus's
``Spec``), checked against a healthy twin (``tests/diagnosis/heldout_twins.py
--family triplet_margin_identities gn_resnet_noisy_shapes
gated_conv_lm_words masked_patch_autoencoder``), never from what the
diagnosis says; they are written as
``tests/data/heldout15/corpus_labels.json`` in the corpus's format, so
that::

    python benchmarks/diagnosis_accuracy.py --corpus tests/data/heldout15 \\
        --families triplet_margin_identities gn_resnet_noisy_shapes gated_conv_lm_words masked_patch_autoencoder

scores them held out by family.

Usage::

    python tests/diagnosis/make_heldout15.py [--out tests/data/heldout15] [--only NAME ...] [--missing]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELD_OUT15 = ("triplet_margin_identities", "gn_resnet_noisy_shapes", "gated_conv_lm_words",
              "masked_patch_autoencoder")
DEFAULT_OUT = ROOT / "tests" / "data" / "heldout15"


def heldout15_specs() -> list:
    """Every run of the four families (make_corpus.Spec), each with its family.

    Raises:
        ValueError: two runs share a name.
    """
    from tests.diagnosis import make_corpus

    return make_corpus.checked_specs(make_corpus.family_specs(HELD_OUT15))


def main(argv: list[str] | None = None) -> int:
    from tests.diagnosis import make_corpus

    return make_corpus.train_cli(argv, heldout15_specs, DEFAULT_OUT, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
