"""Train the seventeenth program hold-out into its own store, tests/data/heldout17, with its labels.

Three program families written on 2026-12-01 by an engineer who changes no
rule and never read them, unlike the families of the tuning corpus and of
the earlier hold-outs in model kind, data, loss, optimizer, schedule and
logging cadence (``HELD_OUT17``; each module's docstring says what it
trains): a small post-LN transformer encoder with a [CLS] token classifying
synthetic 16-word sentences of a 300-word vocabulary into 20 topics
(cross-entropy, AdamW with warm-up then linear decay, Adam with one-cycle,
every step or every 10 steps; task: classification, C = 20), a
character-level LSTM language model over a stream of synthetic personal
names (next-character cross-entropy over 27 symbols, RMSprop with
ReduceLROnPlateau, Adamax with exponential decay, Adagrad at a constant lr,
plain SGD in one fault, 5-step window means or one mean per epoch; task:
language_modelling, V = 27) and a dilated fully convolutional network
regressing a per-pixel depth map from synthetic Lambertian-shaded 16×16
images (per-pixel MSE, SGD with momentum and step decay, NAdam with cosine
to zero, AdamW with warm-up-stable-decay, RMSprop in one fault, every 3
steps from step 21 or every step; task: regression). Each family has 4
healthy runs and 5-6 fault runs. Their runs are kept out of
``tests/data/corpus`` and their modules out of ``FAMILY_MODULES``. Labels
come from how each run was built (make_corpus's ``Spec``), checked against
a healthy twin (``tests/diagnosis/heldout_twins.py --family
topic_transformer_sentences lstm_names_lm shading_depth_fcn``), never from
what the diagnosis says; they are written as
``tests/data/heldout17/corpus_labels.json`` in the corpus's format, so
that::

    python benchmarks/diagnosis_accuracy.py --corpus tests/data/heldout17 \\
        --families topic_transformer_sentences lstm_names_lm shading_depth_fcn

scores them held out by family.

Usage::

    python tests/diagnosis/make_heldout17.py [--out tests/data/heldout17] [--only NAME ...] [--missing]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELD_OUT17 = ("topic_transformer_sentences", "lstm_names_lm", "shading_depth_fcn")
DEFAULT_OUT = ROOT / "tests" / "data" / "heldout17"


def heldout17_specs() -> list:
    """Every run of the three families (make_corpus.Spec), each with its family.

    Raises:
        ValueError: two runs share a name.
    """
    from tests.diagnosis import make_corpus

    return make_corpus.checked_specs(make_corpus.family_specs(HELD_OUT17))


def main(argv: list[str] | None = None) -> int:
    from tests.diagnosis import make_corpus

    return make_corpus.train_cli(argv, heldout17_specs, DEFAULT_OUT, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
