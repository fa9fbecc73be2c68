"""Train a program hold-out (tests/data/heldout3 ... heldout19) into its own store, with its labels.

Each hold-out is a set of program families (``HOLD_OUTS``) written by an
engineer who changes no rule and never read them, unlike the families of the
tuning corpus and of the earlier hold-outs in model kind, data, loss,
optimizer, schedule and logging cadence; each family module's docstring
(tests/diagnosis/corpus/<family>.py) says what it trains, how each fault run
was built and the criterion its label was checked with against a healthy
twin (``tests/diagnosis/heldout_twins.py --family ...``), never what the
diagnosis says. Their runs are kept out of ``tests/data/corpus`` and their
modules out of ``FAMILY_MODULES``. Labels are written as
``tests/data/<set>/corpus_labels.json`` in the corpus's format, so that::

    python benchmarks/diagnosis_accuracy.py --corpus tests/data/heldout17 \\
        --families topic_transformer_sentences lstm_names_lm shading_depth_fcn

scores a set held out by family. heldout11 and heldout14 are healthy only
(five healthy runs a family), for the false-alarm rate; the others have
healthy runs and fault runs in every family. docs/accuracy.md gives each
set's scores, measured before anything was chosen on it.

Usage::

    python tests/diagnosis/make_heldout.py SET [--out tests/data/SET] [--only NAME ...] [--family F ...] [--missing]
    python tests/diagnosis/make_heldout.py --list
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class HoldOut:
    """One program hold-out: its families (tests/diagnosis/corpus module names), when they were written and
    what they are, in a line."""

    families: tuple[str, ...]
    written: str
    what: str


HOLD_OUTS = {
    "heldout3": HoldOut(("unet_signals", "lstm_lm_hmm", "set_transformer_points"), "2026-11-30, rules of 31be2a9",
                        "a 1-D U-Net denoiser, an LSTM LM on HMM text, a Set Transformer on point sets"),
    "heldout4": HoldOut(("gin_graph_motifs", "vae_glyphs", "seq2seq_transduction"), "2026-11-30, rules of c366583",
                        "a GIN on graph motifs (60 classes), a VAE on glyphs, a seq2seq transformer"),
    "heldout5": HoldOut(("tcn_tones", "ssm_lm_brackets", "contrastive_views"), "2026-11-30, rules of 115ef75",
                        "a dilated TCN on tones (32 classes), an SSM LM on brackets, a contrastive siamese MLP"),
    "heldout6": HoldOut(("conv2d_textures", "mlm_records", "forecast_gnll"), "2026-11-30, rules of 6ed0da9",
                        "a ConvNet on textures, a masked LM on records, a Gaussian-NLL forecaster"),
    "heldout7": HoldOut(("moe_lm_domains", "mixer_finetune_shapes", "dcn_multilabel_tags"),
                        "2026-11-30, rules of 479b644",
                        "a mixture-of-experts LM, a pre-trained MLP-Mixer fine-tuned, a DCN-v2 multi-label tagger"),
    "heldout8": HoldOut(("seg_convnet_regions", "kd_student_mlp", "ftt_focal_tabular"), "2026-11-30, rules of 466706a",
                        "a 2-D U-Net segmenter, a distilled MLP student, an FT-Transformer with focal loss"),
    "heldout9": HoldOut(("gru_next_event", "ae_conv1d_sensors", "poisson_counts_transformer"), "2026-11-30",
                        "a GRU on event logs, a 1-D conv autoencoder, a Poisson count transformer"),
    "heldout10": HoldOut(("realnvp_flow_mixture", "perceiver_point_sets", "bpr_matrix_factorisation"), "2026-11-30",
                         "a RealNVP flow, a Perceiver on point sets (100 classes), BPR matrix factorisation"),
    "heldout11": HoldOut(("softmax_lbfgs_tabular", "pixelcnn_digits", "ctc_spike_trains", "gcn_sbm_nodes",
                          "skipgram_negative_sampling", "ordinal_cumulative_link", "multitask_two_heads",
                          "diffusion_2d_points", "mdn_inverse_sine", "transformer_sorting"), "2026-11-30",
                         "healthy only: ten families, five healthy runs each"),
    "heldout12": HoldOut(("nbeats_quantile_forecast", "keyword_spectrogram_convformer", "film_oscillator_response"),
                         "2026-11-30", "an N-BEATS quantile forecaster, a keyword-spotting convformer, a FiLM MLP"),
    "heldout13": HoldOut(("ecg_resnet1d_rhythms", "gpt_rope_sophia_chars", "sae_synthetic_activations"), "2026-12-01",
                         "a 1-D ResNet on ECG rhythms, a RoPE GPT under Sophia, a sparse autoencoder"),
    "heldout14": HoldOut(("tabresnet_mixup_sgdr", "gat_molecule_property", "lstm_attention_dates", "pointnet_shapes3d",
                          "svm_hinge_bow", "ncf_implicit_bce", "clip_dual_encoder", "deepsurv_cox"), "2026-12-01",
                         "healthy only: eight families, five healthy runs each"),
    "heldout15": HoldOut(("triplet_margin_identities", "gn_resnet_noisy_shapes", "gated_conv_lm_words",
                          "masked_patch_autoencoder"), "2026-12-01",
                         "a triplet-margin siamese MLP, a GroupNorm ResNet on noisy shapes, a gated-conv word LM, "
                         "a masked-patch autoencoder"),
    "heldout16": HoldOut(("mos_tabular_200", "bigru_char_tagger", "densenet_blob_counting", "gae_link_prediction"),
                         "2026-12-01", "a mixture of softmaxes (200 classes), a character bi-GRU tagger, a DenseNet "
                                       "counting blobs, a graph autoencoder"),
    "heldout17": HoldOut(("topic_transformer_sentences", "lstm_names_lm", "shading_depth_fcn"), "2026-12-01",
                         "a post-LN topic transformer, a character LSTM LM over names, a dilated FCN regressing "
                         "depth from shading"),
    "heldout18": HoldOut(("r2plus1d_motion_clips", "ngram_mlp_lm_words", "logcosh_projectile_range"), "2026-12-01",
                         "an R(2+1)D video classifier, a Bengio n-gram MLP LM (V = 568), a log-cosh residual MLP "
                         "regressing projectile range"),
    "heldout19": HoldOut(("graphsage_sensor_heat", "charcnn_product_titles", "arith_decoder_lm"), "2026-12-01",
                         "a GraphSAGE regressing node heat on unseen meshes, a character CNN over product titles "
                         "(150 classes), a decoder-only transformer over arithmetic facts (V = 15)"),
}


def specs_of(name: str) -> list:
    """Every run of hold-out ``name``'s families (make_corpus.Spec), each with its family.

    Raises:
        KeyError: no hold-out of that name.
        ValueError: two runs share a name.
    """
    from tests.diagnosis import make_corpus

    return make_corpus.checked_specs(make_corpus.family_specs(HOLD_OUTS[name].families))


def main(argv: list[str] | None = None) -> int:
    from tests.diagnosis import make_corpus

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--list"]:
        for name, hold_out in HOLD_OUTS.items():
            print(f"{name:<10} {hold_out.written}: {hold_out.what} ({', '.join(hold_out.families)})")
        return 0
    if not argv or argv[0] not in HOLD_OUTS:
        print(f"usage: make_heldout.py SET [--out DIR] [--only NAME ...] [--family F ...] [--missing]; "
              f"SET is one of {', '.join(HOLD_OUTS)} (--list says what each holds)", file=sys.stderr)
        return 2
    name = argv[0]
    return make_corpus.train_cli(argv[1:], lambda: specs_of(name), ROOT / "tests" / "data" / name, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
