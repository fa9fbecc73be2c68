"""A mixture-of-softmaxes classifier (Yang et al. 2018: K softmax components mixed by a learned gate) over 200 classes of synthetic hierarchical tabular records, SGD with Nesterov momentum, multi-step decay or cosine to zero (NAdam in one healthy run), logged every step (sixteenth hold-out).

Records made here: 200 classes in 20 groups of 10. Each group has a centre
in R^24 (N(0, 2.5²)), each class an offset from its group's centre
(N(0, 1.1²)); a record is its class's point plus N(0, 1) noise on the 24
numeric features, and a 12-level categorical "region" that equals the
group's region (group mod 12) 70 % of the time and is uniform otherwise
(one-hot, 12 columns): 36 columns, the numeric ones standardised. 30
training and 10 validation records a class (6,000 and 2,000), batches of
100 (60 steps an epoch). The model: a trunk 36 → 128 → 128 (ReLU), K = 4
components, each a tanh projection 128 → 64 followed by one output layer
64 → 200 shared by the components, mixed by a softmax gate 128 → 4; the
output is the log of the mixed probabilities, so cross-entropy on it is the
mixture's negative log-likelihood (ln 200 = 5.30 at init). SGD with
Nesterov momentum 0.9, lr 0.3, weight decay 1e-4, lr ×0.1 at 60 % and 85 %
of the run (MultiStepLR stepped per epoch), 10 epochs; or cosine to zero;
or NAdam 2e-2 with lr ×0.7 an epoch. Logged every step (loss, batch accuracy, lr, gradient norm),
per-layer statistics every 10 steps, val loss, accuracy and confusion
counts after every epoch. Task: classification, C = 200.

Sixteenth hold-out: written on 2026-12-01 by an engineer who changes no rule
and never read them; kept out of ``FAMILY_MODULES`` and of
``tests/data/corpus`` (see ``tests/diagnosis/make_heldout.py heldout16``). Labels
come from how each run was built, checked against a healthy twin with
``tests/diagnosis/heldout_twins.py --family mos_tabular_200``.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "mos_tabular_200"
LOGGING = Logging(layer_every=10)
GROUPS, PER_GROUP, NUMERIC, REGIONS = 20, 10, 24, 12
CLASSES = GROUPS * PER_GROUP


@functools.lru_cache(maxsize=None)
def records(per_class: tuple[int, ...] = (30,) * CLASSES, val_per_class: tuple[int, ...] = (10,) * CLASSES,
            shuffle_train_labels: bool = False, label_noise: float = 0.0, seed: int = 160) -> Split:
    """``per_class[k]`` training and ``val_per_class[k]`` validation records of class k; with
    ``shuffle_train_labels`` the training labels are permuted against their records (a join on the wrong key)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.5, (GROUPS, NUMERIC))
    points = np.repeat(centres, PER_GROUP, axis=0) + rng.normal(0, 1.1, (CLASSES, NUMERIC))

    def draw(counts: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.repeat(np.arange(CLASSES), counts))
        numeric = points[y] + rng.normal(0, 1.0, (len(y), NUMERIC))
        region = np.where(rng.random(len(y)) < 0.7, (y // PER_GROUP) % REGIONS, rng.integers(0, REGIONS, len(y)))
        return np.concatenate([numeric, np.eye(REGIONS)[region]], axis=1), y

    (x_train, y_train), (x_val, y_val) = draw(per_class), draw(val_per_class)
    mean, std = x_train[:, :NUMERIC].mean(0), x_train[:, :NUMERIC].std(0)
    x_train[:, :NUMERIC] = (x_train[:, :NUMERIC] - mean) / std
    x_val[:, :NUMERIC] = (x_val[:, :NUMERIC] - mean) / std
    if shuffle_train_labels:
        y_train = rng.permutation(y_train)
    wrong = rng.random(len(y_train)) < label_noise
    y_train = np.where(wrong, rng.integers(0, CLASSES, len(y_train)), y_train)
    return Split(torch.tensor(x_train, dtype=torch.float32), torch.tensor(y_train, dtype=torch.long),
                 torch.tensor(x_val, dtype=torch.float32), torch.tensor(y_val, dtype=torch.long), CLASSES)


class MixtureOfSoftmaxes(nn.Module):
    def __init__(self, hidden: int = 128, components: int = 4, latent: int = 64):
        super().__init__()
        self.components = components
        self.trunk = nn.Sequential(nn.Linear(NUMERIC + REGIONS, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                   nn.ReLU())
        self.latent = nn.Linear(hidden, components * latent)
        self.gate = nn.Linear(hidden, components)
        self.head = nn.Linear(latent, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.trunk(x)
        latent = torch.tanh(self.latent(hidden)).view(len(x), self.components, -1)
        log_probs = F.log_softmax(self.head(latent), dim=-1)  # (B, K, C)
        log_gate = F.log_softmax(self.gate(hidden), dim=-1)[:, :, None]
        return torch.logsumexp(log_gate + log_probs, dim=1)  # (B, C): log of the mixed probabilities


def mos(**kwargs):
    return lambda data: MixtureOfSoftmaxes(**kwargs)


def sgd(lr: float, weight_decay: float = 1e-4):
    return lambda model: torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9,
                                         nesterov=True, weight_decay=weight_decay)


def nadam(lr: float):
    return lambda model: torch.optim.NAdam(model.parameters(), lr=lr)


def multistep(fractions: tuple[float, ...] = (0.6, 0.85), gamma: float = 0.1, per_step: bool = False):
    """MultiStepLR at these fractions of the run, stepped per epoch (or per step)."""
    def make(optimizer, total, per_epoch):
        unit = total if per_step else total // per_epoch
        milestones = [max(1, round(fraction * unit)) for fraction in fractions]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma), ("step" if per_step else "epoch")
    return make


def cosine():
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=0.0), "step")


