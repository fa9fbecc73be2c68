"""Train the thirteenth program hold-out (issue #12) into its own store, tests/data/heldout13, with its labels.

Three program families written on 2026-12-01 by an engineer who changes no
rule and never reads them, unlike the families of the tuning corpus and of
the earlier hold-outs in model kind, data, loss, optimizer, schedule and
logging cadence (``HELD_OUT13``; each module's docstring says what it
trains): a 1-D ResNet classifying synthetic ECG beats into 5 rhythm classes
from a training set drawn 70/15/8/5/2 % (val balanced; cross-entropy, SGD
with momentum and Nesterov, step decay, every step), a small GPT with
rotary position embeddings on the characters of synthetic grammar text
(next-character cross-entropy, Sophia written in the module and AdamW,
warm-up then cosine to zero, HF-Trainer-style means every 10 steps from
step 10; task: language_modelling) and a sparse autoencoder on synthetic
activations made of sparse ground-truth features (MSE + L1 penalty, AdamW
and Adam, warm-up-stable-decay, every 5 steps; task: regression). Their
runs are kept out of ``tests/data/corpus`` and their modules out of
``FAMILY_MODULES``. Labels come from how each run was built (make_corpus's
``Spec``), checked against a healthy twin (``tests/diagnosis/heldout_twins.py
--family ecg_resnet1d_rhythms gpt_rope_sophia_chars
sae_synthetic_activations``), never from what the diagnosis says; they are
written as ``tests/data/heldout13/corpus_labels.json`` in the corpus's
format, so that::

    python benchmarks/diagnosis_accuracy.py --corpus tests/data/heldout13 \\
        --families ecg_resnet1d_rhythms gpt_rope_sophia_chars sae_synthetic_activations

scores them held out by family.

Usage::

    python tests/diagnosis/make_heldout13.py [--out tests/data/heldout13] [--only NAME ...] [--missing]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELD_OUT13 = ("ecg_resnet1d_rhythms", "gpt_rope_sophia_chars", "sae_synthetic_activations")
DEFAULT_OUT = ROOT / "tests" / "data" / "heldout13"


def heldout13_specs() -> list:
    """Every run of the three families (make_corpus.Spec), each with its family.

    Raises:
        ValueError: two runs share a name.
    """
    from tests.diagnosis import make_corpus

    return make_corpus.checked_specs(make_corpus.family_specs(HELD_OUT13))


def main(argv: list[str] | None = None) -> int:
    from tests.diagnosis import make_corpus

    return make_corpus.train_cli(argv, heldout13_specs, DEFAULT_OUT, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
