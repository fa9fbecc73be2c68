"""A small (2+1)D convolutional network (R(2+1)D, Tran et al. 2018: each 3-D convolution factored into a spatial 1×3×3 and a temporal 3×1×1 one, BatchNorm3d and ReLU after each) classifying synthetic 8-frame video clips of a moving blob into 8 actions (4 directions × 2 speeds), cross-entropy, SGD with Nesterov momentum and warm-up then cosine, Adam with one-cycle or RAdam at a constant lr, logged every step or as 4-step window means (eighteenth hold-out).

Clips made here: 8 frames of 12×12 pixels, one channel. A Gaussian blob (σ
1.0-1.6 pixels) moves in a straight line, right, down, left or up, at 0.5
or 1.0 pixel a frame (class = direction + 4 × fast), its path centred at a
random place in the frame; a second, still blob (a distractor, amplitude
0.8) sits at a random place in every frame, and white noise (σ 0.35) is
added to every pixel, so that no single frame tells the class. 1,800
training and 600 validation clips, the classes uniform; batches of 36 (50
steps an epoch). The model: two (2+1)D blocks (1 → 8 → 16 channels), a
1×2×2 max-pool between them, global average pooling over time and space and
a linear head over the 8 actions (about 2,500 parameters). SGD (lr 0.1,
Nesterov momentum 0.9, weight decay 1e-4) with 10 % linear warm-up then
cosine to zero, Adam (peak 5e-3) with one-cycle or RAdam (1e-2) at a
constant lr; 8 epochs (400 steps; the RAdam run 12 epochs, 600 steps).
Logged every step (the RAdam run as the mean of every 4 steps), per-layer
statistics every 8 steps, val after every epoch (at a constant lr the
BatchNorm statistics make the val loss noisy: 1.13 at step 350 between
0.55 and 0.21). Task: classification, C = 8. The BatchNorm net shrugs off lr
faults, so this family has none: SGD at lr 2.0 (20x) ended at val 0.118
against the working run's 0.078, Adam one-cycle to 0.2 (40x) at 0.046, and
SGD at 0.8 without warm-up at 0.066 against 0.058 with it.

Eighteenth hold-out: written on 2026-12-01 by an engineer who changes no rule
and never read them; kept out of ``FAMILY_MODULES`` and of
``tests/data/corpus`` (see ``tests/diagnosis/make_heldout.py heldout18``). Labels
come from how each run was built, checked against a healthy twin with
``tests/diagnosis/heldout_twins.py --family r2plus1d_motion_clips``.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.corpus.common import make, one_cycle, radam, warmup_cosine
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "r2plus1d_motion_clips"
LOGGING = Logging(layer_every=8)
FRAMES, SIDE, ACTIONS = 8, 12, 8
DIRECTIONS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])  # (x, y): right, down, left, up
SPEEDS = (0.5, 1.0)


@functools.lru_cache(maxsize=None)
def clips(per_action: tuple[int, ...] = (225,) * ACTIONS, val_per_action: tuple[int, ...] = (75,) * ACTIONS,
          shuffle_train_labels: bool = False, seed: int = 180) -> Split:
    """``per_action[k]`` training and ``val_per_action[k]`` validation clips of action k; with
    ``shuffle_train_labels`` the training actions are permuted against their clips."""
    rng = np.random.default_rng(seed)
    grid = np.arange(SIDE, dtype=float)

    def blob(cx: np.ndarray, cy: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        return np.exp(-((grid - cx[..., None, None]) ** 2 + (grid[:, None] - cy[..., None, None]) ** 2)
                      / (2 * sigma[..., None, None] ** 2))

    def draw(counts: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.repeat(np.arange(ACTIONS), counts))
        n = len(y)
        velocity = DIRECTIONS[y % 4] * np.where(y >= 4, SPEEDS[1], SPEEDS[0])[:, None]
        centre = rng.uniform(3.0, SIDE - 4.0, (n, 2))
        time = np.arange(FRAMES) - (FRAMES - 1) / 2
        path = centre[:, None, :] + time[None, :, None] * velocity[:, None, :]  # (n, T, 2)
        sigma = np.repeat(rng.uniform(1.0, 1.6, (n, 1)), FRAMES, axis=1)
        moving = blob(path[..., 0], path[..., 1], sigma)  # (n, T, S, S)
        still = rng.uniform(1.0, SIDE - 2.0, (n, 2))
        distractor = 0.8 * blob(still[:, 0], still[:, 1], np.full(n, 1.2))[:, None]
        video = moving + distractor + rng.normal(0, 0.35, moving.shape)
        return video[:, None].astype(np.float32), y  # (n, 1, T, S, S)

    (x_train, y_train), (x_val, y_val) = draw(per_action), draw(val_per_action)
    if shuffle_train_labels:
        y_train = rng.permutation(y_train)
    return Split(torch.tensor(x_train), torch.tensor(y_train, dtype=torch.long), torch.tensor(x_val),
                 torch.tensor(y_val, dtype=torch.long), ACTIONS)


class R2Plus1D(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()

        def block(inputs: int, outputs: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv3d(inputs, outputs, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(outputs), nn.ReLU(),
                nn.Conv3d(outputs, outputs, (3, 1, 1), padding=(1, 0, 0)), nn.BatchNorm3d(outputs), nn.ReLU())

        self.block1 = block(1, width)
        self.pool = nn.MaxPool3d((1, 2, 2))
        self.block2 = block(width, 2 * width)
        self.head = nn.Linear(2 * width, ACTIONS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.block2(self.pool(self.block1(x)))
        return self.head(hidden.mean((2, 3, 4)))


def r21d(**kwargs):
    return lambda data: R2Plus1D(**kwargs)


def nesterov(lr: float):
    return make(torch.optim.SGD, lr, momentum=0.9, nesterov=True, weight_decay=1e-4)


def adam(lr: float):
    return make(torch.optim.Adam, lr)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", logging=LOGGING, batch_size=36, probe_layout=True,
                    scheduler=warmup_cosine(0.1))
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", clips), settings.pop("model", r21d()), optimizer, epochs,
                **settings)


def specs() -> list[Spec]:
    return [
        run("clips_healthy_nesterov_warmup_cosine", "R(2+1)D net (two factored spatial/temporal conv blocks, "
            "BatchNorm3d, 8 and 16 channels) classifying 8-frame 12x12 clips of a moving blob into 8 actions, SGD "
            "Nesterov 0.9 lr 0.1 wd 1e-4, 10 % warm-up then cosine to zero, 8 epochs (400 steps)", nesterov(0.1), 8,
            healthy=True),
        run("clips_healthy_nesterov_warmup_cosine_seed1", "motion-clip R(2+1)D, SGD Nesterov lr 0.1, warm-up + "
            "cosine, 8 epochs, seed 1", nesterov(0.1), 8, seed=1, healthy=True),
        run("clips_healthy_adam_onecycle", "motion-clip R(2+1)D, Adam one-cycle to a peak of 5e-3, 8 epochs, seed 2",
            adam(5e-3), 8, scheduler=one_cycle(), seed=2, healthy=True),
        run("clips_healthy_radam_window_means", "motion-clip R(2+1)D, RAdam 1e-2 at a constant lr, 12 epochs (600 "
            "steps), seed 3, logged as the mean of every 4 steps", radam(1e-2), 12, scheduler=None, seed=3,
            logging=Logging(every=4, mean=True, layer_every=8), healthy=True),
    ] + faults()


# What each fault run's twin check measured (tests/diagnosis/heldout_twins.py), quoted in its description.
CHECKED = {
    "clips_train_longer_stopped": (
        "val falls at every evaluation, 2.09 at step 10 to 0.780 at step 150 (the last, its best), the train loss "
        "from 2.11 to 0.76; final val 0.780 vs 0.230 for the twin that runs the 400 steps, 3.4x; val accuracy "
        "0.703 vs 0.980"),
    "clips_class_imbalance_skewed": (
        "val recall 1.00 on the 4 most frequent actions, 0.67 on the fifth and 0.00 on the 3 rarest vs 0.95-1.00 "
        "on every action for the twin trained on 225 clips an action; val accuracy 0.945 against a majority share "
        "of 0.456"),
    "clips_no_better_than_baseline_shuffled": (
        "val accuracy 0.130 against a majority share of 0.125 (twin 0.980); final val 2.082, about ln 8 = 2.079; "
        "26.8x the twin's 0.078"),
    "clips_loss_spike_reversed_shard": (
        "train loss 13.6 at step 200 and 4.0 at step 201 against 0.11-0.26 over steps 195-199; val 15.0 at step "
        "200 vs 0.78 at step 150, back to 0.67 at step 250; final val 0.159 vs twin 0.078, 2.0x; gradient norm "
        "peak 15.1x its median (twin 3.2x)"),
    "clips_underfitting_width2": (
        "final val 1.258 vs twin 0.078, 16x; val accuracy 0.495 vs 0.980; the train loss's last 20 steps average "
        "1.29 against a final val of 1.26 (train and val close)"),
    "clips_bad_initial_loss_scaled_head": (
        "first loss 15.2 against ln 8 = 2.08 (twin 2.05); gradient norm peak 29.5x its median (twin 3.2x); the "
        "model recovers: final val 0.051 vs twin 0.078"),
}


def faults() -> list[Spec]:
    return [dataclasses.replace(spec, description=f"{spec.description} (checked: {CHECKED[spec.name]})")
            for spec in _faults()]


def reversed_frames(at: int, length: int):
    """The batches of ``length`` steps from ``at`` with their frames in reverse order (a shard decoded
    back to front): every clip then moves the other way, its label unchanged."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if at <= step < at + length:
            return x.flip(2), y
        return x, y
    return hook


