"""A Deep & Cross Network tagging tabular records with several of 10 tags each (BCEWithLogitsLoss), Yogi, CyclicLR exp_range, every step (seventh hold-out).

Records made here: 6 categorical fields of 8 levels and 8 standard-normal
numeric fields. Each of 10 tags has a logit that is a cross of two
categorical fields (a fixed 8×8 table of N(0, 2.5²) values; the pairs
cycle over the fields, so every field matters), a linear term in the
numeric fields (weights N(0, 0.8²)) and a bias of -1.5; a tag is on with
the sigmoid of its logit (so labels are noisy; about 3 tags per record).
10,000 training and 1,000 validation records, batches of 64 (157 steps
per epoch). The model: DCN-v2 stacked (Wang et al. 2021): an 8-wide embedding
per categorical field concatenated with the numeric fields (x0, 56 wide),
2 full-rank cross layers x ← x0 ⊙ (W x + b) + x, a deep tower 56-128-64
(ReLU unless said) and a linear head to 10 tag logits; the loss is
BCEWithLogitsLoss, the mean over records and tags (0.30 for the true
probabilities, 0.64 for each tag's base rate). Yogi (written here,
Zaheer et al. 2018: Adam whose second moment moves additively, v ← v -
(1-β2) sign(v - g²) g²) and Adadelta; CyclicLR in exp_range mode (cycles of
one epoch between 1 % of the lr and the lr, the cycle's amplitude shrinking
by γ per step, γ chosen so it ends at 5 % of the lr). The loss, lr and gradient norm
are logged every step from step 1 (no training accuracy: a multi-label
tagger has none), per-layer statistics every 25 steps, val loss after every
epoch. Task: none recorded (``unknown``): ``Probe(task=...)`` knows
classification with C classes, where a loss at ln C is a guess; a
multi-label tagger's guess is 10 binary cross-entropies around ln 2 each,
which ln C would misstate, so its author says nothing.

Seventh hold-out (issue #12); see ``moe_lm_domains.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "dcn_multilabel_tags"
LOGGING = Logging(layer_every=25)  # per-layer statistics every 25 steps keep the 13 runs ~1 MB
FIELDS, LEVELS, NUMERIC, TAGS, EMBED = 6, 8, 8, 10, 8


@functools.lru_cache(maxsize=None)
def tagged_records(train: int = 10000, val: int = 1000, seed: int = 91) -> Split:
    """x: (N, FIELDS + NUMERIC) float, the categorical levels stored as floats 0-7 in the first FIELDS columns;
    y: (N, TAGS) float multi-hot tags."""
    rng = np.random.default_rng(seed)
    count = train + val
    levels = rng.integers(0, LEVELS, (count, FIELDS))
    numeric = rng.normal(size=(count, NUMERIC))
    tables = rng.normal(0, 2.5, (TAGS, LEVELS, LEVELS))
    weights = rng.normal(0, 0.8, (TAGS, NUMERIC))
    logits = np.empty((count, TAGS))
    for tag in range(TAGS):
        first, second = tag % FIELDS, (tag + 1 + tag // FIELDS) % FIELDS
        logits[:, tag] = tables[tag, levels[:, first], levels[:, second]] + numeric @ weights[tag] - 1.5
    tags = (rng.random((count, TAGS)) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    x = torch.tensor(np.concatenate([levels, numeric], 1), dtype=torch.float32)
    y = torch.tensor(tags)
    return Split(x[:train], y[:train], x[train:], y[train:], TAGS)


class CrossLayer(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(x) + x


class DeepCross(nn.Module):
    """(B, FIELDS + NUMERIC) records → (B, TAGS) tag logits. ``fields_read`` < FIELDS: only the first ones are
    looked up (the others' embeddings never get a gradient) and the missing ones are zeros in x0."""

    def __init__(self, tower: tuple[int, ...] = (128, 64), cross: int = 2, activation: type[nn.Module] = nn.ReLU,
                 fields_read: int = FIELDS):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(LEVELS, EMBED) for _ in range(FIELDS))
        width = FIELDS * EMBED + NUMERIC
        self.cross = nn.ModuleList(CrossLayer(width) for _ in range(cross))
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip((width, *tower[:-1]), tower):
            layers += [nn.Linear(fan_in, fan_out), activation()]
        self.tower = nn.Sequential(*layers)
        self.head = nn.Linear(tower[-1] if tower else width, TAGS)
        self.fields_read = fields_read

    def forward(self, records: torch.Tensor) -> torch.Tensor:
        levels = records[:, :FIELDS].long()
        embedded = [self.embeddings[field](levels[:, field]) if field < self.fields_read
                    else records.new_zeros(len(records), EMBED) for field in range(FIELDS)]
        x0 = torch.cat([*embedded, records[:, FIELDS:]], 1)  # (B, 56)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        return self.head(self.tower(x))


