"""Train the fifth program hold-out (issue #12) into its own store, tests/data/heldout5, with its labels.

Three program families written on 2026-11-30 (from the rules of 115ef75 on)
by an engineer who changes no rule, and never shown to those who do, unlike
the 24 families of the tuning corpus and the earlier hold-outs in model kind,
data, loss, optimizer, schedule and logging cadence (``HELD_OUT5``; each
module's docstring says what it trains): a dilated residual 1-D ConvNet on
synthetic tone recordings (32 classes, LAMB written in the module, every
step), an RWKV-style recurrent language model on bracket text (Adan written
in the module, 20-step window means) and a siamese encoder trained with
InfoNCE on paired views (no task kind, chained warm-up + exponential and
multiplicative schedules, epoch means from step 101). Their runs are kept
out of ``tests/data/corpus`` and their modules out of ``FAMILY_MODULES``,
so that leave-one-family-out over the corpus, threshold tuning and the
corpus tests never see them. Every run's run.json carries the probe's
parameter layout (``env.model.shapes``, ``tied``, ``frozen``; make_corpus's
``probe_layout``). Labels come from how each run was built (make_corpus's
``Spec``), checked against a healthy twin (``tests/diagnosis/heldout_twins.py
--family tcn_tones ssm_lm_brackets contrastive_views``), never from what the
diagnosis says; they are written as ``tests/data/heldout5/corpus_labels.json``
in the corpus's format, so that::

    python benchmarks/diagnosis_accuracy.py --corpus tests/data/heldout5 \\
        --families tcn_tones ssm_lm_brackets contrastive_views

scores them held out by family. About 5 minutes of one CPU core for the 42 runs.

Usage::

    python tests/diagnosis/make_heldout5.py [--out tests/data/heldout5] [--only NAME ...] [--missing]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELD_OUT5 = ("tcn_tones", "ssm_lm_brackets", "contrastive_views")
DEFAULT_OUT = ROOT / "tests" / "data" / "heldout5"


def heldout5_specs() -> list:
    """Every run of the three families (make_corpus.Spec), each with its family.

    Raises:
        ValueError: two runs share a name.
    """
    from tests.diagnosis import make_corpus

    return make_corpus.checked_specs(make_corpus.family_specs(HELD_OUT5))


def main(argv: list[str] | None = None) -> int:
    from tests.diagnosis import make_corpus

    return make_corpus.train_cli(argv, heldout5_specs, DEFAULT_OUT, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
