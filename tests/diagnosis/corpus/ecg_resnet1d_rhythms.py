"""A 1-D ResNet classifying synthetic ECG beats into 5 rhythm classes (N, S, V, F, Q) from a training set as imbalanced as real arrhythmia data (70/15/8/5/2 %), SGD with momentum, step decay, logged every step (thirteenth hold-out).

Beats made here, one window of 128 samples per beat centred on its R peak
(sample 56), with parts of the previous and next beats at their RR
intervals; each wave is a Gaussian bump. N (normal): P wave, narrow QRS,
upright T, regular RR (45 ± 3). S (supraventricular ectopic): premature (RR
before 31 ± 3, compensatory pause after), the P wave inverted or flattened,
narrow QRS. V (ventricular ectopic): premature, no P wave, a wide tall QRS,
a deep S and an inverted T. F (fusion): P wave, QRS of intermediate width,
flat T. Q (paced): a sharp pacing spike before a wide QRS, inverted T,
regular RR. Each beat gets an amplitude of 0.8-1.2, timing jitter, baseline
wander (a slow sine up to 0.25), mains-like hum and Gaussian noise (σ 0.1).
2,000 training beats drawn 70/15/8/5/2 % over the classes (1,400 / 300 / 160
/ 100 / 40), 500 validation beats, 100 a class (balanced, as in a benchmark
that scores each rhythm); batches of 32 (63 steps per epoch). The model: a
1-D ResNet (a stem convolution 1→16, kernel 7, BatchNorm, ReLU; three basic
blocks 16→16, 16→32 stride 2, 32→32 stride 2, each two convolutions of
kernel 5 with BatchNorm and a 1×1 projection when the shape changes), global
average pooling and a linear head to 5 logits; cross-entropy. SGD with
momentum 0.9 (and Nesterov), weight decay 5e-4; the lr is cut ×0.1 at 50 %
and at 75 % of the epochs (MultiStepLR, stepped per epoch). Logged every
step (loss, batch accuracy, lr, gradient norm); per-layer statistics every
10 steps; val loss, accuracy and confusion counts after every epoch. Task:
classification, C = 5.

Thirteenth hold-out (issue #12): written on 2026-12-01 by an engineer who
changes no rule and never read them; kept out of ``FAMILY_MODULES`` and of
``tests/data/corpus`` (see ``tests/diagnosis/make_heldout.py heldout13``).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "ecg_resnet1d_rhythms"
LOGGING = Logging(layer_every=10)
LENGTH, CENTRE, CLASSES = 128, 56, 5
TRAIN_SHARES = (0.70, 0.15, 0.08, 0.05, 0.02)


def _bump(t: np.ndarray, centre: np.ndarray, width, amplitude) -> np.ndarray:
    scaled = (t[None, :] - centre[:, None]) / np.asarray(width)[:, None]
    return np.asarray(amplitude)[:, None] * np.exp(-0.5 * scaled ** 2)


def _beats(labels: np.ndarray, rng: np.random.Generator, noise: float, s_like_n: float = 0.0) -> np.ndarray:
    """One window per label (N 0, S 1, V 2, F 3, Q 4); ``s_like_n``: the share of S beats with a normal P wave
    and a normal RR (a lead where their ectopic signs do not show)."""
    n = len(labels)
    t = np.arange(LENGTH, dtype=float)
    is_ = {k: labels == k for k in range(CLASSES)}
    centre = CENTRE + rng.normal(0, 1.0, n)
    rr_before = np.where(is_[1] | is_[2], rng.normal(31, 3, n), rng.normal(45, 3, n))
    rr_after = np.where(is_[1] | is_[2], rng.normal(58, 3, n), rng.normal(45, 3, n))
    hidden_s = is_[1] & (rng.random(n) < s_like_n)
    rr_before = np.where(hidden_s, rng.normal(45, 3, n), rr_before)
    rr_after = np.where(hidden_s, rng.normal(45, 3, n), rr_after)
    p_amp = np.select([is_[1] & ~hidden_s, is_[2]], [rng.choice([-0.15, 0.03], n), 0.0], 0.15)
    qrs_width = np.select([is_[2], is_[3], is_[4]], [4.0, 2.4, 3.5], 1.3) * rng.uniform(0.9, 1.1, n)
    r_amp = np.select([is_[2], is_[3]], [1.4, 1.1], 1.0)
    s_amp = np.select([is_[2]], [-0.6], -0.25)
    t_amp = np.select([is_[2], is_[3], is_[4]], [-0.4, 0.05, -0.3], 0.3)
    x = np.zeros((n, LENGTH))
    for offset in (-rr_before, np.zeros(n), rr_after):  # the previous, this and the next beat
        c = centre + offset
        own = offset == 0
        x += _bump(t, c - 15, np.full(n, 2.5), np.where(own, p_amp, 0.15))
        x += _bump(t, c, np.where(own, qrs_width, 1.3), np.where(own, r_amp, 1.0))
        x += _bump(t, c + 2.5 * np.where(own, qrs_width / 1.3, 1.0), np.full(n, 1.0), np.where(own, s_amp, -0.25))
        x += _bump(t, c + 20, np.full(n, 5.0), np.where(own, t_amp, 0.3))
    x += _bump(t, centre - 5, np.full(n, 0.35), np.where(is_[4], 1.5, 0.0))  # the pacing spike
    x *= rng.uniform(0.8, 1.2, (n, 1))
    x += rng.uniform(0, 0.25, (n, 1)) * np.sin(2 * np.pi * (t[None, :] / rng.uniform(150, 400, (n, 1))
                                                               + rng.uniform(0, 1, (n, 1))))
    x += 0.04 * np.sin(2 * np.pi * t[None, :] / 6.0 + rng.uniform(0, 2 * np.pi, (n, 1)))
    x += rng.normal(0, noise, x.shape)
    return x.astype(np.float32)


@functools.lru_cache(maxsize=None)
def ecg(train: int = 2000, shares: tuple[float, ...] = TRAIN_SHARES, val_per_class: int = 100,
        val_shares: tuple[float, ...] | None = None, noise: float = 0.1, s_like_n: float = 0.0,
        shuffle_labels: bool = False, seed: int = 130) -> Split:
    """Training beats drawn with ``shares``; validation beats ``val_per_class`` a class (or 500 drawn with
    ``val_shares``). ``shuffle_labels``: the training labels read in another order than the beats."""
    rng = np.random.default_rng(seed)
    counts = np.maximum(1, np.round(np.asarray(shares) * train).astype(int))
    y_train = rng.permutation(np.repeat(np.arange(CLASSES), counts))
    if val_shares is None:
        y_val = np.repeat(np.arange(CLASSES), val_per_class)
    else:
        y_val = np.repeat(np.arange(CLASSES), np.maximum(1, np.round(np.asarray(val_shares) * 500).astype(int)))
    x_train = _beats(y_train, rng, noise, s_like_n)
    x_val = _beats(y_val, rng, noise, s_like_n)
    if shuffle_labels:
        y_train = rng.permutation(y_train)
    return Split(torch.tensor(x_train)[:, None, :], torch.tensor(y_train, dtype=torch.long),
                 torch.tensor(x_val)[:, None, :], torch.tensor(y_val, dtype=torch.long), CLASSES)


class Block(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int = 1, skip: bool = True,
                 activation: type[nn.Module] = nn.ReLU, norm: bool = True):
        super().__init__()
        self.conv1 = nn.Conv1d(inputs, outputs, 5, stride=stride, padding=2, bias=not norm)
        self.bn1 = nn.BatchNorm1d(outputs) if norm else nn.Identity()
        self.conv2 = nn.Conv1d(outputs, outputs, 5, padding=2, bias=not norm)
        self.bn2 = nn.BatchNorm1d(outputs) if norm else nn.Identity()
        self.activation = activation()
        self.skip = skip
        self.project = (nn.Sequential(nn.Conv1d(inputs, outputs, 1, stride=stride, bias=False), nn.BatchNorm1d(outputs))
                        if skip and (stride != 1 or inputs != outputs) else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.activation(self.bn1(self.conv1(x)))))
        if self.skip:
            out = out + (x if self.project is None else self.project(x))
        return self.activation(out)


class ResNet1d(nn.Module):
    def __init__(self, width: int = 16, blocks: tuple[tuple[int, int], ...] | None = None, skip: bool = True,
                 activation: type[nn.Module] = nn.ReLU, norm: bool = True):
        super().__init__()
        plan = blocks or ((width, 1), (2 * width, 2), (2 * width, 2))
        self.stem = nn.Conv1d(1, width, 7, padding=3, bias=not norm)
        self.stem_bn = nn.BatchNorm1d(width) if norm else nn.Identity()
        self.activation = activation()
        layers, channels = [], width
        for outputs, stride in plan:
            layers.append(Block(channels, outputs, stride, skip, activation, norm))
            channels = outputs
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(channels, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.blocks(self.activation(self.stem_bn(self.stem(x))))
        return self.head(hidden.mean(2))


def resnet(**kwargs):
    return lambda data: ResNet1d(**kwargs)


def sgd(lr: float, momentum: float = 0.9, weight_decay: float = 5e-4, nesterov: bool = False):
    return lambda model: torch.optim.SGD([p for p in model.parameters() if p.requires_grad] or
                                         list(model.parameters()), lr=lr, momentum=momentum,
                                         weight_decay=weight_decay, nesterov=nesterov)


def multistep(epochs: int, at: tuple[float, ...] = (0.5, 0.75), gamma: float = 0.1):
    milestones = sorted({max(1, round(epochs * fraction)) for fraction in at})
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=milestones, gamma=gamma), "epoch")


def scale_head(factor: float):
    def prepare(model: nn.Module) -> None:
        with torch.no_grad():
            model.head.weight.mul_(factor)
    return prepare


def freeze_front(model: nn.Module) -> None:
    """requires_grad off for the stem and the first two blocks (a fine-tuning recipe's 'freeze the backbone'
    run from scratch: they stay at their random init)."""
    for module in (model.stem, model.stem_bn, model.blocks[0], model.blocks[1]):
        for parameter in module.parameters():
            parameter.requires_grad_(False)


def step_decay_with_bump(epochs: int, at: int, length: int, factor: float,
                         milestones: tuple[float, ...] = (0.5, 0.75), gamma: float = 0.1):
    """The step decay of ``multistep`` as a per-step multiplier, times ``factor`` for ``length`` steps from ``at``
    (a resumed run that restored the schedule's state wrong for a few steps)."""
    def schedule(step: int, total: int) -> float:
        epoch = (step - 1) // (total // epochs)
        decay = gamma ** sum(epoch >= max(1, round(epochs * fraction)) for fraction in milestones)
        return decay * (factor if at <= step < at + length else 1.0)
    return schedule


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", logging=LOGGING, batch_size=32, probe_layout=True,
                    scheduler=multistep(epochs))
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", ecg), settings.pop("model", resnet()), optimizer, epochs,
                **settings)


