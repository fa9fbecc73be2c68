"""A dilated residual 1-D ConvNet (TCN) classifying synthetic tone recordings into 32 classes, LAMB, every step (fifth hold-out).

Signals made here: 96 samples each; class c is a tone of base frequency
3 + 1.2 c cycles per window with a class-specific second partial (1.5, 2 or
2.5 times the base, relative amplitude 0.3-0.8) and a class-specific chirp
(the frequency drifting by up to ±0.8 cycles over the window); each
recording jitters the frequencies by N(0, 0.2) cycles, draws random phases
and a gain in [0.5, 1.5], and adds white noise (σ = 0.4). 40 training and
12 validation recordings per class, batches of 64 (20 steps per epoch).
A temporal ConvNet: a stem Conv1d(1→C, 7), four residual blocks of two
dilated convolutions (kernel 3, dilation 1, 2, 4, 8, ReLU) with C = 24
channels, global average pooling, a linear head; cross-entropy. LAMB
(written here, You et al. 2020: Adam's update rescaled per tensor by
‖w‖/‖u‖, so every tensor moves by lr × its norm; decoupled weight decay
off biases) and SGD with momentum;
warm-up + linear decay, one-cycle, multi-step, constant and cosine
schedules. Logged as
the probe does: every step's loss, training accuracy, lr and gradient
norm, per-layer statistics every 10 steps, val loss, accuracy and
confusion counts every 40 steps. Task: classification with C = 32.

Added with ``ssm_lm_brackets`` and ``contrastive_views`` as a fifth held-out
test (issue #12): written by an engineer who changes no rule, labelled
from how each run was built, each fault checked against its healthy twin
(``tests/diagnosis/heldout_twins.py``), and committed before any of these
runs was diagnosed. The runs are stored in ``tests/data/heldout5`` (not the
tuning corpus), run.json carrying the probe's parameter layout, and this
module is not in ``FAMILY_MODULES``: ``python tests/diagnosis/make_heldout.py heldout5``
trains them.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.corpus.common import make, warmup_linear
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "tcn_tones"
LOGGING = Logging(layer_every=10)
EVAL_EVERY = 40
CLASSES, LENGTH, NOISE = 32, 96, 0.4


@functools.lru_cache(maxsize=None)
def tones(train_per_class: int = 40, val_per_class: int = 12, long_tail: bool = False,
          twin_pair: bool = False, misaligned_labels: bool = False, seed: int = 91) -> Split:
    """Recordings (N, 1, LENGTH) float32 and classes (N,).

    ``long_tail``: class k keeps a share ∝ 0.85^k of the recordings (train and val; at least 2 and 2);
    ``twin_pair``: classes 6 and 7 and classes 20 and 21 drawn from the same tone (balanced; two pairs that
    no model can tell apart); ``misaligned_labels``: the training labels shuffled apart from their recordings
    (a loader bug; val intact).
    """
    rng = np.random.default_rng(seed)
    base = 3.0 + 1.2 * np.arange(CLASSES)
    ratio = np.array([1.5, 2.0, 2.5])[np.arange(CLASSES) % 3]
    partial = rng.uniform(0.3, 0.8, size=CLASSES)
    chirp = rng.uniform(-0.8, 0.8, size=CLASSES)
    source = np.arange(CLASSES)
    if twin_pair:
        source[7], source[21] = 6, 20
    if long_tail:
        share = 0.85 ** np.arange(CLASSES)
        train_counts = np.maximum(2, np.round(3 * train_per_class * share)).astype(int)
        val_counts = np.maximum(2, np.round(3 * val_per_class * share)).astype(int)
    else:
        train_counts, val_counts = np.full(CLASSES, train_per_class), np.full(CLASSES, val_per_class)
    t = np.arange(LENGTH) / LENGTH

    def draw(counts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        labels = np.repeat(np.arange(CLASSES), counts)
        kind = source[labels]
        n = len(labels)
        f1 = base[kind] + rng.normal(0, 0.2, n)
        drift = chirp[kind]
        phase1, phase2 = rng.uniform(0, 2 * np.pi, (2, n))
        gain = rng.uniform(0.5, 1.5, n)
        cycles = f1[:, None] * t + 0.5 * drift[:, None] * t ** 2
        wave = (np.sin(2 * np.pi * cycles + phase1[:, None])
                + partial[kind][:, None] * np.sin(2 * np.pi * ratio[kind][:, None] * cycles + phase2[:, None]))
        signal = gain[:, None] * wave + NOISE * rng.normal(size=(n, LENGTH))
        return torch.tensor(signal[:, None, :], dtype=torch.float32), torch.tensor(labels)

    x_train, y_train = draw(train_counts)
    x_val, y_val = draw(val_counts)
    if misaligned_labels:
        y_train = y_train[torch.tensor(rng.permutation(len(y_train)))]
    return Split(x_train, y_train, x_val, y_val, CLASSES)


class Block(nn.Module):
    """x ← x + ReLU(conv(ReLU(conv(x)))), dilated, same length: (B, C, T) → (B, C, T)."""

    def __init__(self, channels: int, dilation: int, activation: type[nn.Module] = nn.ReLU, residual: bool = True):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.activation = activation()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.activation(self.conv2(self.activation(self.conv1(x))))
        return x + update if self.residual else update


class TCN(nn.Module):
    """(B, 1, T) recordings → (B, classes) logits."""

    def __init__(self, classes: int = CLASSES, channels: int = 24, depth: int = 4,
                 activation: type[nn.Module] = nn.ReLU, residual: bool = True):
        super().__init__()
        self.stem = nn.Conv1d(1, channels, 7, padding=3)
        self.blocks = nn.ModuleList(Block(channels, 2 ** (i % 4), activation, residual) for i in range(depth))
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.stem(x))
        for block in self.blocks:
            hidden = block(hidden)
        return self.head(hidden.mean(-1))


def tcn(**kwargs):
    return lambda data: TCN(data.num_classes, **kwargs)


class LAMB(torch.optim.Optimizer):
    """LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning"): Adam's bias-corrected update plus
    decoupled weight decay, u = m̂/(√v̂ + ε) + λw, applied as w ← w - lr · (‖w‖/‖u‖) · u (trust ratio 1 when
    either norm is 0)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"], state["m"], state["v"] = 0, torch.zeros_like(param), torch.zeros_like(param)
                state["step"] += 1
                state["m"].mul_(beta1).add_(param.grad, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(param.grad, param.grad, value=1 - beta2)
                m_hat = state["m"] / (1 - beta1 ** state["step"])
                v_hat = state["v"] / (1 - beta2 ** state["step"])
                update = m_hat / (v_hat.sqrt() + group["eps"]) + group["weight_decay"] * param
                weight_norm, update_norm = float(param.norm()), float(update.norm())
                trust = weight_norm / update_norm if weight_norm > 0 and update_norm > 0 else 1.0
                param.add_(update, alpha=-group["lr"] * trust)


def lamb(lr: float, weight_decay: float = 0.01):
    """LAMB with weight decay on the weight matrices and kernels only (biases exempt)."""
    def build(model: nn.Module) -> torch.optim.Optimizer:
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        groups = [{"params": [p for _, p in named if p.ndim >= 2], "weight_decay": weight_decay},
                  {"params": [p for _, p in named if p.ndim < 2], "weight_decay": 0.0}]
        return LAMB(groups, lr=lr)
    return build


def sgd_momentum(lr: float):
    return make(torch.optim.SGD, lr, momentum=0.9)


def one_cycle():
    """OneCycleLR peaking at the optimizer's lr at 30 % of the run (momentum cycled 0.85-0.95)."""
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=total + 1), "step")


