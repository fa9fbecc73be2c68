"""Train the seventh program hold-out (issue #12) into its own store, tests/data/heldout7, with its labels.

Three program families written on 2026-11-30 (from the rules of 479b644 on)
by an engineer who changes no rule and never reads them, unlike the 24
families of the tuning corpus and the eighteen of the earlier hold-outs in
model kind, data, loss, optimizer, schedule and logging cadence
(``HELD_OUT7``; each module's docstring says what it trains): a
mixture-of-experts transformer LM (top-2 routing over 4 expert MLPs, a
load-balancing loss added to the logged loss) on text from four Markov
domains (AdaBelief written in the module, warm-up then inverse-time decay,
the step's values every 16 steps), a pre-trained MLP-Mixer fine-tuned from
shape kinds to kind-and-size classes (8 classes, layer-wise lr decay with one
param group per depth, NovoGrad written in the module, warm-up + linear
decay, 4-step window means) and a Deep & Cross Network tagging tabular
records with several of 10 tags (BCEWithLogitsLoss, no task kind recorded,
Yogi written in the module and Adadelta, CyclicLR exp_range, every step).
Their runs are kept out of ``tests/data/corpus`` and their modules out of
``FAMILY_MODULES``, so that leave-one-family-out over the corpus, threshold
tuning and the corpus tests never see them. Every run's run.json carries
the probe's parameter layout (``env.model.shapes``, ``tied``, ``frozen``;
make_corpus's ``probe_layout``). Labels come from how each run was built
(make_corpus's ``Spec``), checked against a healthy twin
(``tests/diagnosis/heldout_twins.py --family moe_lm_domains
mixer_finetune_shapes dcn_multilabel_tags``), never from what the diagnosis
says; they are written as ``tests/data/heldout7/corpus_labels.json`` in the
corpus's format, so that::

    python benchmarks/diagnosis_accuracy.py --corpus tests/data/heldout7 \\
        --families moe_lm_domains mixer_finetune_shapes dcn_multilabel_tags

scores them held out by family. About 7 minutes of one CPU core for the 38 runs (410 s measured).

Usage::

    python tests/diagnosis/make_heldout7.py [--out tests/data/heldout7] [--only NAME ...] [--missing]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELD_OUT7 = ("moe_lm_domains", "mixer_finetune_shapes", "dcn_multilabel_tags")
DEFAULT_OUT = ROOT / "tests" / "data" / "heldout7"


def heldout7_specs() -> list:
    """Every run of the three families (make_corpus.Spec), each with its family.

    Raises:
        ValueError: two runs share a name.
    """
    from tests.diagnosis import make_corpus

    return make_corpus.checked_specs(make_corpus.family_specs(HELD_OUT7))


def main(argv: list[str] | None = None) -> int:
    from tests.diagnosis import make_corpus

    return make_corpus.train_cli(argv, heldout7_specs, DEFAULT_OUT, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