def specs() -> list[Spec]:
    return [
        run("ecg_healthy_sgd", "1-D ResNet on synthetic ECG beats (train 70/15/8/5/2 %, val balanced), SGD 0.05 "
            "momentum 0.9 wd 5e-4, lr x0.1 at epochs 6 and 9, 12 epochs (756 steps)", sgd(0.05), 12, healthy=True),
        run("ecg_healthy_sgd_seed1", "1-D ResNet, SGD 0.05 momentum 0.9, step decay, 12 epochs, seed 1",
            sgd(0.05), 12, seed=1, healthy=True),
        run("ecg_healthy_nesterov", "1-D ResNet, SGD 0.03 with Nesterov momentum, step decay, 12 epochs, seed 2",
            sgd(0.03, nesterov=True), 12, seed=2, healthy=True),
        run("ecg_healthy_wide", "1-D ResNet of width 24 (24/48/48 channels), SGD 0.05 momentum 0.9, step decay, "
            "12 epochs, seed 3", sgd(0.05), 12, model=resnet(width=24), seed=3, healthy=True),
        run("ecg_healthy_batch64", "1-D ResNet, batches of 64 with SGD 0.1 momentum 0.9 (lr scaled with the batch), "
            "step decay, 14 epochs (448 steps)", sgd(0.1), 14, batch_size=64, healthy=True),
        run("ecg_healthy_deeper", "1-D ResNet with four blocks (16, 16, 32/2, 32/2), SGD 0.05 momentum 0.9, step "
            "decay at 60 % and 80 %, 12 epochs, seed 4", sgd(0.05), 12,
            model=resnet(blocks=((16, 1), (16, 1), (32, 2), (32, 2))), scheduler=multistep(12, at=(0.6, 0.8)),
            seed=4, healthy=True),
    ] + faults()


