"""Hand-made runs for the setup rules that curves cannot show (what the probe sees: events, env).

Each case is a small healthy-looking loss curve plus the probe's view of a
setup mistake; the benchmark scores them next to the corpus.
"""

from __future__ import annotations

import numpy as np

import functools

from tests.diagnosis.external import Case

SetupCase = functools.partial(Case, origin="setup")
from tests.diagnosis.factories import make_run, noisy_decay, scalar_rows, with_rows

ADAMW_ONE_GROUP = {"type": "AdamW", "param_groups": [{"lr": 1e-3, "weight_decay": 0.01, "betas": [0.9, 0.999],
                                                     "eps": 1e-8}]}
ADAMW_TWO_GROUPS = {"type": "AdamW", "param_groups": [
    {"lr": 1e-3, "weight_decay": 0.01, "betas": [0.9, 0.98], "eps": 1e-6},
    {"lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.98], "eps": 1e-6}]}


def _base(n: int = 400, **kwargs):
    steps = np.arange(5, n + 1, 5)
    frames = [scalar_rows("lr", np.minimum(np.arange(1, n + 1) / 40, 1) * 1e-3, layer="group0")]
    for layer in ("fc1.weight", "fc1.bias", "norm.weight", "fc2.weight"):
        frames.append(scalar_rows("grad_norm", np.full(len(steps), 0.2), steps=steps, layer=layer))
    return make_run(loss=noisy_decay(n, seed=3), frames=frames, **kwargs)


def setup_cases() -> list[Case]:
    lint = {"rule": "weight_decay_on_norm_and_bias", "message": "weight decay 0.01 on 2 bias/norm tensors",
            "params": ["fc1.bias", "norm.weight"]}
    skipped = np.zeros(400)
    skipped[:4] = 1
    skipped[200:230] = 1
    amp = _base(env={"amp": {"dtype": "float16", "scaler": True}, "optimizer": ADAMW_TWO_GROUPS})
    with_rows(amp, scalar_rows("amp_skipped", skipped))
    amp.name = amp.run_id = "amp-skipping-2%"
    return [
        SetupCase(_base(name="forgot-model-train", env={"optimizer": ADAMW_TWO_GROUPS},
                           events=[("eval_mode_during_training", "", 101), ("train_mode_restored", "", 201)]),
                     {"eval_mode_during_training": [101, 200]}),
        SetupCase(_base(name="forgot-model-eval", env={"optimizer": ADAMW_TWO_GROUPS},
                           events=[("train_mode_during_eval", "", s) for s in (100, 200, 300, 400)]),
                     {"train_mode_during_eval": [100, 400]}),
        SetupCase(_base(name="decay-lint", env={"optimizer": ADAMW_TWO_GROUPS},
                           events=[("config_lint", lint, None)]), {"weight_decay_on_norm_and_bias": None}),
        SetupCase(_base(name="decay-one-group", env={"optimizer": ADAMW_ONE_GROUP}),
                     {"weight_decay_on_norm_and_bias": None}),
        SetupCase(_base(name="transformer-adam-defaults",
                           env={"optimizer": ADAMW_ONE_GROUP, "model": {"has_attention": True}}),
                     {"adam_hyperparameters": None, "weight_decay_on_norm_and_bias": None}),
        SetupCase(_base(name="fp16-eps-1e-8", env={"optimizer": {**ADAMW_TWO_GROUPS, "param_groups": [
            {**g, "eps": 1e-8} for g in ADAMW_TWO_GROUPS["param_groups"]]}, "amp": {"dtype": "float16", "scaler": True}}),
                     {"adam_hyperparameters": None}),
        SetupCase(_base(name="fp16-without-scaler", env={"optimizer": ADAMW_TWO_GROUPS,
                                                             "amp": {"dtype": "float16", "scaler": False}}),
                     {"amp_skipped_steps": None}),
        SetupCase(amp, {"amp_skipped_steps": [201, 230]}),
        SetupCase(_base(name="setup-done-right", env={"optimizer": ADAMW_TWO_GROUPS,
                                                          "model": {"has_attention": True},
                                                          "amp": {"dtype": "bfloat16", "scaler": False}}),
                     {}, healthy=True),
    ]