def planned_one_cycle(planned: int):
    """One-cycle over ``planned`` steps, whatever the run's own length (a run cut short)."""
    def make_scheduler(optimizer, total, per_epoch):
        return one_cycle()(optimizer, planned, per_epoch)
    return make_scheduler


def scale_head(factor: float, bias: float):
    """The head's weights x ``factor`` and its biases drawn in +-``bias`` at init (an init far too large)."""
    def prepare(model: nn.Module) -> None:
        with torch.no_grad():
            model.head.weight.mul_(factor)
            model.head.bias.uniform_(-bias, bias)
    return prepare


SKEWED = (600, 330, 180, 100, 55, 30, 16, 9)  # x0.55 an action


def _faults() -> list[Spec]:
    everywhere = None
    return [
        run("clips_train_longer_stopped", "motion-clip R(2+1)D, Adam one-cycle to a peak of 5e-3 planned for 8 "
            "epochs (400 steps), the job stopped after 3 epochs (150 steps: a wall-clock limit), val every 10 steps",
            adam(5e-3), 3, scheduler=planned_one_cycle(400), evals_per_epoch=5, seed=2,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underfitting", "underperforming_classes"]),
        run("clips_class_imbalance_skewed", "motion-clip R(2+1)D on a skewed collection (600 clips of the first "
            "action down to 9 of the last, x0.55 an action; val a third of those), SGD Nesterov lr 0.1, warm-up + "
            "cosine, 8 epochs", nesterov(0.1), 8,
            data=lambda: clips(per_action=SKEWED, val_per_action=tuple(max(3, n // 3) for n in SKEWED)),
            expect={"class_imbalance": everywhere, "underperforming_classes": everywhere},
            allow=["overfitting", "best_epoch_not_last"]),
        run("clips_no_better_than_baseline_shuffled", "motion-clip R(2+1)D trained on actions permuted against "
            "their clips (labels joined on the wrong key; val labels right), SGD Nesterov lr 0.1, warm-up + "
            "cosine, 8 epochs", nesterov(0.1), 8, data=lambda: clips(shuffle_train_labels=True),
            expect={"no_better_than_baseline": everywhere},
            allow=["underfitting", "underperforming_classes", "overfitting", "best_epoch_not_last"]),
        run("clips_loss_spike_reversed_shard", "motion-clip R(2+1)D, SGD Nesterov lr 0.1, warm-up + cosine, 8 "
            "epochs, the batches of steps 200 and 201 decoded with their frames in reverse order (every clip moving "
            "the other way, its label unchanged)", nesterov(0.1), 8, batch_hook=reversed_frames(200, 2),
            expect={"loss_spike": [198, 230]}, forbid=["divergence"],
            allow=["exploding_gradients", "update_ratio_out_of_band", "best_epoch_not_last"]),
        run("clips_underfitting_width2", "motion-clip R(2+1)D with 2 and 4 channels instead of 8 and 16 (a width "
            "multiplier of 0.25 meant for a net 4x wider: about 200 parameters), SGD Nesterov lr 0.1, warm-up + "
            "cosine, 8 epochs", nesterov(0.1), 8, model=r21d(width=2),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"],
            allow=["underperforming_classes", "train_longer"]),
        run("clips_bad_initial_loss_scaled_head", "motion-clip R(2+1)D whose head was multiplied by 60 and its "
            "biases drawn in +-15 at init, SGD Nesterov lr 0.1, warm-up + cosine, 8 epochs", nesterov(0.1), 8,
            prepare=scale_head(60.0, 15.0), expect={"bad_initial_loss": [1, 1]},
            allow=["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "underperforming_classes",
                   "underfitting", "train_longer", "best_epoch_not_last"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    twins = {spec.name: healthy["clips_healthy_nesterov_warmup_cosine"] for spec in faults()}
    twins["clips_train_longer_stopped"] = healthy["clips_healthy_adam_onecycle"]
    return twins