# What each fault run's twin check measured (tests/diagnosis/heldout_twins.py), quoted in its description.
CHECKED = {
    'ecg_lr_too_high_sgd': (
        "final val 0.872 vs twin 0.0238, 37x; the train loss climbs back to 3.5 at step 118; val accuracy 0.57 vs "
        "1.00"),
    'ecg_lr_too_low_sgd': (
        "final val 1.684 vs twin 0.0238, 71x; val accuracy 0.39 vs 1.00; median update/weight ratio 8.5e-6 vs the "
        "twin's 2.9e-4"),
    'ecg_decayed_too_early': (
        "final val 0.717 vs twin 0.0238, 30x; val only goes from 1.05 to 0.69-0.72 over the last 11 epochs; val "
        "accuracy 0.71 vs 1.00"),
    'ecg_loss_spike_lr_bump': (
        "the train loss jumps from about 0.01 to 0.90 and 1.82 at steps 301-302, 0.34 at 303 and 0.1-0.4 for the "
        "next 30 steps; val 2.22 at step 315 against 0.15 before and 0.26 at step 378; final val 0.137 vs twin "
        "0.0238, 5.7x"),
    'ecg_train_longer_stopped': (
        "val 2.24, 1.73, 1.77, 1.65, 1.35, 1.04, 0.97, 0.76, 0.73 over its 9 evaluations, best at the last; final "
        "val 0.731 vs 0.142 for the twin that runs the 12 epochs, 5.1x"),
    'ecg_bad_initial_loss_scaled_head': (
        "first loss 14.3 against ln 5 = 1.61 (twin 1.69); gradient norm peak 168x its median; final val 0.065 vs "
        "twin 0.0238, 2.7x"),
    'ecg_no_better_than_baseline_shuffled_labels': (
        "val accuracy 0.200, the majority class's share of the balanced val, vs twin 1.000; final val 2.51 vs "
        "0.0238"),
    'ecg_class_imbalance_natural_val': (
        "lowest per-class val recall 0.10 vs 0.70 for the twin trained on balanced classes; val accuracy 0.942 "
        "against a majority share of 0.800"),
    'ecg_underperforming_hidden_s': (
        "lowest per-class val recall 0.39 vs 1.00 for the twin; val accuracy 0.878 vs 1.000; final val 0.355 vs "
        "0.0238"),
    'ecg_dead_layers_frozen_front': (
        "final val 0.170 vs twin 0.0238, 7.1x; lowest per-class recall 0.84 vs 1.00"),
    'ecg_vanishing_gradients_plain_sigmoid': (
        "median gradient norm of the stem 2e-16 against 0.14 for the head, each block about 10x below the next; "
        "val accuracy 0.200 (chance) vs 0.854 for the twin with BatchNorm and ReLU in the same 8 plain blocks; "
        "final val 2.34 vs 0.262, 9x"),
    'ecg_update_ratio_low_sgd': (
        "median update/weight ratio 3.7e-7 vs the twin's 2.9e-4; final val 1.633 vs twin 0.0238, 69x; val "
        "accuracy 0.20 (chance)"),
}