def deep_cross(**kwargs):
    return lambda data: DeepCross(**kwargs)


class Yogi(torch.optim.Optimizer):
    """Yogi (Zaheer et al. 2018, "Adaptive Methods for Nonconvex Optimization"): m as Adam's,
    v ← v - (1-β2) sign(v - g²) g² (v starts at 1e-6), w ← w - lr · m̂ / (√v̂ + ε); the paper's ε 1e-3."""

    def __init__(self, params, lr: float = 1e-2, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-3):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"], state["m"] = 0, torch.zeros_like(param)
                    state["v"] = torch.full_like(param, 1e-6)
                state["step"] += 1
                step, grad = state["step"], param.grad
                squared = grad * grad
                state["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["v"].addcmul_(torch.sign(state["v"] - squared), squared, value=-(1 - beta2))
                m_hat = state["m"] / (1 - beta1 ** step)
                v_hat = state["v"] / (1 - beta2 ** step)
                param.addcdiv_(m_hat, v_hat.sqrt().add_(group["eps"]), value=-group["lr"])


def yogi(lr: float, **kwargs):
    return lambda model: Yogi(model.parameters(), lr=lr, **kwargs)


def adadelta(lr: float):
    return lambda model: torch.optim.Adadelta(model.parameters(), lr=lr, rho=0.9)


def exp_range(end: float = 0.05, gamma_epochs: int | None = None):
    """CyclicLR exp_range: one cycle per epoch between 1 % of the lr and the lr, the amplitude multiplied by γ each
    step, γ = ``end`` ** (1 / steps) over the run (``gamma_epochs``: over that many epochs' steps instead)."""
    def build(optimizer, total, per_epoch):
        steps = per_epoch * gamma_epochs if gamma_epochs else total
        top = [group["lr"] for group in optimizer.param_groups]
        scheduler = torch.optim.lr_scheduler.CyclicLR(
            optimizer, [0.01 * lr for lr in top], top, step_size_up=max(1, per_epoch // 2), mode="exp_range",
            gamma=end ** (1 / steps), cycle_momentum=False)
        return scheduler, "step"
    return build


def raw_amount_from(step_from: int, column: int = FIELDS, scale: float = 1000.0):
    """From ``step_from`` on, every batch's first numeric field arrives in raw units (× ``scale``): a new data
    shard whose standardisation was skipped."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if step < step_from:
            return x, y
        x = x.clone()
        x[:, column] *= scale
        return x, y
    return hook


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="unknown", logging=LOGGING, batch_size=64,
                    probe_layout=True, loss=F.binary_cross_entropy_with_logits, scheduler=exp_range())
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", tagged_records), settings.pop("model", deep_cross()),
                optimizer, epochs, **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("dcn_healthy_yogi", "DCN-v2 tagger, Yogi 1e-2, CyclicLR exp_range (1 % to 100 %, amplitude to 5 %), "
            "16 epochs (2,512 steps)", yogi(1e-2), 16, healthy=True),
        run("dcn_healthy_yogi_seed1", "DCN-v2 tagger, Yogi 1e-2, CyclicLR exp_range, 16 epochs, seed 1", yogi(1e-2),
            16, seed=1, healthy=True),
        run("dcn_healthy_adadelta", "DCN-v2 tagger, Adadelta lr 2.0 rho 0.9, CyclicLR exp_range, 16 epochs",
            adadelta(2.0), 16, healthy=True),
        run("dcn_healthy_yogi_long", "DCN-v2 tagger, Yogi 5e-3, CyclicLR exp_range (amplitude to 2 %), 24 epochs "
            "(3,768 steps)", yogi(5e-3), 24, scheduler=exp_range(end=0.02), healthy=True),
        run("dcn_lr_too_low_yogi", "DCN-v2 tagger, Yogi 1e-4 (1/100 of the working lr), CyclicLR exp_range, 16 "
            "epochs", yogi(1e-4), 16,
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        run("dcn_decayed_too_early_gamma_smoke_test", "DCN-v2 tagger, Yogi 1e-2, CyclicLR exp_range whose γ was "
            "computed for the 2-epoch smoke test (314 steps) and to 0.1 %, then kept for the 16-epoch run: the "
            "cycles' amplitude is gone by step ~314 (12 %) and the lr stays at 1 % of its peak", yogi(1e-2), 16,
            scheduler=exp_range(end=1e-3, gamma_epochs=2),
            expect={"decayed_too_early": [150, 630]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "train_longer"]),
        run("dcn_underfitting_no_crosses", "a linear tagger (no cross layers, no tower: embeddings and numeric "
            "fields straight to the head), which cannot express the tags' field crosses, Yogi 1e-2, CyclicLR "
            "exp_range, 16 epochs", yogi(1e-2), 16, model=deep_cross(tower=(), cross=0),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"]),
        run("dcn_train_longer_two_epochs", "DCN-v2 tagger, Yogi 2e-3, CyclicLR exp_range, stopped after 2 epochs "
            "(314 steps)", yogi(2e-3), 2,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low"]),
        run("dcn_overfitting_few_records", "DCN-v2 tagger on 400 training records (batches of 64, 7 steps per "
            "epoch), Yogi 1e-2, CyclicLR exp_range, 120 epochs", yogi(1e-2), 120,
            data=lambda: tagged_records(train=400),
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band"]),
        run("dcn_exploding_gradients_raw_amount", "DCN-v2 tagger, Yogi 1e-2, CyclicLR exp_range, 16 epochs; from "
            "step 1,000 the first numeric field arrives in raw units (x1000: a shard whose standardisation was "
            "skipped), squared by the cross layers", yogi(1e-2), 16, batch_hook=raw_amount_from(1000),
            expect={"exploding_gradients": [1000, 2512]},
            allow=["loss_spike", "divergence", "lr_too_high", "best_epoch_not_last", "update_ratio_out_of_band",
                   "overfitting", "underfitting", "dead_layers"]),
        run("dcn_vanishing_gradients_sigmoid_tower", "DCN-v2 tagger whose tower is 8 layers of 64 with sigmoid "
            "activations ('sigmoid' for 'relu' in the config), Yogi 1e-2, CyclicLR exp_range, 16 epochs", yogi(1e-2),
            16, model=deep_cross(tower=(64,) * 8, activation=nn.Sigmoid),
            expect={"vanishing_gradients": everywhere},
            allow=["underfitting", "update_ratio_out_of_band", "lr_too_low", "train_longer", "dead_layers"]),
        run("dcn_dead_layers_dropped_fields", "DCN-v2 tagger whose forward looks up only the first 4 of the 6 "
            "categorical fields (its field list written for the schema before two fields were added): the last two "
            "fields' embeddings never get a gradient and 5 of the 10 tags lose half their cross, Yogi 1e-2, CyclicLR "
            "exp_range, 16 epochs", yogi(1e-2), 16, model=deep_cross(fields_read=4),
            expect={"dead_layers": everywhere}, allow=["underfitting"]),
        run("dcn_update_ratio_low_yogi_eps", "DCN-v2 tagger, Yogi 1e-2 with ε = 1.0 (TensorFlow's Adam docs' advice "
            "for Inception, for the paper's 1e-3): every step is ~lr · m, updates ~1e-5 of the weights, CyclicLR "
            "exp_range, 16 epochs", yogi(1e-2, eps=1.0), 16,
            expect={"update_ratio_out_of_band": everywhere}, forbid=["lr_too_high"],
            allow=["lr_too_low", "underfitting", "train_longer"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    base = healthy["dcn_healthy_yogi"]
    return {
        "dcn_lr_too_low_yogi": base,
        "dcn_decayed_too_early_gamma_smoke_test": base,
        "dcn_underfitting_no_crosses": base,
        "dcn_train_longer_two_epochs": run("dcn_twin_yogi_2e-3", "DCN-v2 tagger, Yogi 2e-3, CyclicLR exp_range, 16 "
                                           "epochs", yogi(2e-3), 16),
        "dcn_overfitting_few_records": base,  # all 5,000 records
        "dcn_exploding_gradients_raw_amount": base,
        "dcn_vanishing_gradients_sigmoid_tower": base,
        "dcn_dead_layers_dropped_fields": base,
        "dcn_update_ratio_low_yogi_eps": base,
    }
