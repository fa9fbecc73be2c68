"""The corpus's program families beyond the original runs, one module per family.

Each module has ``FAMILY`` (its name) and ``specs()`` (its runs, healthy and
faulty, as :class:`tests.diagnosis.make_corpus.Spec`). A family is one
training program: data, model kind and loop style (optimizer, schedule and
logging vary between its runs).
"""

FAMILY_MODULES = ("lm_char", "lm_finetune", "regression", "many_classes", "cnn_digits", "long_runs", "resmlp",
                  "finetune_classifier", "sequence_transformer",
                  # Added after the rules were written and tuned, as a held-out test (see gru_waveforms.py).
                  "gru_waveforms", "denoiser_digits", "lm_word_grammar",
                  # A second hold-out, added after the rules of e5debb8 (see bn_mlp_tabular.py).
                  "bn_mlp_tabular", "vit_digits", "conv_tagger_tokens")