def multistep(milestones: list[int], gamma: float = 0.1):
    """MultiStepLR: the lr × ``gamma`` after each epoch in ``milestones``."""
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma), "epoch")


def cosine():
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=0.0), "step")


def glitch(at: int, scale: float):
    """At step ``at`` one batch replaced by white noise of σ = ``scale`` (an unreadable file decoded as raw
    samples), the labels kept."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if step != at:
            return x, y
        return torch.randn(x.shape, generator=torch.Generator().manual_seed(at)) * scale, y
    return hook


def scaled_head(factor: float):
    """The head's weights × ``factor`` at init."""
    def prepare(model: nn.Module) -> None:
        with torch.no_grad():
            model.head.weight.mul_(factor)
    return prepare


def dead_blocks(model: nn.Module) -> None:
    """Every residual block's first convolution bias set to -50 at init: its ReLUs never fire (the blocks
    pass their input through unchanged and never learn)."""
    with torch.no_grad():
        for block in model.blocks:
            block.conv1.bias.fill_(-50.0)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", logging=LOGGING, eval_every=EVAL_EVERY,
                    batch_size=64, probe_layout=True)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", tones), settings.pop("model", tcn()), optimizer, epochs,
                **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("tcn_healthy_lamb_warmup_linear", "TCN, LAMB 1e-2 wd 0.01, 6% warm-up then linear decay to 0, 20 epochs",
            lamb(1e-2), 20, scheduler=warmup_linear(0.06), healthy=True),
        run("tcn_healthy_sgd_one_cycle", "TCN, SGD momentum 0.9, one-cycle to 0.05, 20 epochs", sgd_momentum(0.05), 20,
            scheduler=one_cycle(), healthy=True),
        run("tcn_healthy_sgd_multistep_seed1", "TCN, SGD momentum 0.9 lr 0.05, MultiStepLR x0.1 after epoch 14, "
            "20 epochs, seed 1", sgd_momentum(0.05), 20, scheduler=multistep([14]), seed=1, healthy=True),
        run("tcn_healthy_lamb_cosine_long", "TCN, LAMB 1e-2 wd 0.01, cosine to 0, 50 epochs (1,000 steps), val every "
            "100 steps", lamb(1e-2), 50, scheduler=cosine(), eval_every=100, healthy=True),
        run("tcn_lr_too_high_lamb", "TCN, LAMB 0.06 wd 0.01 constant (6x the working lr: every tensor moves by 6% "
            "of its norm a step), 20 epochs", lamb(0.06), 20,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "overfitting", "underfitting",
                   "exploding_gradients", "underperforming_classes", "no_better_than_baseline", "dead_layers",
                   "divergence"]),
        run("tcn_lr_too_low_lamb", "TCN, LAMB 1e-4 wd 0.01 (1/100 of the working lr), 6% warm-up then linear decay, "
            "20 epochs", lamb(1e-4), 20, scheduler=warmup_linear(0.06),
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band", "no_better_than_baseline",
                   "underperforming_classes"]),
        run("tcn_bad_initial_loss_scaled_head", "TCN, SGD momentum 0.9, one-cycle to 0.05, 20 epochs, the head's "
            "weights x40 at init", sgd_momentum(0.05), 20, scheduler=one_cycle(), prepare=scaled_head(40.0),
            expect={"bad_initial_loss": [1, 40]},
            allow=["underperforming_classes", "loss_spike", "exploding_gradients", "best_epoch_not_last",
                   "overfitting"]),
        run("tcn_class_imbalance_long_tail", "TCN, LAMB 1e-2 wd 0.01 warm-up + linear decay, 20 epochs, class k keeps "
            "a share 0.85^k of the recordings (120 down to 2 training recordings; val alike)", lamb(1e-2), 20,
            scheduler=warmup_linear(0.06), data=lambda: tones(long_tail=True),
            expect={"class_imbalance": everywhere, "underperforming_classes": everywhere},
            allow=["overfitting", "best_epoch_not_last", "no_better_than_baseline"]),
        run("tcn_underperforming_classes_twin_tones", "TCN, LAMB 1e-2 wd 0.01 warm-up + linear decay, 20 epochs, "
            "classes 7 and 21 drawn from the same tones as 6 and 20 (balanced; two pairs no model can separate)",
            lamb(1e-2), 20, scheduler=warmup_linear(0.06), data=lambda: tones(twin_pair=True),
            expect={"underperforming_classes": everywhere}, forbid=["class_imbalance"],
            allow=["overfitting", "best_epoch_not_last"]),
        run("tcn_no_better_than_baseline_misaligned_labels", "TCN, LAMB 1e-2 wd 0.01 warm-up + linear decay, "
            "20 epochs, the training labels shuffled apart from their recordings (a loader bug; val labels intact)",
            lamb(1e-2), 20, scheduler=warmup_linear(0.06), data=lambda: tones(misaligned_labels=True),
            expect={"no_better_than_baseline": everywhere},
            allow=["underfitting", "underperforming_classes", "overfitting", "best_epoch_not_last", "class_imbalance",
                   "train_longer", "lr_too_low"]),
        run("tcn_dead_layers_dead_relu", "TCN whose four residual blocks' first convolution bias is -50 at init "
            "(their ReLUs never fire), LAMB 1e-2 wd 0.01 warm-up + linear decay, 20 epochs", lamb(1e-2), 20,
            scheduler=warmup_linear(0.06), prepare=dead_blocks,
            expect={"dead_layers": everywhere},
            allow=["underfitting", "vanishing_gradients", "update_ratio_out_of_band", "underperforming_classes",
                   "no_better_than_baseline", "train_longer"]),
        run("tcn_loss_spike_glitch", "TCN, LAMB 1e-2 wd 0.01 constant, one batch replaced by white noise of σ 40 at "
            "step 300, "
            "20 epochs", lamb(1e-2), 20, batch_hook=glitch(300, 40.0),
            expect={"loss_spike": [295, 330], "exploding_gradients": [295, 305]}, forbid=["divergence"],
            allow=["best_epoch_not_last", "update_ratio_out_of_band", "train_longer"]),
        run("tcn_vanishing_gradients_deep_sigmoid", "TCN of 8 blocks with sigmoid activations and no residual sums, "
            "SGD momentum 0.9 lr 0.02 constant, 20 epochs", sgd_momentum(0.02), 20,
            model=tcn(depth=8, activation=nn.Sigmoid, residual=False),
            expect={"vanishing_gradients": everywhere},
            allow=["underfitting", "update_ratio_out_of_band", "lr_too_low", "train_longer", "dead_layers",
                   "no_better_than_baseline", "underperforming_classes"]),
        run("tcn_overfitting_few_recordings", "TCN of 64 channels on 3 recordings per class (96, 2 steps per epoch), "
            "LAMB 1e-2 wd 0.01 constant, 250 epochs, val every 20 steps", lamb(1e-2), 250,
            data=lambda: tones(train_per_class=3), model=tcn(channels=64), eval_every=20,
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band", "underperforming_classes"]),
        run("tcn_train_longer", "TCN, LAMB 1e-2 wd 0.01 constant, stopped after 3 of 20 epochs, val every 10 steps",
            lamb(1e-2), 3, eval_every=10,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underperforming_classes"]),
        run("tcn_underfitting_two_channels", "TCN of 2 channels (stem, blocks), LAMB 1e-2 wd 0.01 warm-up + linear "
            "decay, 20 epochs", lamb(1e-2), 20, scheduler=warmup_linear(0.06), model=tcn(channels=2),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"],
            allow=["underperforming_classes"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    warm = healthy["tcn_healthy_lamb_warmup_linear"]
    constant = run("tcn_twin_lamb_1e-2_constant", "TCN, LAMB 1e-2 wd 0.01 constant, 20 epochs", lamb(1e-2), 20)
    return {
        "tcn_lr_too_high_lamb": constant,
        "tcn_lr_too_low_lamb": warm,
        "tcn_bad_initial_loss_scaled_head": healthy["tcn_healthy_sgd_one_cycle"],
        "tcn_class_imbalance_long_tail": warm,
        "tcn_underperforming_classes_twin_tones": warm,
        "tcn_no_better_than_baseline_misaligned_labels": warm,
        "tcn_dead_layers_dead_relu": warm,
        "tcn_loss_spike_glitch": constant,
        "tcn_vanishing_gradients_deep_sigmoid": run("tcn_twin_deep_sigmoid_residual", "TCN of 8 blocks with sigmoid "
                                                    "activations and residual sums, SGD momentum 0.9 lr 0.02 "
                                                    "constant, 20 epochs", sgd_momentum(0.02), 20,
                                                    model=tcn(depth=8, activation=nn.Sigmoid)),
        "tcn_overfitting_few_recordings": run("tcn_twin_wide_all_recordings", "TCN of 64 channels on all the "
                                              "recordings, LAMB 1e-2 wd 0.01 constant, 20 epochs, val every 20 "
                                              "steps", lamb(1e-2), 20, model=tcn(channels=64), eval_every=20),
        "tcn_train_longer": constant,
        "tcn_underfitting_two_channels": warm,
    }
