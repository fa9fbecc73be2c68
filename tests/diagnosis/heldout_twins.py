"""Check that each held-out corpus fault really harms its run: train it beside its healthy twin and compare.

The families added after the rules were written (``HELD_OUT_FAMILIES``)
label their fault runs from how they were built. A label is only fair if
the fault shows in the numbers, so each fault run has a twin (the same
program with the fault removed, the module's ``twins()``); this script
trains both and prints, from the recorded scalars alone (no diagnosis):
the final and best val loss of each, their ratio, the first non-finite
training loss, the training loss's peak after its first record, and the
gradient norm's peak over its median; for a classifier also the final val
accuracy against the majority class's share and the lowest per-class
recall (from the last confusion counts). The runs' descriptions quote the
criterion each label was checked with. ``SECOND_HOLD_OUT`` are the families
of the second hold-out, added after the rules of e5debb8; ``THIRD_HOLD_OUT``
those of the third (stored in tests/data/heldout3, not in the corpus; see
``tests/diagnosis/make_heldout.py heldout3``), written from the rules of 31be2a9 on and
checked with ``--family unet_signals lstm_lm_hmm set_transformer_points``;
``FOURTH_HOLD_OUT`` those of the fourth (tests/data/heldout4, see
``tests/diagnosis/make_heldout.py heldout4``), written from the rules of c366583 on
and checked with ``--family gin_graph_motifs vae_glyphs seq2seq_transduction``;
``FIFTH_HOLD_OUT`` those of the fifth (tests/data/heldout5, see
``tests/diagnosis/make_heldout.py heldout5``), written from the rules of 115ef75 on
and checked with ``--family tcn_tones ssm_lm_brackets contrastive_views``;
``SIXTH_HOLD_OUT`` those of the sixth (tests/data/heldout6, see
``tests/diagnosis/make_heldout.py heldout6``), written from the rules of 6ed0da9 on
and checked with ``--family conv2d_textures mlm_records forecast_gnll``;
``SEVENTH_HOLD_OUT`` those of the seventh (tests/data/heldout7, see
``tests/diagnosis/make_heldout.py heldout7``), written from the rules of 479b644 on
and checked with ``--family moe_lm_domains mixer_finetune_shapes
dcn_multilabel_tags``; ``EIGHTH_HOLD_OUT`` those of the eighth
(tests/data/heldout8, see ``tests/diagnosis/make_heldout.py heldout8``), written
from the rules of 466706a on and checked with ``--family
seg_convnet_regions kd_student_mlp ftt_focal_tabular``; ``NINTH_HOLD_OUT``
those of the ninth (tests/data/heldout9, see
``tests/diagnosis/make_heldout.py heldout9``), checked with ``--family
gru_next_event ae_conv1d_sensors poisson_counts_transformer``;
``TENTH_HOLD_OUT`` those of the tenth (tests/data/heldout10, see
``tests/diagnosis/make_heldout.py heldout10``), checked with ``--family
realnvp_flow_mixture perceiver_point_sets bpr_matrix_factorisation``;
``TWELFTH_HOLD_OUT`` those of the twelfth (tests/data/heldout12, see
``tests/diagnosis/make_heldout.py heldout12``), checked with ``--family
nbeats_quantile_forecast keyword_spectrogram_convformer
film_oscillator_response``; ``THIRTEENTH_HOLD_OUT`` those of the thirteenth
(tests/data/heldout13, see ``tests/diagnosis/make_heldout.py heldout13``), checked
with ``--family ecg_resnet1d_rhythms gpt_rope_sophia_chars
sae_synthetic_activations``; ``EIGHTEENTH_HOLD_OUT`` those of the eighteenth
(tests/data/heldout18, see ``tests/diagnosis/make_heldout.py heldout18``), checked
with ``--family r2plus1d_motion_clips ngram_mlp_lm_words
logcosh_projectile_range``; ``NINETEENTH_HOLD_OUT`` those of the nineteenth
(tests/data/heldout19, see ``tests/diagnosis/make_heldout.py heldout19``), checked
with ``--family graphsage_sensor_heat charcnn_product_titles
arith_decoder_lm``.

Usage::

    python tests/diagnosis/heldout_twins.py [--family gru_waveforms ...] [--store DIR]

``--store DIR`` trains into DIR and keeps the runs there (runs already in
DIR are reused); without it a temporary folder is used. A few minutes of
CPU per family (HELD_OUT_FAMILIES and SECOND_HOLD_OUT by default).
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELD_OUT_FAMILIES = ("gru_waveforms", "denoiser_digits", "lm_word_grammar")
SECOND_HOLD_OUT = ("bn_mlp_tabular", "vit_digits", "conv_tagger_tokens")
THIRD_HOLD_OUT = ("unet_signals", "lstm_lm_hmm", "set_transformer_points")
FOURTH_HOLD_OUT = ("gin_graph_motifs", "vae_glyphs", "seq2seq_transduction")
FIFTH_HOLD_OUT = ("tcn_tones", "ssm_lm_brackets", "contrastive_views")
SIXTH_HOLD_OUT = ("conv2d_textures", "mlm_records", "forecast_gnll")
SEVENTH_HOLD_OUT = ("moe_lm_domains", "mixer_finetune_shapes", "dcn_multilabel_tags")
EIGHTH_HOLD_OUT = ("seg_convnet_regions", "kd_student_mlp", "ftt_focal_tabular")
NINTH_HOLD_OUT = ("gru_next_event", "ae_conv1d_sensors", "poisson_counts_transformer")
TENTH_HOLD_OUT = ("realnvp_flow_mixture", "perceiver_point_sets", "bpr_matrix_factorisation")
TWELFTH_HOLD_OUT = ("nbeats_quantile_forecast", "keyword_spectrogram_convformer", "film_oscillator_response")
THIRTEENTH_HOLD_OUT = ("ecg_resnet1d_rhythms", "gpt_rope_sophia_chars", "sae_synthetic_activations")
EIGHTEENTH_HOLD_OUT = ("r2plus1d_motion_clips", "ngram_mlp_lm_words", "logcosh_projectile_range")
NINETEENTH_HOLD_OUT = ("graphsage_sensor_heat", "charcnn_product_titles", "arith_decoder_lm")


def curves(store: Path, name: str) -> dict[str, pd.Series]:
    """The run's global training loss, val loss and gradient norm, each indexed by step (optimizer steps)."""
    frame = pd.concat([pd.read_parquet(path) for path in sorted((store / name / "scalars").glob("*.parquet"))])
    frame = frame[frame["layer"].isna()]

    def series(split: str, metric: str) -> pd.Series:
        rows = frame[(frame["split"] == split) & (frame["name"] == metric)].sort_values("step")
        return pd.Series(rows["value"].to_numpy(), index=rows["step"].to_numpy())

    return {"train": series("train", "loss"), "val": series("val", "loss"), "grad_norm": series("train", "grad_norm")}