def exponential(gamma: float):
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma), "epoch")


def scale_head(factor: float):
    def prepare(model: nn.Module) -> None:
        with torch.no_grad():
            model.head.weight.mul_(factor)
            model.head.bias.uniform_(-factor / 2, factor / 2)
    return prepare


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", logging=LOGGING, batch_size=100, probe_layout=True,
                    scheduler=multistep())
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", records), settings.pop("model", mos()), optimizer, epochs,
                **settings)


LONG_TAIL = tuple(int(round(150 * 0.972 ** k)) for k in range(CLASSES))  # 150 down to 1 a class


def specs() -> list[Spec]:
    return [
        run("mos_healthy_sgd_multistep", "mixture of 4 softmaxes (MLP trunk 36-128-128) over 200 classes of "
            "synthetic hierarchical records, SGD Nesterov momentum 0.9 lr 0.3 wd 1e-4, lr x0.1 at 60 % and 85 %, "
            "10 epochs (600 steps)", sgd(0.3), 10, healthy=True),
        run("mos_healthy_sgd_multistep_seed1", "mixture of softmaxes, SGD Nesterov 0.3, multi-step decay, 10 "
            "epochs, seed 1", sgd(0.3), 10, seed=1, healthy=True),
        run("mos_healthy_sgd_cosine", "mixture of softmaxes, SGD Nesterov 0.2, cosine to zero, 12 epochs, seed 2",
            sgd(0.2), 12, scheduler=cosine(), seed=2, healthy=True),
        run("mos_healthy_nadam_exponential", "mixture of softmaxes, NAdam 2e-2, lr x0.7 after every epoch "
            "(ExponentialLR), 10 epochs, seed 3", nadam(2e-2), 10, scheduler=exponential(0.7), seed=3, healthy=True),
    ] + faults()


# What each fault run's twin check measured (tests/diagnosis/heldout_twins.py), quoted in its description.
CHECKED = {
    "mos_lr_too_high_sgd": (
        "the train loss is above its first value (5.29) from step 33 on, 26-60 between steps 100 and 400 "
        "(peak 60.4 at step 348), never below 7.09 after step 60; final val 13.6 vs twin 0.280, 48x; val "
        "accuracy 0.021 vs 0.917; gradient norm peak 92x its median (twin 1.7x)"),
    "mos_decayed_too_early_sgd": (
        "val 0.535-0.559 at every evaluation from step 240 on while the twin goes on to 0.280; final val "
        "1.91x the twin's; final train 0.427 vs 0.137"),
    "mos_bad_initial_loss_scaled_head": (
        "first loss 17.3 against ln 200 = 5.30 (twin 5.29); gradient norm peak 20x its median; final val 3.49 "
        "vs twin 0.280, 12.5x"),
    "mos_class_imbalance_long_tail": (
        "mean val recall of the 50 rarest classes 0.10 (the next 50: 0.63) vs 0.90 for the twin trained on 30 "
        "records a class; overall val accuracy 0.923 vs 0.920 against a majority share of 0.028"),
    "mos_no_better_than_baseline_shuffled": (
        "val accuracy 0.017 against a majority share of 0.005 (twin 0.917); val loss 5.51 at the end, above "
        "ln 200 = 5.30; final val 19.7x the twin's"),
    "mos_overfitting_few_records": (
        "val falls to 1.41 at step 152 then rises to 1.53 at the end while the train loss goes to 0.008; "
        "final val 1.96x the 0.783 of the twin on the 30 records a class with the same label noise"),
}


