"""Train the eighteenth program hold-out into its own store, tests/data/heldout18, with its labels.

Three program families written on 2026-12-01 by an engineer who changes no
rule and never read them, unlike the families of the tuning corpus and of
the earlier hold-outs in model kind, data, loss, optimizer, schedule and
logging cadence (``HELD_OUT18``; each module's docstring says what it
trains): a small R(2+1)D network (factored spatial and temporal 3-D
convolutions, BatchNorm3d) classifying synthetic 8-frame clips of a moving
blob into 8 actions by direction and speed (cross-entropy, SGD with
Nesterov momentum and warm-up then cosine, Adam with one-cycle, RAdam at a
constant lr, every step or 4-step window means; task: classification, C =
8), a Bengio-style neural 3-gram language model (3 concatenated word
embeddings, a tanh layer, a softmax) over a synthetic 568-word grammar
language (next-word cross-entropy, ASGD at a constant lr, Adam with
exponential decay, SGD with Nesterov momentum and ReduceLROnPlateau, every
step, every 20 steps from step 100 or one mean per epoch; task:
language_modelling, V = 568) and a residual tanh MLP without normalisation
regressing the range of a projectile with air drag from its launch
conditions with the log-cosh loss against measurements with gross errors
(AdamW with warm-up then cosine, NAdam with step decay, SGD with momentum
and one-cycle, every step or every 5 steps from step 30; task:
regression). Each family has 4 healthy runs and 6 fault runs. Their runs
are kept out of ``tests/data/corpus`` and their modules out of
``FAMILY_MODULES``. Labels come from how each run was built (make_corpus's
``Spec``), checked against a healthy twin
(``tests/diagnosis/heldout_twins.py --family r2plus1d_motion_clips
ngram_mlp_lm_words logcosh_projectile_range``), never from what the
diagnosis says; they are written as
``tests/data/heldout18/corpus_labels.json`` in the corpus's format, so
that::

    python benchmarks/diagnosis_accuracy.py --corpus tests/data/heldout18 \\
        --families r2plus1d_motion_clips ngram_mlp_lm_words logcosh_projectile_range

scores them held out by family.

Usage::

    python tests/diagnosis/make_heldout18.py [--out tests/data/heldout18] [--only NAME ...] [--missing]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELD_OUT18 = ("r2plus1d_motion_clips", "ngram_mlp_lm_words", "logcosh_projectile_range")
DEFAULT_OUT = ROOT / "tests" / "data" / "heldout18"


def heldout18_specs() -> list:
    """Every run of the three families (make_corpus.Spec), each with its family.

    Raises:
        ValueError: two runs share a name.
    """
    from tests.diagnosis import make_corpus

    return make_corpus.checked_specs(make_corpus.family_specs(HELD_OUT18))


def main(argv: list[str] | None = None) -> int:
    from tests.diagnosis import make_corpus

    return make_corpus.train_cli(argv, heldout18_specs, DEFAULT_OUT, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
