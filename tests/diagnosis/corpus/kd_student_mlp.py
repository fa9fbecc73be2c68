"""Knowledge distillation: a small MLP student learning 10 classes from a teacher trained in the module (KL at temperature 3 plus cross-entropy), QHAdam, per-epoch warm-up then cosine to 20 %, every step from step 40 (eighth hold-out).

Records made here: 16 standard-normal features; a fixed random two-layer
tanh network (16-32-10, weights N(0, 1.5²/fan-in)) scores 10 classes, a
record's class is the best score after Gumbel noise (scale 0.3), and 10 %
of the labels are then redrawn at random. The teacher, trained here once
per process: an MLP 16-256-256-10 (ReLU) fitted with Adam 1e-3 for 12
epochs on 8,000 records of its own. The student sees 2,400 transfer and
600 validation records (batches of 64, 38 steps per epoch) with the
teacher's logits for each; it is an MLP 16-64-64-10 (ReLU) unless said.
The loss, in training and validation: 0.7 · T² · KL(teacher ‖ student) at
T = 3 plus 0.3 · cross-entropy with the labels (Hinton et al. 2015), so a
guess costs about 0.3 ln 10 plus the teacher's spread, not ln 10. The
teacher's logits ride on the student's output (``logits.teacher_logits``)
because the corpus loop calls ``loss(output, labels)``. QHAdam (written
here, Ma & Yarats 2019: quasi-hyperbolic momentum, ν = (0.7, 1.0), β =
(0.995, 0.999)) and SGD with momentum 0.9. The schedule steps once per
epoch: a linear warm-up over the first 2 epochs (50 % then 100 %), then
cosine from 100 % to 20 % at the last epoch. Logged every step from step
40 (a callback attached once the teacher's logits were cached): the
loss, training accuracy, lr and gradient norm of the step, per-layer
statistics every 20 steps; val loss, accuracy and confusion counts after
every epoch. Task: none recorded (``unknown``): the distillation loss is
not a C-class cross-entropy, so its author says nothing about its scale.

Eighth hold-out (issue #12); see ``seg_convnet_regions.py``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "kd_student_mlp"
LOGGING = Logging(start=40, layer_every=20)
FEATURES, CLASSES, TEMPERATURE, ALPHA = 16, 10, 3.0, 0.7


def labelled_records(count: int, rng: np.random.Generator, first: np.ndarray, second: np.ndarray):
    x = rng.normal(size=(count, FEATURES))
    scores = np.tanh(x @ first) @ second + rng.gumbel(0, 0.3, (count, CLASSES))
    y = scores.argmax(1)
    redrawn = rng.random(count) < 0.1
    y[redrawn] = rng.integers(0, CLASSES, redrawn.sum())
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


@functools.lru_cache(maxsize=None)
def transfer_set(train: int = 2400, val: int = 600, seed: int = 47) -> Split:
    """x: (N, FEATURES + CLASSES), the features then the teacher's logits for them; y: (N,) labels."""
    rng = np.random.default_rng(seed)
    first = rng.normal(0, 1.5 / math.sqrt(FEATURES), (FEATURES, 32))
    second = rng.normal(0, 1.5 / math.sqrt(32), (32, CLASSES)) * 3
    teacher_x, teacher_y = labelled_records(8000, rng, first, second)
    x, y = labelled_records(train + val, rng, first, second)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        teacher = nn.Sequential(nn.Linear(FEATURES, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                nn.Linear(256, CLASSES))
        optimizer = torch.optim.Adam(teacher.parameters(), lr=1e-3)
        for _ in range(12):
            for index in torch.randperm(len(teacher_y)).split(128):
                loss = F.cross_entropy(teacher(teacher_x[index]), teacher_y[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            taught = torch.cat([x, teacher(x)], 1)
    return Split(taught[:train], y[:train], taught[train:], y[train:], CLASSES)


def small_transfer_set() -> Split:
    data = transfer_set()
    return Split(data.x_train[:120], data.y_train[:120], data.x_val, data.y_val, CLASSES)


def distillation_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    teacher = logits.teacher_logits
    soft = F.kl_div(F.log_softmax(logits / TEMPERATURE, 1), F.log_softmax(teacher / TEMPERATURE, 1),
                    reduction="batchmean", log_target=True)
    return alpha * TEMPERATURE ** 2 * soft + (1 - alpha) * F.cross_entropy(logits, labels)


class Student(nn.Module):
    """(B, FEATURES + CLASSES) → (B, CLASSES) logits carrying the teacher's (``teacher_logits``)."""

    def __init__(self, hidden: tuple[int, ...] = (64, 64), activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip((FEATURES, *hidden[:-1]), hidden):
            layers += [nn.Linear(fan_in, fan_out), activation()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden[-1] if hidden else FEATURES, CLASSES))

    def forward(self, records: torch.Tensor) -> torch.Tensor:
        logits = self.net(records[:, :FEATURES])
        logits.teacher_logits = records[:, FEATURES:]
        return logits


def student(**kwargs):
    return lambda data: Student(**kwargs)


class QHAdam(torch.optim.Optimizer):
    """QHAdam (Ma & Yarats 2019, "Quasi-hyperbolic momentum and Adam for deep learning"): with Adam's bias-corrected
    m̂ and v̂, w ← w - lr · ((1-ν₁) g + ν₁ m̂) / (√((1-ν₂) g² + ν₂ v̂) + ε)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.995, 0.999),
                 nus: tuple[float, float] = (0.7, 1.0), eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": betas, "nus": nus, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            (beta1, beta2), (nu1, nu2) = group["betas"], group["nus"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"], state["m"], state["v"] = 0, torch.zeros_like(param), torch.zeros_like(param)
                state["step"] += 1
                grad, step = param.grad, state["step"]
                state["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                m_hat = state["m"] / (1 - beta1 ** step)
                v_hat = state["v"] / (1 - beta2 ** step)
                numerator = (1 - nu1) * grad + nu1 * m_hat
                denominator = ((1 - nu2) * grad * grad + nu2 * v_hat).sqrt().add_(group["eps"])
                param.addcdiv_(numerator, denominator, value=-group["lr"])


def qhadam(lr: float):
    return lambda model: QHAdam(model.parameters(), lr=lr)


def momentum_sgd(lr: float):
    return lambda model: torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def epoch_warmup_cosine(warmup_epochs: int = 2, floor: float = 0.2):
    """A LambdaLR stepped per epoch: (e+1)/warmup for the first epochs, then cosine from 1 to ``floor``."""
    def build(optimizer, total, per_epoch):
        epochs = max(1, round(total / per_epoch))

        def multiplier(epoch: int) -> float:
            if epoch < warmup_epochs:
                return (epoch + 1) / warmup_epochs
            progress = (epoch - warmup_epochs) / max(1, epochs - 1 - warmup_epochs)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier), "epoch"
    return build


def sharp_teacher_batch(at: int, factor: float = 30.0):
    """At step ``at`` the batch's teacher logits come from a shard cached by another script without the
    temperature folded back (× ``factor``): nearly one-hot soft targets for one batch."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if step != at:
            return x, y
        x = x.clone()
        x[:, FEATURES:] *= factor
        return x, y
    return hook


def overflowed_teacher_batch(at: int):
    """At step ``at`` one batch's teacher logits come from a shard cached in float16, where a logit above 65,504
    overflowed to inf: that batch's loss and gradients are NaN, and so is every weight after the step."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if step != at:
            return x, y
        x = x.clone()
        x[0, FEATURES] = math.inf
        return x, y
    return hook


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="classification", task_kind="unknown", logging=LOGGING, batch_size=64,
                    probe_layout=True, loss=distillation_loss, scheduler=epoch_warmup_cosine())
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", transfer_set), settings.pop("model", student()), optimizer,
                epochs, **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("kd_healthy_qhadam", "distilled MLP student 16-64-64-10, QHAdam 3e-3, per-epoch warm-up (2 epochs) then "
            "cosine to 20 %, 20 epochs (760 steps)", qhadam(3e-3), 20, healthy=True),
        run("kd_healthy_qhadam_seed1", "distilled MLP student, QHAdam 3e-3, warm-up then cosine to 20 %, 20 epochs, "
            "seed 1", qhadam(3e-3), 20, seed=1, healthy=True),
        run("kd_healthy_sgd", "distilled MLP student, SGD momentum 0.9 lr 0.05, warm-up then cosine to 20 %, 20 "
            "epochs", momentum_sgd(0.05), 20, healthy=True),
        run("kd_healthy_qhadam_wide_long", "distilled MLP student 16-128-128-10, QHAdam 1.5e-3, warm-up then cosine "
            "to 20 %, 30 epochs (1,140 steps)", qhadam(1.5e-3), 30, model=student(hidden=(128, 128)), healthy=True),
        run("kd_lr_too_high_qhadam", "distilled MLP student, QHAdam 0.1 (33x the working lr), warm-up then cosine "
            "to 20 %, 20 epochs", qhadam(0.1), 20,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["update_ratio_out_of_band", "best_epoch_not_last", "underfitting", "loss_spike", "dead_layers",
                   "overfitting"]),
        run("kd_lr_too_low_sgd", "distilled MLP student, SGD momentum 0.9 lr 1e-3 (1/50 of the working lr), "
            "warm-up then cosine to 20 %, 20 epochs", momentum_sgd(1e-3), 20,
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band", "vanishing_gradients"]),
        run("kd_overfitting_small_transfer_set", "MLP student 16-256-256-10 on the 120 records that carry human "
            "labels (2 steps per epoch) with the distillation weight left at the config's default 0 (plain "
            "cross-entropy with the noisy labels, training and validation), QHAdam 1e-3, warm-up then cosine to "
            "20 %, 150 epochs", qhadam(1e-3), 150, data=small_transfer_set, model=student(hidden=(256, 256)),
            loss=functools.partial(distillation_loss, alpha=0.0),
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band"]),
        run("kd_underfitting_linear_student", "a linear student (hidden layers left out of the config), which "
            "cannot express the teacher's tanh boundaries, QHAdam 3e-3, 20 epochs", qhadam(3e-3), 20,
            model=student(hidden=()),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"]),
        run("kd_train_longer_three_epochs", "distilled MLP student, QHAdam 1e-3, stopped after 3 epochs (114 "
            "steps; logged from step 40)", qhadam(1e-3), 3,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underfitting"]),
        run("kd_vanishing_gradients_sigmoid_student", "distilled student of 10 sigmoid layers of 64 (a deeper "
            "student with the activation of an old config), QHAdam 3e-3, 20 epochs", qhadam(3e-3), 20,
            model=student(hidden=(64,) * 10, activation=nn.Sigmoid),
            expect={"vanishing_gradients": everywhere},
            allow=["underfitting", "update_ratio_out_of_band", "lr_too_low", "train_longer", "dead_layers",
                   "no_better_than_baseline", "best_epoch_not_last"]),
        run("kd_divergence_fp16_teacher_shard", "distilled MLP student, QHAdam 3e-3, 20 epochs; at step 500 a "
            "batch's teacher logits come from a shard cached in float16 where one logit overflowed to inf: the "
            "loss, the gradients and then every weight are NaN from that step on", qhadam(3e-3), 20,
            batch_hook=overflowed_teacher_batch(500),
            expect={"divergence": [500, 760]}, allow=["exploding_gradients", "lr_too_high"] + [
                "dead_layers", "loss_spike", "update_ratio_out_of_band", "no_better_than_baseline",
                "best_epoch_not_last", "underperforming_classes", "underfitting"]),
        run("kd_loss_spike_sharp_teacher_batch", "distilled MLP student, QHAdam 3e-3, 20 epochs; at step 400 one "
            "batch's teacher logits come from a shard cached without the temperature folded back (x30): "
            "nearly one-hot soft targets for that batch", qhadam(3e-3), 20, batch_hook=sharp_teacher_batch(400),
            expect={"loss_spike": [398, 410]}, forbid=["divergence"], allow=["exploding_gradients"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    base, sgd_base = healthy["kd_healthy_qhadam"], healthy["kd_healthy_sgd"]
    return {
        "kd_lr_too_high_qhadam": base,
        "kd_lr_too_low_sgd": sgd_base,
        "kd_overfitting_small_transfer_set": base,  # all 2,400 transfer records, 64-wide, distilled
        "kd_underfitting_linear_student": base,
        "kd_train_longer_three_epochs": run("kd_twin_qhadam_1e-3", "distilled MLP student, QHAdam 1e-3, warm-up then "
                                            "cosine to 20 %, 20 epochs", qhadam(1e-3), 20),
        "kd_vanishing_gradients_sigmoid_student": base,
        "kd_divergence_fp16_teacher_shard": base,
        "kd_loss_spike_sharp_teacher_batch": base,
    }
