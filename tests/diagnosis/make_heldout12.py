"""Train the twelfth program hold-out (issue #12) into its own store, tests/data/heldout12, with its labels.

Three program families written on 2026-11-30 by an engineer who changes no
rule and never reads them, unlike the families of the tuning corpus and of
the earlier hold-outs in model kind, data, loss, optimizer, schedule and
logging cadence (``HELD_OUT12``; each module's docstring says what it
trains): an N-BEATS-style stack forecasting 3 quantiles of synthetic
seasonal series with the pinball loss (no task kind recorded, Lion written
in the module, RAdam and SGD with Nesterov momentum, cosine with warm
restarts, 10-step window means), a convolution + self-attention keyword
spotter on synthetic spectrograms of 12 keywords (cross-entropy, NAdam,
AdamW and Adam, warm-up then linear decay, every 6 steps, two evaluations
an epoch) and a FiLM-conditioned MLP regressing damped-oscillator responses
with a Huber loss (task: regression, Adan written in the module and
Adagrad, ReduceLROnPlateau, per-epoch means from epoch 3). Their runs are
kept out of ``tests/data/corpus`` and their modules out of
``FAMILY_MODULES``. Labels come from how each run was built (make_corpus's
``Spec``), checked against a healthy twin (``tests/diagnosis/heldout_twins.py
--family nbeats_quantile_forecast keyword_spectrogram_convformer
film_oscillator_response``), never from what the diagnosis says; they are
written as ``tests/data/heldout12/corpus_labels.json`` in the corpus's
format, so that::

    python benchmarks/diagnosis_accuracy.py --corpus tests/data/heldout12 \\
        --families nbeats_quantile_forecast keyword_spectrogram_convformer film_oscillator_response

scores them held out by family.

Usage::

    python tests/diagnosis/make_heldout12.py [--out tests/data/heldout12] [--only NAME ...] [--missing]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELD_OUT12 = ("nbeats_quantile_forecast", "keyword_spectrogram_convformer", "film_oscillator_response")
DEFAULT_OUT = ROOT / "tests" / "data" / "heldout12"


def heldout12_specs() -> list:
    """Every run of the three families (make_corpus.Spec), each with its family.

    Raises:
        ValueError: two runs share a name.
    """
    from tests.diagnosis import make_corpus

    return make_corpus.checked_specs(make_corpus.family_specs(HELD_OUT12))


def main(argv: list[str] | None = None) -> int:
    from tests.diagnosis import make_corpus

    return make_corpus.train_cli(argv, heldout12_specs, DEFAULT_OUT, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
