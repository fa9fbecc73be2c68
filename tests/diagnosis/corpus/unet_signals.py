"""A 1-D U-Net restoring noisy, gapped synthetic signals with an L1 loss, logged every 10 steps from step 50 (third hold-out).

Signals of 64 samples made here: two sinusoids of random frequency, phase
and amplitude plus a piecewise-constant part (up to two random
steps); the input is the signal blurred by a Gaussian kernel (σ = 0.5
samples) with Gaussian noise (σ = 0.1, one fixed draw per signal: the
noise is part of the data set) and a gap of 8 samples set to 0 at a
random place, the target is the clean signal (restoration: deblurring,
denoising and inpainting). 2,000 signals, 70 % for training, batches of 64 (22 steps per
epoch). A small U-Net: two 1-D convolution blocks (16 and 32 channels,
GELU) with average-pool downsampling, a bottleneck, transposed-convolution
upsampling with skip connections concatenated, a 1×1 output convolution
added to the input (the network predicts the correction);
the loss is the mean absolute error (L1) over every sample. Adam with
AMSGrad, SGD with Nesterov momentum and AdamW; constant, exponential,
cosine and cosine-with-warm-restarts (SGDR) schedules. The loss, lr and gradient norm are logged every 10 steps as
that step's value from step 50 on (the tracker is attached once the first
batches have run), per-layer statistics every 25 steps, val loss every 100
steps. Task: regression (one run says nothing).

Added with ``lstm_lm_hmm`` and ``set_transformer_points`` as a third
held-out test (issue #12): written by an engineer who changes no rule,
labelled from how each run was built, each fault checked against its
healthy twin (``tests/diagnosis/heldout_twins.py``), and committed before
any of these runs was diagnosed. The runs are stored in
``tests/data/heldout3`` (not the tuning corpus ``tests/data/corpus``), and
this module is not in ``FAMILY_MODULES``: ``python
tests/diagnosis/make_heldout.py heldout3`` trains them.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.corpus.common import adamw as common_adamw
from tests.diagnosis.corpus.common import cosine_to_zero, make
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "unet_signals"
LOGGING = Logging(every=10, start=50, layer_every=25)
EVAL_EVERY = 100
LENGTH, GAP, NOISE, BLUR = 64, 8, 0.1, 0.5


@functools.lru_cache(maxsize=None)
def signals(n: int = 2000, train_limit: int | None = None, seed: int = 41) -> Split:
    """Noisy gapped inputs (N, 1, LENGTH) and clean targets (N, 1, LENGTH), float32; ``num_classes`` 1."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, LENGTH)[None, :]
    clean = np.zeros((n, LENGTH))
    for _ in range(2):
        frequency, phase = rng.uniform(1, 6, size=(n, 1)), rng.uniform(0, 2 * np.pi, size=(n, 1))
        clean += rng.uniform(0.3, 1.0, size=(n, 1)) * np.sin(2 * np.pi * frequency * t + phase)
    for _ in range(2):
        where, height = rng.uniform(0, 1, size=(n, 1)), rng.uniform(-1, 1, size=(n, 1))
        clean += np.where(t > where, height, 0.0) * (rng.random((n, 1)) < 0.7)
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / BLUR) ** 2)
    blurred = np.stack([np.convolve(np.pad(row, 6, mode="edge"), kernel / kernel.sum(), "valid") for row in clean])
    noisy = blurred + NOISE * rng.normal(size=clean.shape)
    start = rng.integers(0, LENGTH - GAP, size=n)
    gap = (np.arange(LENGTH)[None, :] >= start[:, None]) & (np.arange(LENGTH)[None, :] < start[:, None] + GAP)
    noisy[gap] = 0.0
    order = rng.permutation(n)
    cut = int(0.7 * n)
    train, val = order[:cut], order[cut:]
    if train_limit is not None:
        train = train[:train_limit]
    tensor = lambda values: torch.tensor(values[:, None, :], dtype=torch.float32)  # noqa: E731
    return Split(tensor(noisy[train]), tensor(clean[train]), tensor(noisy[val]), tensor(clean[val]), 1)


