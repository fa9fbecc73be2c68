"""A mixture-of-experts transformer LM (top-2 routing over 4 expert MLPs, a load-balancing loss) on text from four Markov domains, AdaBelief, inverse-time decay, the step's values every 16 steps (seventh hold-out).

Text made here: 4 domains, each with its own 12 of 40 words (the sets
overlap, so a shared word is followed differently in each domain) and its
own one-token Markov table (each word's next-word distribution drawn from
Dirichlet(0.2) over the domain's words). A sequence is a domain token
followed by 24 words of that domain (the first uniform over the domain's
words); the model reads the first 24 tokens and predicts the next one at
each place, so it must read the domain off the first token and follow that
domain's table (the loss's floor, the tables' entropy, is about 1.43).
Vocabulary 44: 4 domain tokens, 40 words. 2,000 training and 400
validation sequences, batches of 32 (63 steps per epoch). The model: token
and position embeddings (width 32), two pre-LN decoder blocks, each causal
self-attention (4 heads) then a mixture-of-experts feed-forward layer: a
linear router over 4 experts (32-64-32, GELU), each token sent to its 2
highest-scoring experts weighted by their renormalised router
probabilities (Switch/Mixtral style; the experts are computed densely, a
token's unselected experts weighted 0); a final LayerNorm and an untied
decoder. The loss is the token cross-entropy plus 0.01 times the Switch
Transformer load-balancing loss (E · Σ_i f_i P_i, f_i the share of routing
slots sent to expert i, P_i its mean router probability; 1.0 when
balanced), as Mixtral's outputs.loss, in training and in evaluation.
AdaBelief (written here, Zhuang et al. 2020: Adam whose second moment is
the EMA of (g - m)², the gradient's deviation from its EMA, decoupled weight
decay off biases and norms) and Adam; a linear warm-up over 5 % of the run,
then Keras's inverse-time decay lr / (1 + k t), k chosen so the lr ends at a
quarter of its peak. The loss, lr and gradient norm are logged every 16
steps as that step's value (a tracker sampling the loop; first record at
step 16), per-layer statistics every 32 steps, val loss every 40 steps.
Task: language modelling with V = 44.

Seventh hold-out (issue #12): written on 2026-11-30 by an engineer who changes
no rule and never reads them, kept out of ``FAMILY_MODULES`` and of the
tuning corpus (tests/data/heldout7, ``tests/diagnosis/make_heldout.py heldout7``).
Each fault's label comes from how the run was built; its harm was checked
against the healthy twin in ``twins()`` with ``tests/diagnosis/heldout_twins.py``
(scalars only). Faults tried here and dropped for doing no harm against
their twins (final val loss): AdaBelief 6e-2 (20x) with its warm-up, 1.01x;
the router picking among the first 2 of 4 experts (2 dead experts, meant
for ``dead_layers``), 1.01x; AdaBelief 6e-2 from step 1 against the same
with its warm-up, 1.00x, and 2e-2 from step 1 on a post-LN variant, 1.00x
(``missing_warmup``: this task trains as well without a warm-up).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "moe_lm_domains"
LOGGING = Logging(every=16, layer_every=32)
EVAL_EVERY = 40
DOMAINS, WORDS, DOMAIN_WORDS, CONTEXT = 4, 40, 12, 24
VOCAB = DOMAINS + WORDS
EXPERTS, TOP_K = 4, 2
AUX_WEIGHT = 0.01  # Switch Transformer's load-balancing coefficient (Fedus et al. 2021: 1e-2)


@functools.lru_cache(maxsize=None)
def domain_text(train: int = 2000, val: int = 400, seed: int = 71) -> Split:
    """(N, CONTEXT) input tokens and (N, CONTEXT) next tokens; tokens 0-3 are domain tokens, 4-43 words."""
    rng = np.random.default_rng(seed)
    vocabularies = [rng.choice(WORDS, DOMAIN_WORDS, replace=False) for _ in range(DOMAINS)]
    tables = rng.dirichlet(np.full(DOMAIN_WORDS, 0.2), size=(DOMAINS, DOMAIN_WORDS))
    count = train + val
    domains = rng.integers(0, DOMAINS, count)
    local = np.empty((count, CONTEXT), dtype=np.int64)  # each word's index in its domain's vocabulary
    local[:, 0] = rng.integers(0, DOMAIN_WORDS, count)
    for place in range(1, CONTEXT):
        cumulative = tables[domains, local[:, place - 1]].cumsum(-1)  # (N, DOMAIN_WORDS)
        drawn = (cumulative < rng.random((count, 1)) * cumulative[:, -1:]).sum(-1)
        local[:, place] = np.minimum(drawn, DOMAIN_WORDS - 1)
    sequences = np.empty((count, CONTEXT + 1), dtype=np.int64)
    sequences[:, 0] = domains
    sequences[:, 1:] = DOMAINS + np.stack(vocabularies)[domains[:, None], local]
    tokens = torch.tensor(sequences)
    x, y = tokens[:, :-1], tokens[:, 1:]
    return Split(x[:train], y[:train], x[train:], y[train:], VOCAB)


class MixtureOfExperts(nn.Module):
    """Top-k routing over ``experts`` GELU MLPs; returns the mixed outputs and the Switch load-balancing loss."""

    def __init__(self, width: int, hidden: int, experts: int = EXPERTS, top_k: int = TOP_K):
        super().__init__()
        self.router = nn.Linear(width, experts, bias=False)
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
                                     for _ in range(experts))
        self.top_k = top_k

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.router(hidden)  # (B, T, E) router logits
        probabilities = scores.softmax(-1)
        top, chosen = probabilities.topk(self.top_k, dim=-1)  # (B, T, k)
        weights = torch.zeros_like(probabilities).scatter(-1, chosen, top / top.sum(-1, keepdim=True))
        outputs = torch.stack([expert(hidden) for expert in self.experts], -1)  # (B, T, W, E)
        mixed = (outputs * weights.unsqueeze(-2)).sum(-1)
        routed_share = F.one_hot(chosen, len(self.experts)).float().sum(-2).mean((0, 1)) / self.top_k  # f_i
        aux = len(self.experts) * (routed_share * probabilities.mean((0, 1))).sum()
        return mixed, aux


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attention_norm = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.moe_norm = nn.LayerNorm(width)
        self.moe = MixtureOfExperts(width, 2 * width)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normed = self.attention_norm(hidden)
        hidden = hidden + self.attention(normed, normed, normed, attn_mask=mask, need_weights=False)[0]
        mixed, aux = self.moe(self.moe_norm(hidden))
        return hidden + mixed, aux


class MoELanguageModel(nn.Module):
    """(B, T) tokens → (B, T, V) logits carrying ``aux_loss`` (the blocks' mean load-balancing loss)."""

    def __init__(self, vocab: int = VOCAB, width: int = 32, heads: int = 4, depth: int = 2,
                 decoder_std: float | None = None):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.randn(CONTEXT, width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width)
        self.decoder = nn.Linear(width, vocab)
        if decoder_std is not None:
            nn.init.normal_(self.decoder.weight, std=decoder_std)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        mask = torch.triu(torch.full((length, length), float("-inf")), diagonal=1)
        hidden = self.embed(tokens) + self.position[:length]  # (B, T, W)
        aux = hidden.new_zeros(())
        for block in self.blocks:
            hidden, block_aux = block(hidden, mask)
            aux = aux + block_aux / len(self.blocks)
        logits = self.decoder(self.final_norm(hidden))  # (B, T, V)
        logits.aux_loss = aux  # a tensor attribute: the loss below adds it, as Mixtral's outputs.loss does
        return logits


def moe_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Token cross-entropy of (B, T, V) logits plus AUX_WEIGHT times their load-balancing loss."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)) + AUX_WEIGHT * logits.aux_loss


def language_model(**kwargs):
    return lambda data: MoELanguageModel(data.num_classes, **kwargs)


class AdaBelief(torch.optim.Optimizer):
    """AdaBelief (Zhuang et al. 2020, "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
    Gradients"): m ← β1 m + (1-β1) g, s ← β2 s + (1-β2)(g - m)² + ε, both bias-corrected,
    w ← w - lr · (m̂ / (√ŝ + ε) + λ w) (decoupled weight decay, as the authors' default)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-12,
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
                    state["step"], state["m"], state["s"] = 0, torch.zeros_like(param), torch.zeros_like(param)
                state["step"] += 1
                step, grad = state["step"], param.grad
                state["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
                deviation = grad - state["m"]
                state["s"].mul_(beta2).addcmul_(deviation, deviation, value=1 - beta2).add_(group["eps"])
                m_hat = state["m"] / (1 - beta1 ** step)
                s_hat = state["s"] / (1 - beta2 ** step)
                param.mul_(1 - group["lr"] * group["weight_decay"])
                param.addcdiv_(m_hat, s_hat.sqrt().add_(group["eps"]), value=-group["lr"])


def _groups(model: nn.Module, weight_decay: float) -> list[dict]:
    named = list(model.named_parameters())
    decay = [p for name, p in named if p.ndim >= 2 and "norm" not in name and name != "position"]
    exempt = [p for name, p in named if not (p.ndim >= 2 and "norm" not in name and name != "position")]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]


def adabelief(lr: float, weight_decay: float = 0.01, **kwargs):
    return lambda model: AdaBelief(_groups(model, weight_decay), lr=lr, **kwargs)


def adam(lr: float):
    return lambda model: torch.optim.Adam(model.parameters(), lr=lr)


def inverse_time_multiplier(taken: int, total: int, warmup: float = 0.05, end: float = 0.25) -> float:
    """Linear warm-up over ``warmup`` of ``total`` steps, then 1 / (1 + k t) with k such that it is ``end`` at
    ``total`` (t: steps since the warm-up); ``taken``: steps taken so far."""
    warmup_steps = max(1, int(warmup * total))
    if taken < warmup_steps:
        return (taken + 1) / warmup_steps
    rate = (1 / end - 1) / max(1, total - warmup_steps)
    return 1.0 / (1.0 + rate * (taken - warmup_steps))


def inverse_time(planned_total: int | None = None, **kwargs):
    """LambdaLR of ``inverse_time_multiplier`` per step over the run (or over ``planned_total`` steps)."""
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda taken: inverse_time_multiplier(taken, planned_total or total, **kwargs)), "step")


def inverse_time_sign_slip(taken: int, total: int, warmup: float = 0.05, end: float = 0.25) -> float:
    """``inverse_time_multiplier`` with the sign of its rate slipped: 1 / (1 - k t), growing to a pole at
    t = 1/k (a third of the steps after the warm-up) and negative after it."""
    warmup_steps = max(1, int(warmup * total))
    if taken < warmup_steps:
        return (taken + 1) / warmup_steps
    denominator = 1.0 - (1 / end - 1) / max(1, total - warmup_steps) * (taken - warmup_steps)
    return 1.0 / (denominator if abs(denominator) > 1e-3 else 1e-3)


def lambda_schedule(multiplier):
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda taken: multiplier(taken, total)), "step")


def corrupted_shard_batch(at: int):
    """At step ``at`` the batch comes from a corrupted shard: every token uniform over the vocabulary."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if step != at:
            return x, y
        generator = torch.Generator().manual_seed(at)
        return torch.randint(0, VOCAB, x.shape, generator=generator), torch.randint(0, VOCAB, y.shape,
                                                                                     generator=generator)
    return hook


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="language_modelling", task_kind="language_modelling", logging=LOGGING,
                    batch_size=32, probe_layout=True, eval_every=EVAL_EVERY, attention=True, loss=moe_loss,
                    scheduler=inverse_time())
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", domain_text), settings.pop("model", language_model()),
                optimizer, epochs, **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("moe_healthy_adabelief", "MoE LM (4 experts, top-2, aux 0.01), AdaBelief 3e-3 wd 0.01, warm-up 5 % then "
            "inverse-time decay to 1/4, 10 epochs (630 steps)", adabelief(3e-3), 10, healthy=True),
        run("moe_healthy_adabelief_seed1", "MoE LM, AdaBelief 3e-3 wd 0.01, warm-up then inverse-time decay, 10 "
            "epochs, seed 1", adabelief(3e-3), 10, seed=1, healthy=True),
        run("moe_healthy_adam_seed2", "MoE LM, Adam 2e-3, warm-up 10 % then inverse-time decay to 1/4, 10 epochs, "
            "seed 2", adam(2e-3), 10, scheduler=inverse_time(warmup=0.1), seed=2, healthy=True),
        run("moe_healthy_adabelief_long", "MoE LM, AdaBelief 2e-3 wd 0.01, warm-up then inverse-time decay to 1/8, "
            "20 epochs (1,260 steps)", adabelief(2e-3), 20, scheduler=inverse_time(end=0.125), healthy=True),
        run("moe_lr_too_high_sgd_lr", "MoE LM, AdaBelief at lr 0.5 (an SGD config's lr copied over: 170x the "
            "working lr) wd 0.01, warm-up over 5 % then inverse-time decay, 10 epochs", adabelief(0.5), 10,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "underfitting", "exploding_gradients", "divergence",
                   "missing_warmup", "dead_layers", "best_epoch_not_last"]),
        run("moe_lr_too_low_adabelief", "MoE LM, AdaBelief 3e-5 (1/100 of the working lr) wd 0.01, warm-up then "
            "inverse-time decay, 10 epochs", adabelief(3e-5), 10,
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        run("moe_divergence_decay_sign", "MoE LM, AdaBelief 3e-3 wd 0.01, warm-up 5 % then the inverse-time decay "
            "written lr / (1 - k t) (a sign slip): the lr grows, passes a pole at a third of the run (step ~230) and "
            "turns negative (gradient ascent) for the rest, 10 epochs", adabelief(3e-3), 10,
            scheduler=lambda_schedule(inverse_time_sign_slip),
            expect={"divergence": [150, 630]},
            allow=["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "lr_too_high", "dead_layers",
                   "underfitting", "best_epoch_not_last", "overfitting"]),
        run("moe_loss_spike_corrupted_shard", "MoE LM, AdaBelief 3e-3 wd 0.01, warm-up then inverse-time decay, 10 "
            "epochs; at step 400 (a logged step) one batch comes from a corrupted shard (uniformly random tokens)",
            adabelief(3e-3), 10, batch_hook=corrupted_shard_batch(400),
            expect={"loss_spike": [390, 420]}, forbid=["divergence"],
            allow=["exploding_gradients", "best_epoch_not_last"]),
        run("moe_bad_initial_loss_decoder_std1", "MoE LM whose decoder weights are drawn with nn.init.normal_ (std "
            "1.0, for ~0.1: logits of std ~7 at step 1), AdaBelief 3e-3 wd 0.01, warm-up then inverse-time decay, 10 "
            "epochs", adabelief(3e-3), 10, model=language_model(decoder_std=1.0),
            expect={"bad_initial_loss": [1, 32]},
            allow=["loss_spike", "exploding_gradients", "underfitting", "update_ratio_out_of_band", "train_longer"]),
        run("moe_decayed_too_early_inverse_time", "MoE LM, AdaBelief 3e-3 wd 0.01, warm-up then inverse-time decay "
            "whose rate was set for a 63-step run (one epoch's steps for the run's 630) and to end at 1/50: the lr "
            "is 1/50 of its peak at step 63 and 1/500 at the end, 10 epochs", adabelief(3e-3), 10,
            scheduler=lambda optimizer, total, per_epoch: inverse_time(planned_total=per_epoch, end=0.02)(
                optimizer, total, per_epoch),
            expect={"decayed_too_early": [5, 130]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "train_longer"]),
        run("moe_train_longer_stopped", "MoE LM, AdaBelief 1e-3 wd 0.01, warm-up then inverse-time decay planned "
            "for 20 epochs (1,260 steps), stopped after 3 (189 steps: max_steps left from a smoke test)",
            adabelief(1e-3), 3, scheduler=inverse_time(planned_total=1260),
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    base = healthy["moe_healthy_adabelief"]
    return {
        "moe_lr_too_high_sgd_lr": base,
        "moe_lr_too_low_adabelief": base,
        "moe_divergence_decay_sign": base,
        "moe_loss_spike_corrupted_shard": base,
        "moe_bad_initial_loss_decoder_std1": base,
        "moe_decayed_too_early_inverse_time": base,
        "moe_train_longer_stopped": run("moe_twin_adabelief_1e-3_20_epochs", "MoE LM, AdaBelief 1e-3 wd 0.01, "
                                        "warm-up then inverse-time decay, 20 epochs", adabelief(1e-3), 20),
    }