def faults() -> list[Spec]:
    return [dataclasses.replace(spec, description=f"{spec.description} (checked: {CHECKED[spec.name]})")
            for spec in _faults()]


def _faults() -> list[Spec]:
    everywhere = None
    return [
        run("mos_lr_too_high_sgd", "mixture of softmaxes, SGD Nesterov momentum 0.9 at lr 1.5 (5x the working lr: "
            "a lr scaled linearly for a batch of 500 kept at batches of 100), multi-step decay, 10 epochs",
            sgd(1.5), 10, expect={"lr_too_high": everywhere}, forbid=["lr_too_low"],
            allow=["loss_spike", "underfitting", "underperforming_classes", "no_better_than_baseline",
                   "best_epoch_not_last", "update_ratio_out_of_band", "exploding_gradients", "divergence"]),
        run("mos_decayed_too_early_sgd", "mixture of softmaxes, SGD Nesterov 0.3, StepLR with step_size 2 epochs "
            "(meant 20, for a 100-epoch job) and gamma 0.1: 0.03 from step 121, 3e-3 from 241, 10 epochs", sgd(0.3),
            10, scheduler=lambda optimizer, total, per_epoch: (
                torch.optim.lr_scheduler.StepLR(optimizer, 2, 0.1), "epoch"),
            expect={"decayed_too_early": [100, 300]}, forbid=["lr_too_high"],
            allow=["underfitting", "lr_too_low", "train_longer", "update_ratio_out_of_band",
                   "underperforming_classes"]),
        run("mos_bad_initial_loss_scaled_head", "mixture of softmaxes whose shared output layer was multiplied by "
            "30 and its biases drawn in +-15 at init (an init written for unnormalised logits), SGD Nesterov 0.3, "
            "multi-step decay, 10 epochs",
            sgd(0.3), 10, prepare=scale_head(30.0), expect={"bad_initial_loss": [1, 1]},
            allow=["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "underperforming_classes",
                   "underfitting", "train_longer"]),
        run("mos_class_imbalance_long_tail", "mixture of softmaxes on a long-tailed collection (150 records for "
            "the first class down to 1 for the last, x0.972 a class; val a third of those, at least 1), SGD "
            "Nesterov 0.3, multi-step decay, 10 epochs", sgd(0.3), 10,
            data=lambda: records(per_class=LONG_TAIL, val_per_class=tuple(max(1, n // 3) for n in LONG_TAIL)),
            expect={"class_imbalance": everywhere, "underperforming_classes": everywhere},
            allow=["overfitting", "best_epoch_not_last"]),
        run("mos_no_better_than_baseline_shuffled", "mixture of softmaxes trained on labels permuted against their "
            "records (the label table joined on the wrong key; val labels right), SGD Nesterov 0.3, multi-step "
            "decay, 10 epochs", sgd(0.3), 10, data=lambda: records(shuffle_train_labels=True),
            expect={"no_better_than_baseline": everywhere},
            allow=["underfitting", "underperforming_classes", "overfitting", "best_epoch_not_last"]),
        run("mos_overfitting_few_records", "mixture of softmaxes (trunk width 256) on 4 training records a class "
            "(a pilot extract labelled in a hurry: 25 % of its labels wrong), NAdam 1e-2 at a constant lr, 80 epochs "
            "(640 steps)", nadam(1e-2), 80, model=mos(hidden=256), scheduler=None,
            data=lambda: records(per_class=(4,) * CLASSES, label_noise=0.25),
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band", "underperforming_classes"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    twins = {spec.name: healthy["mos_healthy_sgd_multistep"] for spec in faults()}
    twins["mos_class_imbalance_long_tail"] = run(
        "mos_twin_balanced_train_long_tail_val", "mixture of softmaxes on balanced training classes (30 a class), "
        "val in the long tail's shares, SGD Nesterov 0.3, multi-step decay, 10 epochs", sgd(0.3), 10,
        data=lambda: records(val_per_class=tuple(max(1, n // 3) for n in LONG_TAIL)))
    twins["mos_overfitting_few_records"] = run(
        "mos_twin_width256_full", "mixture of softmaxes (trunk width 256) on the 30 records a class (25 % of the "
        "labels wrong), NAdam 1e-2 at a constant lr, 10 epochs", nadam(1e-2), 10, model=mos(hidden=256),
        scheduler=None, data=lambda: records(label_noise=0.25))
    return twins
