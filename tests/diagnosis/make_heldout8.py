"""Train the eighth program hold-out (issue #12) into its own store, tests/data/heldout8, with its labels.

Three program families written on 2026-11-30 (from the rules of 466706a on)
by an engineer who changes no rule and never reads them, unlike the 24
families of the tuning corpus and the 21 of the earlier hold-outs in model
kind, data, loss, optimizer, schedule and logging cadence (``HELD_OUT8``;
each module's docstring says what it trains): a small 2-D U-Net segmenting
synthetic images into 4 region kinds (per-pixel cross-entropy, MADGRAD
written in the module and SGD Nesterov, exponential warm-up then halving
every 4 epochs, 7-step window means), a knowledge-distillation MLP student
learning 10 classes from a teacher trained in the module (KL at
temperature 3 plus cross-entropy, no task kind recorded, QHAdam written in
the module and SGD momentum, per-epoch warm-up then cosine to 20 %, every
step from step 40) and an FT-Transformer classifying tabular records into 5
classes with a focal loss (no task kind recorded, AdaMod written in the
module and AdamW, warm-up then cosine with hard restarts, every 6 steps
from step 24, val twice per epoch). Their runs are kept out of
``tests/data/corpus`` and their modules out of ``FAMILY_MODULES``, so that
leave-one-family-out over the corpus, threshold tuning and the corpus tests
never see them. Every run's run.json carries the probe's parameter layout
(``env.model.shapes``, ``tied``, ``frozen``; make_corpus's
``probe_layout``). Labels come from how each run was built (make_corpus's
``Spec``), checked against a healthy twin
(``tests/diagnosis/heldout_twins.py --family seg_convnet_regions
kd_student_mlp ftt_focal_tabular``), never from what the diagnosis says;
they are written as ``tests/data/heldout8/corpus_labels.json`` in the
corpus's format, so that::

    python benchmarks/diagnosis_accuracy.py --corpus tests/data/heldout8 \\
        --families seg_convnet_regions kd_student_mlp ftt_focal_tabular

scores them held out by family.

Usage::

    python tests/diagnosis/make_heldout8.py [--out tests/data/heldout8] [--only NAME ...] [--missing]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELD_OUT8 = ("seg_convnet_regions", "kd_student_mlp", "ftt_focal_tabular")
DEFAULT_OUT = ROOT / "tests" / "data" / "heldout8"


def heldout8_specs() -> list:
    """Every run of the three families (make_corpus.Spec), each with its family.

    Raises:
        ValueError: two runs share a name.
    """
    from tests.diagnosis import make_corpus

    return make_corpus.checked_specs(make_corpus.family_specs(HELD_OUT8))


def main(argv: list[str] | None = None) -> int:
    from tests.diagnosis import make_corpus

    return make_corpus.train_cli(argv, heldout8_specs, DEFAULT_OUT, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
