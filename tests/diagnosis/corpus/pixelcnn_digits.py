"""A PixelCNN (masked convolutions, autoregressive over pixels) modelling binarised 8×8 digits by negative log-likelihood in bits per pixel, Adam / RMSprop / NAdam, exponential, step and cosine schedules, 5-step window means (eleventh hold-out, healthy only).

Images: sklearn's bundled 8×8 digits (1,797), binarised at half intensity
(a pixel is on when its value is ≥ 8 of 16), 70 % train (1,257), 30 %
validation (540); input and target are the same image, (B, 1, 8, 8).

The model: a mask-A 5×5 masked convolution (1 → 32 channels; a pixel sees
only the pixels above it and to its left), three mask-B 3×3 masked
convolutions (32 → 32, ReLU before each), ReLU, a 1×1 convolution to one
Bernoulli logit per pixel. The loss: binary cross-entropy of every pixel
given the pixels before it, averaged over pixels and divided by ln 2: the
negative log-likelihood in bits per pixel (1 bit at a uniform start, the
binarised digits' entropy is ~0.3 bits).

The loop: batches of 32 (40 steps per epoch), 20 to 30 epochs (800 to
1,200 steps). Logged as the mean over each 5-step window (loss, the
window's last lr and gradient norm), per-layer statistics every 25 steps;
val NLL after every epoch.

Why these settings (quick check by final val NLL in bits per pixel,
2026-11-30, each base run at its lr × 1/3, × 1, × 3; "best @" is the step
of the lowest val NLL). This small PixelCNN wants a larger lr than the
Adam default:
- Adam, lr × 0.9 per epoch: at 25 epochs 6.7e-4 0.4803, 2e-3 0.4560, 6e-3
  0.4326 (still falling at 2e-3), so 30 epochs and a larger lr: 1.7e-3
  0.4600, 5e-3 0.4336, 1.5e-2 0.4278 (best 0.4275 @ 880); 3.3e-3 0.4405,
  1e-2 0.4284 (best at the last epoch), 3e-2 0.4324: 1e-2.
- RMSprop, lr × 0.3 every 8 epochs, 24 epochs: 1e-3 0.4598, 3e-3 0.4372
  (best 0.4369 @ 920), 9e-3 0.4439: 3e-3.
- NAdam, cosine to 0, 20 epochs: 2e-3 0.4454, 6e-3 0.4270 (best @ 760 of
  800, 0.4270), 1.8e-2 0.4298: 6e-3.
- Adam, 48 channels, cosine to 0, 30 epochs: 1e-3 0.4448, 3e-3 0.4230
  (best 0.4227 @ 1,000), 9e-3 0.4283: 3e-3.

No task kind recorded (``task_kind="unknown"``: a density model).
Eleventh hold-out (issue #12); see ``softmax_lbfgs_tabular.py``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.corpus.common import cosine_to_zero
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "pixelcnn_digits"
LOGGING = Logging(every=5, mean=True, layer_every=25)


@functools.lru_cache(maxsize=None)
def binary_digits(seed: int = 112) -> Split:
    from sklearn.datasets import load_digits

    images = (load_digits().images >= 8).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    order = np.random.default_rng(seed).permutation(len(images))
    cut = int(0.7 * len(images))
    train, val = torch.tensor(images[order[:cut]]), torch.tensor(images[order[cut:]])
    return Split(train, train.clone(), val, val.clone(), 2)


class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only earlier pixels (raster order); mask A also hides the centre pixel."""

    def __init__(self, kind: str, inputs: int, outputs: int, kernel: int):
        super().__init__(inputs, outputs, kernel, padding=kernel // 2)
        mask = torch.ones_like(self.weight)
        centre = kernel // 2
        mask[:, :, centre, centre + (kind == "B"):] = 0
        mask[:, :, centre + 1:] = 0
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PixelCNN(nn.Module):
    def __init__(self, channels: int = 32, blocks: int = 3):
        super().__init__()
        self.first = MaskedConv2d("A", 1, channels, 5)
        self.blocks = nn.ModuleList(MaskedConv2d("B", channels, channels, 3) for _ in range(blocks))
        self.out = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.first(x)
        for block in self.blocks:
            hidden = block(F.relu(hidden))
        return self.out(F.relu(hidden))


def pixelcnn(channels: int = 32, blocks: int = 3):
    return lambda data: PixelCNN(channels, blocks)


def bits_per_pixel(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target) / math.log(2)


def exponential(gamma: float):
    """ExponentialLR stepped once per epoch."""
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma), "epoch")


def step_every(epochs: int, gamma: float):
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.StepLR(optimizer, epochs, gamma), "epoch")


def make(kind, lr: float, **kwargs):
    return lambda model: kind(model.parameters(), lr=lr, **kwargs)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="unknown", logging=LOGGING, batch_size=32,
                    probe_layout=True, loss=bits_per_pixel, healthy=True)
    settings.update(kwargs)
    return Spec(name, description, binary_digits, settings.pop("model", pixelcnn()), optimizer, epochs, **settings)


def specs() -> list[Spec]:
    return [
        run("pixelcnn_adam_exponential", "PixelCNN on binarised digits, Adam 1e-2, lr x0.9 per epoch, 30 epochs "
            "(1,200 steps)", make(torch.optim.Adam, 1e-2), 30, scheduler=exponential(0.9)),
        run("pixelcnn_adam_exponential_seed1", "PixelCNN on binarised digits, Adam 1e-2, lr x0.9 per epoch, "
            "30 epochs, seed 1", make(torch.optim.Adam, 1e-2), 30, scheduler=exponential(0.9), seed=1),
        run("pixelcnn_rmsprop_step", "PixelCNN on binarised digits, RMSprop 3e-3, lr x0.3 every 8 epochs, "
            "24 epochs (960 steps)", make(torch.optim.RMSprop, 3e-3), 24, scheduler=step_every(8, 0.3)),
        run("pixelcnn_nadam_cosine_seed2", "PixelCNN on binarised digits, NAdam 6e-3, cosine to 0, 20 epochs "
            "(800 steps), seed 2", make(torch.optim.NAdam, 6e-3), 20, scheduler=cosine_to_zero(), seed=2),
        run("pixelcnn_wide_adam_cosine_seed3", "PixelCNN with 48 channels on binarised digits, Adam 3e-3, cosine "
            "to 0, 30 epochs (1,200 steps), seed 3", make(torch.optim.Adam, 3e-3), 30, model=pixelcnn(48),
            scheduler=cosine_to_zero(), seed=3),
    ]


def twins() -> dict[str, Spec]:
    """No fault runs in this family (a healthy-only hold-out): no twins."""
    return {}
