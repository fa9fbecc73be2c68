"""A convolution + self-attention keyword spotter classifying synthetic log-mel-like spectrograms into 12 keywords, NAdam, warm-up then linear decay, every 6 steps, two evaluations an epoch (twelfth hold-out).

Spectrograms made here: 8 phoneme kinds, each a fixed spectrum of 16
frequency bins (two Gaussian formants); each of 12 keywords is a fixed
sequence of 3 phonemes (some keywords share phonemes in another order, so
the order matters); the 8 formant pairs are fixed. A sample lays its keyword's phonemes one after another
over 24 frames, each lasting 5-8 frames, from a random onset of 0-3 frames,
with a per-phoneme loudness of 0.7-1.3 and Gaussian background noise
(σ 0.9). 150 training and 50 validation samples a keyword (1,800 and 600),
batches of 32 (57 steps per epoch). The model: two 2-D convolutions
(1→16→16 channels, 3×3, ReLU, frequency pooled by 2 after each), each frame's
features projected to 48, a learned position embedding, 2 pre-LN transformer
encoder layers (4 heads, feed-forward 96), mean pooling over frames, a
LayerNorm and a linear head to 12 logits; cross-entropy. NAdam, AdamW and Adam.
The schedule (per step, as a multiplier): linear warm-up over the first 6 %
of the steps, then linear decay to 0 (HF's linear schedule). Logged every 6
steps: the step's loss, training accuracy, lr and gradient norm; per-layer
statistics every 30 steps; val loss, accuracy and confusion counts twice an
epoch. Task: classification, C = 12.

Twelfth hold-out (issue #12); see ``nbeats_quantile_forecast.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "keyword_spectrogram_convformer"
LOGGING = Logging(every=6, layer_every=30)
KEYWORDS, PHONEMES, BINS, FRAMES = 12, 8, 16, 24
# Each keyword's phoneme sequence (rows); 0-3, 1-2, 4-5 and 8-9 share phonemes in another order.
SEQUENCES = np.array([[0, 1, 2], [2, 1, 0], [3, 4, 5], [5, 3, 4], [6, 7, 0], [1, 6, 3],
                      [7, 2, 5], [4, 0, 6], [2, 5, 7], [7, 5, 2], [3, 3, 1], [6, 6, 4]])


@functools.lru_cache(maxsize=None)
def spectrograms(per_class_train: int = 150, per_class_val: int = 50, rare: tuple[int, ...] = (),
                 rare_keep: float = 1.0, rare_keep_val: float | None = None, confusable: bool = False, shuffled: bool = False, seed: int = 122) -> Split:
    rng = np.random.default_rng(seed)
    bins = np.arange(BINS)
    centres = np.array([[1.5, 8.0], [3.5, 11.0], [5.5, 13.5], [2.5, 6.0], [8.0, 14.0], [4.5, 9.5], [10.5, 14.5],
                        [1.0, 12.0]])
    spectra = sum(np.exp(-0.5 * ((bins[None, :] - centres[:, [k]]) / 1.3) ** 2) for k in range(2))
    sequences = SEQUENCES.copy()
    if confusable:  # keyword 11 recorded by a vendor whose lexicon maps it onto keyword 10's last two phonemes
        sequences[11] = [3, 3, 1]

    def draw(per_class: int, keep: float) -> tuple[torch.Tensor, torch.Tensor]:
        counts = np.array([max(2, int(round(per_class * keep))) if k in rare else per_class
                           for k in range(KEYWORDS)])
        y = np.repeat(np.arange(KEYWORDS), counts)
        x = rng.normal(0, 0.9, size=(len(y), BINS, FRAMES))
        for index, label in enumerate(y):
            if confusable and label == 11 and rng.random() < 0.5:
                phonemes = [6, 3, 1]
            else:
                phonemes = sequences[label]
            frame = int(rng.integers(0, 4))
            for phoneme in phonemes:
                length = int(rng.integers(5, 9))
                x[index, :, frame:frame + length] += rng.uniform(0.7, 1.3) * spectra[phoneme][:, None]
                frame += length
        order = rng.permutation(len(y))
        return torch.tensor(x[order, None], dtype=torch.float32), torch.tensor(y[order])

    x_train, y_train = draw(per_class_train, rare_keep)
    x_val, y_val = draw(per_class_val, rare_keep if rare_keep_val is None else rare_keep_val)
    if shuffled:  # labels joined to the wrong clips in training (val intact)
        y_train = y_train[torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed))]
    return Split(x_train, y_train, x_val, y_val, KEYWORDS)


class Convformer(nn.Module):
    def __init__(self, width: int = 48, layers: int = 2, norm_first: bool = True, channels: int = 16):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d((2, 1)),
                                  nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d((2, 1)))
        self.project = nn.Linear(channels * BINS // 4, width)
        self.position = nn.Parameter(torch.randn(FRAMES, width) * 0.02)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True, norm_first=norm_first),
            layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, KEYWORDS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x)  # (B, C, BINS/4, FRAMES)
        frames = features.flatten(1, 2).transpose(1, 2)  # (B, FRAMES, C·BINS/4)
        hidden = self.encoder(self.project(frames) + self.position)
        return self.head(self.norm(hidden.mean(1)))


def convformer(**kwargs):
    return lambda data: Convformer(**kwargs)


def nadam(lr: float, **kwargs):
    return lambda model: torch.optim.NAdam(model.parameters(), lr=lr, **kwargs)


def adam(lr: float):
    return lambda model: torch.optim.Adam(model.parameters(), lr=lr)


def adamw(lr: float, weight_decay: float = 0.05):
    def build(model: nn.Module) -> torch.optim.Optimizer:
        decay = [p for name, p in model.named_parameters() if p.ndim >= 2 and "norm" not in name]
        exempt = [p for name, p in model.named_parameters() if not (p.ndim >= 2 and "norm" not in name)]
        return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                  {"params": exempt, "weight_decay": 0.0}], lr=lr)
    return build


def linear_warmup(warmup: float = 0.06, bump_at: int | None = None, bump_length: int = 0, bump: float = 1.0):
    """(step, total) → multiplier: linear warm-up over ``warmup`` of the steps (0: none), then linear decay to 0;
    × ``bump`` for ``bump_length`` steps from ``bump_at``."""
    def schedule(step: int, total: int) -> float:
        ramp = int(warmup * total)
        if ramp and step <= ramp:
            value = step / ramp
        else:
            value = max(0.0, (total - step) / max(1, total - ramp))
        if bump_at is not None and bump_at <= step < bump_at + bump_length:
            value *= bump
        return value
    return schedule


def scale_head(factor: float):
    def prepare(model: nn.Module) -> None:
        with torch.no_grad():
            model.head.weight.mul_(factor)
    return prepare


def glitch(at: int, scale: float):
    """One batch whose clips were scaled by ``scale`` (a decoder that skipped the int16 → float normalisation)."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x * scale, y) if step == at else (x, y)
    return hook


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="classification", task_kind="classification", logging=LOGGING,
                    batch_size=32, probe_layout=True, lr_at=linear_warmup(), attention=True, evals_per_epoch=2)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", spectrograms), settings.pop("model", convformer()), optimizer,
                epochs, **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("kws_healthy_nadam", "conv + 2-layer pre-LN transformer keyword spotter on 12-keyword spectrograms, NAdam "
            "2e-3, 6 % warm-up then linear decay, 10 epochs (570 steps)", nadam(2e-3), 10, healthy=True),
        run("kws_healthy_nadam_seed1", "keyword spotter, NAdam 2e-3, warm-up + linear decay, 10 epochs, seed 1",
            nadam(2e-3), 10, seed=1, healthy=True),
        run("kws_healthy_adamw", "keyword spotter, AdamW 2e-3 wd 0.05, warm-up + linear decay, 12 epochs",
            adamw(2e-3), 12, healthy=True),
        run("kws_healthy_nadam_wide", "keyword spotter of width 64 with 24 channels, NAdam 1.5e-3, warm-up + linear "
            "decay, 14 epochs (798 steps), seed 2", nadam(1.5e-3), 14, model=convformer(width=64, channels=24),
            seed=2, healthy=True),
        run("kws_lr_too_high_nadam", "keyword spotter, NAdam 0.2 (100x the working lr: a value from a tabular "
            "recipe), warm-up + linear decay, 10 epochs (checked: final val 0.752 vs twin 0.087, 8.6x; val accuracy "
            "0.625 vs 0.970; the train loss jumps to 5.2 during the warm-up and is still 0.6-1.0 at the end)",
            nadam(0.2), 10,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low"],
            allow=["update_ratio_out_of_band", "best_epoch_not_last", "underfitting", "loss_spike",
                   "underperforming_classes", "train_longer", "missing_warmup", "adam_hyperparameters"]),
        run("kws_missing_warmup_postln", "post-LN keyword spotter with 3 transformer layers, Adam 1e-2 from step 1 "
            "(warm-up 0 in the config), linear decay, 10 epochs: it never leaves chance (checked: final val 2.485 = "
            "ln 12, accuracy 0.083; the twin with a 30 % warm-up reaches 0.094, accuracy 0.970)", adam(1e-2), 10,
            model=convformer(norm_first=False, layers=3), lr_at=linear_warmup(0.0),
            expect={"missing_warmup": [1, 120]},
            allow=["adam_hyperparameters", "lr_too_high", "best_epoch_not_last", "underfitting", "loss_spike",
                   "update_ratio_out_of_band", "underperforming_classes", "no_better_than_baseline", "dead_layers",
                   "vanishing_gradients"]),
        run("kws_bad_initial_loss_scaled_head", "keyword spotter whose head weights are x30 at init (an init scale "
            "meant for a head without the LayerNorm before it), NAdam 2e-3, warm-up + linear decay, 10 epochs "
            "(checked: first loss 12.9 against ln 12 = 2.48 and the twin's 2.50; gradient norm 518 at step 1 vs "
            "the twin's 3.4; final val 0.170 vs twin 0.087)", nadam(2e-3), 10, prepare=scale_head(30.0),
            expect={"bad_initial_loss": [1, 6]},
            allow=["loss_spike", "underfitting", "underperforming_classes", "overfitting", "best_epoch_not_last",
                   "train_longer", "update_ratio_out_of_band", "exploding_gradients"]),
        run("kws_no_better_than_baseline_shuffled", "keyword spotter trained on labels shuffled against their clips "
            "(a join on the wrong key; val intact), NAdam 2e-3, warm-up + linear decay, 10 epochs (checked: "
            "final val loss 2.463 against ln 12 = 2.485, the train loss never leaves 2.43-2.56; val accuracy 0.133 "
            "with 1/12 = 0.083 for chance and the majority class; twin 0.087 and 0.970)", nadam(2e-3), 10, data=lambda: spectrograms(shuffled=True),
            expect={"no_better_than_baseline": everywhere},
            allow=["underfitting", "underperforming_classes", "overfitting", "best_epoch_not_last"]),
        run("kws_class_imbalance_rare_keywords", "keyword spotter on a collection where keywords 6-11 kept 4 % of "
            "their training clips (6 each against 150) and 20 % of their validation clips (10 against 50), NAdam "
            "2e-3, warm-up + linear decay, 10 epochs (checked: val recall of keywords 6-11 0.70, 0.70, 0.20, 0.50, "
            "0.30, 0.90 against 0.94-1.00 in the twin; keywords 0-5 0.96-1.00)", nadam(2e-3), 10,
            data=lambda: spectrograms(rare=(6, 7, 8, 9, 10, 11), rare_keep=0.04, rare_keep_val=0.2),
            expect={"class_imbalance": everywhere, "underperforming_classes": everywhere},
            allow=["overfitting", "best_epoch_not_last"]),
        run("kws_underperforming_classes_confusable", "keyword spotter where half the clips of keyword 11 were "
            "recorded with keyword 10's phonemes (a vendor lexicon that maps one onto the other; classes balanced), "
            "NAdam 2e-3, warm-up + linear decay, 10 epochs (checked: val recall of keyword 11 0.46 and of keyword "
            "10 0.90 against 0.98 and 1.00 in the twin; the other keywords 0.92-1.00)", nadam(2e-3), 10,
            data=lambda: spectrograms(confusable=True),
            expect={"underperforming_classes": everywhere}, forbid=["class_imbalance"],
            allow=["overfitting", "best_epoch_not_last"]),
        run("kws_overfitting_four_per_keyword", "keyword spotter (width 64, 24 channels) on 4 training clips a "
            "keyword (48; 2 steps per epoch), NAdam 3e-3, no weight decay, warm-up + linear decay, 300 epochs (600 "
            "steps), val every 6 steps (checked: best val 1.169 at step 66, then up to 1.468 at the end while the "
            "train loss falls to 0.0026; val accuracy 0.615; twin 0.087, 0.970)", nadam(3e-3), 300,
            data=lambda: spectrograms(per_class_train=4), model=convformer(width=64, channels=24), evals_per_epoch=1,
            eval_every=6,
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band", "underperforming_classes"]),
        run("kws_loss_spike_lr_bump", "keyword spotter, NAdam 2e-3, warm-up + linear decay with the lr x8 for 5 "
            "steps from step 250 (a resumed job that reloaded the peak lr into a half-decayed schedule), 10 epochs "
            "(checked: the train loss jumps from about 0.06 to 4.07 at step 258, 1.64 at the next record, back "
            "near 0.15 by step 300; final val 0.123 vs the twin's 0.087)", nadam(2e-3), 10,
            lr_at=linear_warmup(bump_at=250, bump_length=5, bump=8.0),
            expect={"loss_spike": [248, 320]}, forbid=["divergence"],
            allow=["exploding_gradients", "update_ratio_out_of_band", "lr_too_high", "best_epoch_not_last"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    base = healthy["kws_healthy_nadam"]
    twins = {spec.name: base for spec in specs() if not spec.healthy}
    twins["kws_missing_warmup_postln"] = run(
        "kws_twin_postln_warmup", "post-LN keyword spotter with 3 transformer layers, Adam 1e-2 with a 30 % warm-up, "
        "linear decay, 10 epochs", adam(1e-2), 10, model=convformer(norm_first=False, layers=3),
        lr_at=linear_warmup(0.3))
    return twins


