"""Train the sixteenth program hold-out into its own store, tests/data/heldout16, with its labels.

Four program families written on 2026-12-01 by an engineer who changes no
rule and never read them, unlike the families of the tuning corpus and of
the earlier hold-outs in model kind, data, loss, optimizer, schedule and
logging cadence (``HELD_OUT16``; each module's docstring says what it
trains): a mixture-of-softmaxes classifier (four softmax components mixed
by a learned gate over an MLP trunk) on synthetic hierarchical tabular
records of 200 classes (the mixture's negative log-likelihood, SGD with
Nesterov momentum and multi-step decay or cosine to zero, NAdam with
exponential decay, every step; task: classification, C = 200), a
character-level bidirectional GRU tagging every character of synthetic
text with its word's class and its position in the word (31 tags,
per-character cross-entropy, Adam with cosine to zero or warm-up then
constant, every 5 steps; task: classification, C = 31), a small DenseNet
counting Gaussian blobs in synthetic 12×12 images (MSE on the
standardised count, AdamW with one-cycle or warm-up-stable-decay, SGD in
one fault, 4-step window means; task: regression) and a graph autoencoder
(GCN encoder, inner-product decoder) predicting the held-out links of a
synthetic latent-space graph with binary cross-entropy against sampled
non-links (RMSprop with ReduceLROnPlateau, Adagrad at a constant lr,
RAdam, one mean per epoch; task kind unknown). Each family has 4 healthy
runs and 5-6 fault runs. Their runs are kept out of ``tests/data/corpus``
and their modules out of ``FAMILY_MODULES``. Labels come from how each run
was built (make_corpus's ``Spec``), checked against a healthy twin
(``tests/diagnosis/heldout_twins.py --family mos_tabular_200
bigru_char_tagger densenet_blob_counting gae_link_prediction``), never
from what the diagnosis says; they are written as
``tests/data/heldout16/corpus_labels.json`` in the corpus's format, so
that::

    python benchmarks/diagnosis_accuracy.py --corpus tests/data/heldout16 \\
        --families mos_tabular_200 bigru_char_tagger densenet_blob_counting gae_link_prediction

scores them held out by family.

Usage::

    python tests/diagnosis/make_heldout16.py [--out tests/data/heldout16] [--only NAME ...] [--missing]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELD_OUT16 = ("mos_tabular_200", "bigru_char_tagger", "densenet_blob_counting", "gae_link_prediction")
DEFAULT_OUT = ROOT / "tests" / "data" / "heldout16"


def heldout16_specs() -> list:
    """Every run of the four families (make_corpus.Spec), each with its family.

    Raises:
        ValueError: two runs share a name.
    """
    from tests.diagnosis import make_corpus

    return make_corpus.checked_specs(make_corpus.family_specs(HELD_OUT16))


def main(argv: list[str] | None = None) -> int:
    from tests.diagnosis import make_corpus

    return make_corpus.train_cli(argv, heldout16_specs, DEFAULT_OUT, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
