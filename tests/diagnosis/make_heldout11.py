"""Train the eleventh program hold-out (issue #12) into its own store, tests/data/heldout11, with its labels.

A healthy-only set measuring the false-alarm rate on training programs
nobody on the team wrote: ten program families written on 2026-11-30 by
an engineer who changes no rule and never read them, unlike every earlier
family in model kind, data, loss and loop (``HELD_OUT11``; each module's
docstring says what it trains and why its settings are the working ones):
softmax regression by full-batch L-BFGS and Adagrad, a PixelCNN on
binarised digits (bits per pixel), a conv-BiLSTM CTC recogniser of spike
trains, a GCN classifying the nodes of a stochastic-block-model graph, a
word2vec skip-gram with negative sampling, an ordinal regression with a
cumulative-link loss, a two-head multi-task MLP (cross-entropy + MSE), a
DDPM ε-prediction model of 2-D points, a mixture density network (a
negative log-likelihood that goes below 0) and a pre-LN transformer
sorting integer sequences. Every run is healthy (five per
family: a standard lr checked against 3x up and down, a schedule suited to
its length, trained to a sensible end); no fault was injected, so the
labels expect nothing and the families have no twins. The runs are kept
out of ``tests/data/corpus`` and the modules out of ``FAMILY_MODULES``;
the labels are written as ``tests/data/heldout11/corpus_labels.json`` in
the corpus's format, so that::

    python benchmarks/diagnosis_accuracy.py --corpus tests/data/heldout11 --families ...

counts the warnings and criticals on them (false alarms).

Usage::

    python tests/diagnosis/make_heldout11.py [--out tests/data/heldout11] [--only NAME ...] [--missing]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELD_OUT11 = ("softmax_lbfgs_tabular", "pixelcnn_digits", "ctc_spike_trains", "gcn_sbm_nodes",
              "skipgram_negative_sampling", "ordinal_cumulative_link", "multitask_two_heads", "diffusion_2d_points",
              "mdn_inverse_sine", "transformer_sorting")
DEFAULT_OUT = ROOT / "tests" / "data" / "heldout11"


def heldout11_specs() -> list:
    """Every run of the ten families (make_corpus.Spec), each with its family.

    Raises:
        ValueError: two runs share a name.
    """
    from tests.diagnosis import make_corpus

    return make_corpus.checked_specs(make_corpus.family_specs(HELD_OUT11))


def main(argv: list[str] | None = None) -> int:
    from tests.diagnosis import make_corpus

    return make_corpus.train_cli(argv, heldout11_specs, DEFAULT_OUT, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