def classes(store: Path, name: str) -> tuple[float, float, float]:
    """The last val confusion counts' accuracy, majority-class share and lowest per-class recall (NaN: none)."""
    paths = sorted((store / name / "confusion").glob("*.parquet"))
    if not paths:
        return math.nan, math.nan, math.nan
    frame = pd.concat([pd.read_parquet(path) for path in paths])
    frame = frame[(frame["split"] == "val") & (frame["step"] == frame["step"].max())]
    support = frame.groupby("true_class")["count"].sum()
    hits = frame[frame["true_class"] == frame["pred_class"]].groupby("true_class")["count"].sum()
    hits = hits.reindex(support.index, fill_value=0)
    return (float(hits.sum() / support.sum()), float(support.max() / support.sum()),
            float((hits / support).min()))


def summary(store: Path, name: str) -> dict[str, float | int | None]:
    """Numbers a fault must move: final/best val loss, first non-finite loss, loss peak, grad-norm peak/median."""
    run = curves(store, name)
    train, val, grad = run["train"], run["val"], run["grad_norm"]
    finite_val = val[np.isfinite(val)]
    bad = train.index[~np.isfinite(train.to_numpy())]
    finite_grad = grad[np.isfinite(grad)]
    accuracy, majority, worst_recall = classes(store, name)
    return {
        "val_accuracy_final": accuracy, "majority_share": majority, "worst_class_recall": worst_recall,
        "val_final": float(val.iloc[-1]), "val_best": float(finite_val.min()) if len(finite_val) else math.nan,
        "val_best_step": int(finite_val.idxmin()) if len(finite_val) else None,
        "train_first": float(train.iloc[0]), "train_final": float(train.iloc[-1]),
        "train_peak_after_first": float(train.iloc[1:].max()) if len(train) > 1 else math.nan,
        "train_peak_step": int(train.iloc[1:].idxmax()) if len(train) > 1 and np.isfinite(train.iloc[1:]).any() else None,
        "first_nonfinite_step": int(bad[0]) if len(bad) else None,
        # A loss that reaches exactly 0 (a triplet hinge) leaves a median gradient norm of 0: no ratio.
        "grad_peak_over_median": (float(finite_grad.max() / finite_grad.median())
                                  if len(finite_grad) and finite_grad.median() > 0 else math.nan),
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    from tests.diagnosis import make_corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", nargs="*", default=list(HELD_OUT_FAMILIES + SECOND_HOLD_OUT))
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="only these fault runs (and their twins)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as temporary:
        store = args.store or Path(temporary)
        store.mkdir(parents=True, exist_ok=True)
        for family in args.family:
            module = importlib.import_module(f"tests.diagnosis.corpus.{family}")
            faults = {spec.name: spec for spec in module.specs()}
            for fault, twin in module.twins().items():
                if args.only and fault not in args.only:
                    continue
                for spec in (faults[fault], twin):
                    if not (store / spec.name / "run.json").is_file():
                        make_corpus.train(spec, store)
                harmed, healthy = summary(store, fault), summary(store, twin.name)
                ratio = harmed["val_final"] / healthy["val_final"] if healthy["val_final"] else math.nan
                print(f"{fault}  (twin {twin.name})")
                print(f"  final val loss {harmed['val_final']:.4g} vs twin {healthy['val_final']:.4g}: {ratio:.2f}x; "
                      f"best val {harmed['val_best']:.4g} at step {harmed['val_best_step']} vs twin "
                      f"{healthy['val_best']:.4g}")
                print(f"  train loss first {harmed['train_first']:.4g}, peak after it {harmed['train_peak_after_first']:.4g}"
                      f" at step {harmed['train_peak_step']}, final {harmed['train_final']:.4g} (twin final "
                      f"{healthy['train_final']:.4g}); first non-finite at {harmed['first_nonfinite_step']}; grad norm "
                      f"peak/median {harmed['grad_peak_over_median']:.3g} (twin {healthy['grad_peak_over_median']:.3g})",
                      flush=True)
                if not math.isnan(harmed["val_accuracy_final"]):
                    print(f"  val accuracy {harmed['val_accuracy_final']:.3f} (majority class {harmed['majority_share']:.3f}; "
                          f"twin {healthy['val_accuracy_final']:.3f}); worst class recall "
                          f"{harmed['worst_class_recall']:.3f} (twin {healthy['worst_class_recall']:.3f})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
