"""Train the fourth program hold-out (issue #12) into its own store, tests/data/heldout4, with its labels.

Three program families written on 2026-11-30 (from the rules of c366583 on)
by an engineer who changes no rule, and never shown to those who do, unlike
the 21 families of the tuning corpus and the earlier hold-outs in model kind,
data, loss, optimizer, schedule and logging cadence (``HELD_OUT4``; each
module's docstring says what it trains): message passing on graphs (60
classes, Lion, every step), a VAE (negative ELBO, no task kind, every 8
steps from step 120) and an encoder-decoder transformer trained with teacher
forcing (Noam schedule, 30-step window means). Their runs are kept out of
``tests/data/corpus`` and their modules out of ``FAMILY_MODULES``, so that
leave-one-family-out over the corpus, threshold tuning and the corpus tests
never see them. Every run's run.json carries the probe's parameter layout
(``env.model.shapes``, ``tied``, ``frozen``; make_corpus's ``probe_layout``).
Labels come from how each run was built (make_corpus's ``Spec``), checked
against a healthy twin (``tests/diagnosis/heldout_twins.py --family
gin_graph_motifs vae_glyphs seq2seq_transduction``), never from what the
diagnosis says; they are written as ``tests/data/heldout4/corpus_labels.json``
in the corpus's format, so that::

    python benchmarks/diagnosis_accuracy.py --corpus tests/data/heldout4 \\
        --families gin_graph_motifs vae_glyphs seq2seq_transduction

scores them held out by family. About 9 minutes of one CPU core for the 42 runs.

Usage::

    python tests/diagnosis/make_heldout4.py [--out tests/data/heldout4] [--only NAME ...] [--missing]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELD_OUT4 = ("gin_graph_motifs", "vae_glyphs", "seq2seq_transduction")
DEFAULT_OUT = ROOT / "tests" / "data" / "heldout4"


def heldout4_specs() -> list:
    """Every run of the three families (make_corpus.Spec), each with its family.

    Raises:
        ValueError: two runs share a name.
    """
    from tests.diagnosis import make_corpus

    return make_corpus.checked_specs(make_corpus.family_specs(HELD_OUT4))


def main(argv: list[str] | None = None) -> int:
    from tests.diagnosis import make_corpus

    return make_corpus.train_cli(argv, heldout4_specs, DEFAULT_OUT, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