def l1(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over every sample of every signal."""
    return F.l1_loss(outputs, targets)


def block(inputs: int, outputs: int, kernel: int = 5, activation: type[nn.Module] = nn.GELU) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(inputs, outputs, kernel, padding=kernel // 2), activation(),
                         nn.Conv1d(outputs, outputs, kernel, padding=kernel // 2), activation())


class UNet1d(nn.Module):
    """(B, 1, 64) → (B, 1, 64): the input plus a correction from two downsampling blocks, a bottleneck and two
    upsampling blocks with skips."""

    def __init__(self, width: int = 12, skips: bool = True, bottleneck: int | None = None):
        super().__init__()
        self.skips = skips
        middle = bottleneck or 2 * width
        self.down1, self.down2 = block(1, width), block(width, 2 * width, 3)
        self.bottom = nn.Sequential(nn.Conv1d(2 * width, middle, 3, padding=1), nn.GELU())
        self.up2 = nn.ConvTranspose1d(middle, 2 * width, 2, stride=2)
        self.merge2 = block(4 * width if skips else 2 * width, 2 * width, 3)
        self.up1 = nn.ConvTranspose1d(2 * width, width, 2, stride=2)
        self.merge1 = block(2 * width if skips else width, width, 3)
        self.out = nn.Conv1d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.down1(x)  # (B, w, 64)
        second = self.down2(F.avg_pool1d(first, 2))  # (B, 2w, 32)
        hidden = self.up2(self.bottom(F.avg_pool1d(second, 2)))  # (B, 2w, 32)
        hidden = self.merge2(torch.cat([hidden, second], 1) if self.skips else hidden)
        hidden = self.up1(hidden)  # (B, w, 64)
        hidden = self.merge1(torch.cat([hidden, first], 1) if self.skips else hidden)
        return x + self.out(hidden)


class DeepConv(nn.Module):
    """A plain stack of ``depth`` same-size 1-D convolutions (no skips, no normalisation): (B, 1, 64) → (B, 1, 64)."""

    def __init__(self, width: int = 12, depth: int = 12, activation: type[nn.Module] = nn.Sigmoid):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(1, width, 5, padding=2), activation()]
        for _ in range(depth - 2):
            layers += [nn.Conv1d(width, width, 5, padding=2), activation()]
        layers.append(nn.Conv1d(width, 1, 5, padding=2))
        self.layers = nn.Sequential(*layers)
        if activation is nn.ReLU:  # He initialisation, the usual pairing with ReLU
            for layer in self.layers:
                if isinstance(layer, nn.Conv1d):
                    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                    nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def unet(width: int = 12, skips: bool = True, bottleneck: int | None = None):
    return lambda data: UNet1d(width, skips, bottleneck)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="regression", logging=LOGGING,
                    eval_every=EVAL_EVERY, loss=l1, batch_size=64, probe_layout=True)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", signals), settings.pop("model", unet()), optimizer, epochs,
                **settings)


def amsgrad(lr: float, **kwargs):
    return make(torch.optim.Adam, lr, amsgrad=True, **kwargs)


def nesterov(lr: float, **kwargs):
    return make(torch.optim.SGD, lr, momentum=0.9, nesterov=True, **kwargs)


def adamw(lr: float):
    return common_adamw(lr, weight_decay=0.05)


# ------------------------------------------------------------------ schedules (torch.optim.lr_scheduler)


def exponential(gamma: float, per: str = "epoch"):
    """ExponentialLR: lr × ``gamma`` every epoch (``per="step"``: every optimizer step)."""
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma), per)


def sgdr(cycles: int = 3):
    """CosineAnnealingWarmRestarts: cycles of doubling length (T_mult 2) filling the run, down to 1 % of the lr."""
    def build(optimizer, total, per_epoch):
        first = max(1, total // (2 ** cycles - 1))
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=first, T_mult=2, eta_min=0.01 * optimizer.param_groups[0]["lr"]), "step"
    return build


def glitch(at: int, scale: float):
    """One batch whose inputs are × ``scale`` at step ``at`` (a data-pipeline glitch: a sensor in other units)."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x * scale, y) if step == at else (x, y)
    return hook


def freeze_decoder(model: nn.Module) -> None:
    """requires_grad off for the last upsampling block and the output convolution (frozen by mistake)."""
    for module in (model.up1, model.merge1, model.out):
        for parameter in module.parameters():
            parameter.requires_grad_(False)


DIVERGED_ALLOW = ["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "lr_too_high", "dead_layers",
                  "best_epoch_not_last", "underfitting", "overfitting", "no_better_than_baseline"]


def growing(factor: float):
    """LambdaLR: the lr × ``factor`` every step (an lr range test left running)."""
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda taken: factor ** taken), "step")


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("unet_healthy_amsgrad_exponential", "U-Net, Adam (AMSGrad) 1e-2, ExponentialLR x0.93 per epoch, 30 epochs",
            amsgrad(1e-2), 30, scheduler=exponential(0.93), healthy=True),
        run("unet_healthy_amsgrad_cosine", "U-Net, Adam (AMSGrad) 1e-2, cosine to 0, 30 epochs", amsgrad(1e-2), 30,
            scheduler=cosine_to_zero(), healthy=True),
        run("unet_healthy_amsgrad_sgdr", "U-Net, Adam (AMSGrad) 1e-2, cosine warm restarts (3 cycles), 35 epochs",
            amsgrad(1e-2), 35, scheduler=sgdr(3), healthy=True),
        run("unet_healthy_adamw_constant_unknown_task", "U-Net, AdamW 1e-2 wd 0.05 constant, 30 epochs, no task kind",
            adamw(1e-2), 30, task_kind="unknown", healthy=True),
        run("unet_lr_too_high_amsgrad", "U-Net, Adam (AMSGrad) 0.1 constant (10x the working lr), 30 epochs",
            amsgrad(0.1), 30,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "overfitting", "underfitting",
                   "exploding_gradients", "dead_layers", "no_better_than_baseline"]),
        run("unet_lr_too_low_amsgrad", "U-Net, Adam (AMSGrad) 5e-5 constant (1/200 of the working lr), 30 epochs",
            amsgrad(5e-5), 30,
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        run("unet_decayed_too_early_per_step", "U-Net, Adam (AMSGrad) 1e-2, ExponentialLR x0.99 stepped every "
            "optimizer step instead of every epoch (lr /10 by step 230, /1000 by step 690), 30 epochs",
            amsgrad(1e-2), 30, scheduler=exponential(0.99, per="step"),
            expect={"decayed_too_early": [50, 400]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low"]),
        run("unet_divergence_lr_growth", "U-Net, SGD Nesterov momentum 0.9 lr 0.05 growing x1.03 per step (an lr "
            "range test left running), 10 epochs", nesterov(0.05), 10, scheduler=growing(1.03),
            expect={"divergence": everywhere}, allow=DIVERGED_ALLOW),
        run("unet_loss_spike_glitch", "U-Net, Adam (AMSGrad) 1e-2 constant, one batch with inputs x100 at step 400, "
            "30 epochs", amsgrad(1e-2), 30, batch_hook=glitch(400, 100.0),
            expect={"loss_spike": [395, 450], "exploding_gradients": [395, 410]}, forbid=["divergence"],
            allow=["best_epoch_not_last", "update_ratio_out_of_band", "train_longer", "lr_too_high"]),
        run("unet_underfitting_no_skips_one_channel", "U-Net without skip connections and a 1-channel bottleneck at "
            "length 16, Adam (AMSGrad) 1e-2 constant, 30 epochs", amsgrad(1e-2), 30,
            model=unet(skips=False, bottleneck=1),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"]),
        run("unet_train_longer", "U-Net, Adam (AMSGrad) 2e-3 constant, stopped after 6 of 30 epochs, val every 20 "
            "steps", amsgrad(2e-3), 6, eval_every=20,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low"]),
        run("unet_dead_layers_frozen_decoder", "U-Net whose last upsampling block and output convolution were frozen "
            "by mistake (requires_grad off), Adam (AMSGrad) 1e-2 constant, 30 epochs", amsgrad(1e-2), 30,
            prepare=freeze_decoder,
            expect={"dead_layers": everywhere},
            allow=["underfitting", "vanishing_gradients", "update_ratio_out_of_band", "no_better_than_baseline"]),
        run("unet_vanishing_gradients_deep_sigmoid", "a plain 12-layer sigmoid convolution stack instead of the U-Net, "
            "SGD Nesterov momentum 0.9 lr 0.05 constant, 30 epochs", nesterov(0.05), 30,
            model=lambda data: DeepConv(12, 12, nn.Sigmoid),
            expect={"vanishing_gradients": everywhere},
            allow=["underfitting", "update_ratio_out_of_band", "lr_too_low", "train_longer", "dead_layers",
                   "no_better_than_baseline"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    constant = run("unet_twin_amsgrad_constant", "U-Net, Adam (AMSGrad) 1e-2 constant, 30 epochs", amsgrad(1e-2), 30)
    return {
        "unet_lr_too_high_amsgrad": constant,
        "unet_lr_too_low_amsgrad": constant,
        "unet_decayed_too_early_per_step": healthy["unet_healthy_amsgrad_exponential"],
        "unet_divergence_lr_growth": run("unet_twin_sgd_constant", "U-Net, SGD Nesterov momentum 0.9 lr 0.05 "
                                         "constant, 10 epochs", nesterov(0.05), 10),
        "unet_loss_spike_glitch": constant,
        "unet_underfitting_no_skips_one_channel": constant,
        "unet_train_longer": run("unet_twin_amsgrad_2e-3", "U-Net, Adam (AMSGrad) 2e-3 constant, 30 epochs, val "
                                 "every 20 steps", amsgrad(2e-3), 30, eval_every=20),
        "unet_dead_layers_frozen_decoder": constant,
        "unet_vanishing_gradients_deep_sigmoid": run("unet_twin_deep_relu_he", "a plain 12-layer ReLU convolution "
                                                     "stack with He initialisation, SGD Nesterov momentum 0.9 lr 0.05 "
                                                     "constant, 30 epochs", nesterov(0.05), 30,
                                                     model=lambda data: DeepConv(12, 12, nn.ReLU)),
    }