def faults() -> list[Spec]:
    return [dataclasses.replace(spec, description=f"{spec.description} (checked: {CHECKED[spec.name]})")
            for spec in _faults()]


def _faults() -> list[Spec]:
    everywhere = None
    return [
        run("ecg_lr_too_high_sgd", "1-D ResNet, SGD 1.5 momentum 0.9 (30x the working lr), step decay, 12 epochs",
            sgd(1.5), 12, expect={"lr_too_high": [1, 380]}, forbid=["lr_too_low"],
            allow=["loss_spike", "underfitting", "underperforming_classes", "no_better_than_baseline",
                   "best_epoch_not_last", "update_ratio_out_of_band", "exploding_gradients"]),
        run("ecg_lr_too_low_sgd", "1-D ResNet, SGD 5e-4 momentum 0.9 (100x below the working lr), step decay, 12 "
            "epochs", sgd(5e-4), 12, expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band", "underperforming_classes",
                   "no_better_than_baseline"]),
        run("ecg_decayed_too_early", "1-D ResNet, SGD 0.05 momentum 0.9, the step decay's milestones given as 10 % "
            "and 20 % of the epochs (x0.1 after epochs 1 and 2: lr 5e-4 from step 126 on), 12 epochs", sgd(0.05), 12,
            scheduler=multistep(12, at=(0.1, 0.2)), expect={"decayed_too_early": [40, 200]}, forbid=["lr_too_high"],
            allow=["underfitting", "lr_too_low", "train_longer", "update_ratio_out_of_band",
                   "underperforming_classes"]),
        run("ecg_loss_spike_lr_bump", "1-D ResNet, SGD 0.05 momentum 0.9, a run resumed at step 300 whose restored "
            "scheduler gave lr x12 for 3 steps (300-302), step decay, 12 epochs", sgd(0.05), 12,
            lr_at=step_decay_with_bump(12, 300, 3, 12.0), scheduler=None, expect={"loss_spike": [299, 330]},
            forbid=["divergence"], allow=["exploding_gradients", "update_ratio_out_of_band", "best_epoch_not_last"]),
        run("ecg_train_longer_stopped", "1-D ResNet, SGD 0.01 momentum 0.9, stopped after 3 of 12 planned epochs "
            "(189 steps, no decay yet), val every 21 steps", sgd(0.01), 3, scheduler=multistep(12), eval_every=21,
            expect={"train_longer": everywhere},
            forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underperforming_classes", "underfitting"]),
        run("ecg_bad_initial_loss_scaled_head", "1-D ResNet whose head weights were multiplied by 40 at init (a "
            "custom init applied twice), SGD 0.05 momentum 0.9, step decay, 12 epochs", sgd(0.05), 12,
            prepare=scale_head(40.0), expect={"bad_initial_loss": [1, 1]},
            allow=["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "underperforming_classes"]),
        run("ecg_no_better_than_baseline_shuffled_labels", "1-D ResNet trained on labels read in another order "
            "than the beats (a join on the wrong key), SGD 0.05 momentum 0.9, step decay, 12 epochs", sgd(0.05), 12,
            data=lambda: ecg(shuffle_labels=True), expect={"no_better_than_baseline": everywhere},
            allow=["underfitting", "underperforming_classes", "class_imbalance", "overfitting", "best_epoch_not_last"]),
        run("ecg_class_imbalance_natural_val", "1-D ResNet on beats drawn 88/6/3/2/1 % in training and 80/8/6/4/2 % "
            "in validation (the recordings' natural shares, S beats half the time with their ectopic signs hidden), "
            "SGD 0.05 momentum 0.9, step decay, 12 epochs", sgd(0.05), 12,
            data=lambda: ecg(shares=(0.88, 0.06, 0.03, 0.02, 0.01), val_shares=(0.8, 0.08, 0.06, 0.04, 0.02),
                             s_like_n=0.5),
            expect={"class_imbalance": everywhere, "underperforming_classes": everywhere}),
        run("ecg_underperforming_hidden_s", "1-D ResNet on a lead where 60 % of S beats show neither their "
            "inverted P wave nor their prematurity (val balanced), SGD 0.05 momentum 0.9, step decay, 12 epochs",
            sgd(0.05), 12, data=lambda: ecg(s_like_n=0.6), expect={"underperforming_classes": everywhere},
            forbid=["class_imbalance"]),
        run("ecg_dead_layers_frozen_front", "1-D ResNet whose stem and first two blocks were left with requires_grad "
            "off (a fine-tuning recipe's 'freeze the backbone' run from scratch), SGD 0.05 momentum 0.9, step "
            "decay, 12 epochs", sgd(0.05), 12, prepare=freeze_front, expect={"dead_layers": everywhere},
            allow=["underfitting", "underperforming_classes"]),
        run("ecg_vanishing_gradients_plain_sigmoid", "the ResNet's skip connections and BatchNorm removed and "
            "sigmoid activations (8 plain blocks of width 16, an old paper's net), SGD 0.05 momentum 0.9, step "
            "decay, 12 epochs", sgd(0.05), 12,
            model=resnet(blocks=((16, 1),) * 6 + ((16, 2), (16, 2)), skip=False, activation=nn.Sigmoid, norm=False),
            expect={"vanishing_gradients": everywhere},
            allow=["underfitting", "no_better_than_baseline", "underperforming_classes", "class_imbalance",
                   "update_ratio_out_of_band", "lr_too_low", "best_epoch_not_last"]),
        run("ecg_update_ratio_low_sgd", "1-D ResNet, SGD 1e-5 momentum 0.9 (a config whose lr was meant for Adam "
            "and then divided by 100), step decay, 12 epochs", sgd(1e-5), 12,
            expect={"update_ratio_out_of_band": everywhere},
            allow=["lr_too_low", "underfitting", "no_better_than_baseline", "underperforming_classes",
                   "class_imbalance", "train_longer"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    base = healthy["ecg_healthy_sgd"]
    twins = {spec.name: base for spec in faults()}
    twins["ecg_train_longer_stopped"] = run(
        "ecg_twin_sgd_001_full", "1-D ResNet, SGD 0.01 momentum 0.9, step decay, the 12 planned epochs", sgd(0.01), 12)
    twins["ecg_class_imbalance_natural_val"] = run(
        "ecg_twin_natural_val_balanced_train", "1-D ResNet on beats drawn 20 % a class in training and 80/8/6/4/2 % "
        "in validation (S beats half the time hidden), SGD 0.05, step decay, 12 epochs", sgd(0.05), 12,
        data=lambda: ecg(shares=(0.2,) * 5, val_shares=(0.8, 0.08, 0.06, 0.04, 0.02), s_like_n=0.5))
    twins["ecg_vanishing_gradients_plain_sigmoid"] = run(
        "ecg_twin_plain_relu_bn", "8 plain blocks of width 16 with BatchNorm and ReLU, no skips, SGD 0.05, step "
        "decay, 12 epochs", sgd(0.05), 12, model=resnet(blocks=((16, 1),) * 6 + ((16, 2), (16, 2)), skip=False))
    return twins
