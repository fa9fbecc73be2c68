"""Healthy training programs of kinds the corpus does not have get no warning (issue #12).

Eleven small programs, written as a user of each kind would write them and
recorded with the real Probe as the README's quick start shows: a VAE with
KL annealing, a diffusion-style noise predictor, SimCLR-style contrastive
learning (InfoNCE), multi-label classification (BCEWithLogitsLoss),
knowledge distillation (KL to a teacher plus CE), a transformer
encoder-decoder with label smoothing on a reversal task, actor-critic on a
toy corridor (a loss that goes negative), a GAN (the generator's loss as
the loss, the discriminator's through ``probe.log``), a triplet loss, a
classifier trained with gradient accumulation and clipping, and Huber
regression on the diabetes data; the multi-label program runs a second
time handing its logits to ``ev.update`` as the quick start does for a
classifier. Each passes the task the way its user
would (``num_classes`` for a classifier, ``vocab_size`` for token
cross-entropy, ``task="regression"``, nothing for an objective that is
none of these) and is checked to learn on held-out data (its own metric
against a baseline), so a finding on it is a false alarm, not a bad run.

A case whose diagnosis still raises a false alarm is marked
``xfail(strict=True)`` with the rule, what it saw and why that is wrong, so
that the suite stays green and the case turns red once the rule is fixed.
Only those rules may fire on it: another warning is a new false alarm and
fails the test. No data is downloaded (scikit-learn's bundled sets and
synthetic data); all programs together take about 35 s of one CPU core.
"""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_diabetes, load_digits, make_moons
from torch import nn

from traindoctor import Probe
from traindoctor.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


class FalseAlarm(AssertionError):
    """A warning or critical finding on a healthy run (the expected failure of an xfail case)."""


def _digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return x[order], torch.tensor(data.target)[order]


def _batches(n: int, size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    return [order[start:start + size] for start in range(0, n - size + 1, size)]


def _knn_accuracy(train_emb, train_y, test_emb, test_y, k: int = 5) -> float:
    nearest = (F.normalize(test_emb, dim=-1) @ F.normalize(train_emb, dim=-1).T).topk(k, dim=-1).indices
    return (train_y[nearest].mode(dim=-1).values == test_y).float().mean().item()


def _no_bias_decay(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two param groups, no decay on biases: what a careful AdamW user writes (HF Trainer does the same)."""
    decay = [p for name, p in model.named_parameters() if not name.endswith("bias")]
    no_decay = [p for name, p in model.named_parameters() if name.endswith("bias")]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------- the programs
# Each trains one healthy run named after itself into `store` and returns (learned, metrics): whether
# its held-out metric clearly beats a baseline, and the numbers.


def vae(store) -> tuple[bool, dict]:
    """A VAE on the digits: Bernoulli reconstruction + KL, the KL weight annealed 0 → 1 over 4 epochs."""
    torch.manual_seed(0)
    x, _ = _digits()
    xtr, xva = x[:1400], x[1400:]
    latent = 8
    encoder = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 2 * latent))
    decoder = nn.Sequential(nn.Linear(latent, 96), nn.ReLU(), nn.Linear(96, 64))
    model = nn.ModuleDict({"encoder": encoder, "decoder": decoder})
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)

    def negative_elbo(xb, beta):
        mu, logvar = encoder(xb).chunk(2, -1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        reconstruction = F.binary_cross_entropy_with_logits(decoder(z), xb, reduction="sum") / len(xb)
        kl = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum() / len(xb)
        return reconstruction + beta * kl, reconstruction, kl

    generator = torch.Generator().manual_seed(1)
    anneal_steps, step = 4 * (len(xtr) // 64), 0
    with Probe(run="vae", store=store, config={"lr": 2e-3, "kl_anneal_steps": anneal_steps}) as probe:
        probe.watch(model, optimizer)
        for epoch in range(14):
            model.train()
            for idx in _batches(len(xtr), 64, generator):
                loss, reconstruction, kl = negative_elbo(xtr[idx], min(1.0, step / anneal_steps))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
                probe.step(loss=loss, epoch=epoch)
                probe.log({"reconstruction": reconstruction.detach(), "kl": kl.detach()})
            model.eval()
            with torch.no_grad(), probe.evaluate("val") as ev:
                ev.update(loss=negative_elbo(xva, 1.0)[0])
    with torch.no_grad():
        mse = F.mse_loss(torch.sigmoid(decoder(encoder(xva).chunk(2, -1)[0])), xva).item()
        mean_image = F.mse_loss(xtr.mean(0).expand_as(xva), xva).item()
    return mse < 0.6 * mean_image, {"reconstruction_mse": mse, "mean_image_mse": mean_image}


class _NoisePredictor(nn.Module):
    def __init__(self, hidden: int = 128, time_dim: int = 32):
        super().__init__()
        self.time_dim = time_dim
        self.net = nn.Sequential(nn.Linear(64 + time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 64))

    def forward(self, x, t):
        half = self.time_dim // 2
        angles = t[:, None].float() * torch.exp(-math.log(1000) * torch.arange(half) / half)[None]
        return self.net(torch.cat([x, angles.sin(), angles.cos()], -1))


def diffusion(store) -> tuple[bool, dict]:
    """DDPM-style: predict the noise added at a timestep drawn per example (T = 100), MSE, AdamW."""
    torch.manual_seed(0)
    x, _ = _digits()
    x = x * 2 - 1
    xtr, xva = x[:1400], x[1400:]
    alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.05, 100), 0)
    model = _NoisePredictor()
    optimizer = torch.optim.AdamW(_no_bias_decay(model, 1e-4), lr=1e-3)

    def loss_of(xb, generator=None):
        t = torch.randint(0, 100, (len(xb),), generator=generator)
        noise = torch.randn(xb.shape, generator=generator)
        a = alpha_bar[t][:, None]
        return F.mse_loss(model(a.sqrt() * xb + (1 - a).sqrt() * noise, t), noise)

    generator = torch.Generator().manual_seed(1)
    with Probe(run="diffusion", store=store, config={"lr": 1e-3, "T": 100}, task="regression") as probe:
        probe.watch(model, optimizer)
        for epoch in range(14):
            model.train()
            for idx in _batches(len(xtr), 64, generator):
                loss = loss_of(xtr[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                probe.step(loss=loss, epoch=epoch)
            model.eval()
            with torch.no_grad(), probe.evaluate("val") as ev:
                ev.update(loss=loss_of(xva, torch.Generator().manual_seed(7)))
    with torch.no_grad():
        val = loss_of(xva, torch.Generator().manual_seed(7)).item()
    return val < 0.5, {"val_noise_mse": val, "predict_zero_mse": 1.0}


def _augment(xb, generator):
    """A shift of up to one pixel, 20 % of the pixels dropped, Gaussian noise."""
    images = xb.reshape(-1, 8, 8)
    shift = torch.randint(-1, 2, (2,), generator=generator)
    images = torch.roll(images, shifts=(int(shift[0]), int(shift[1])), dims=(1, 2))
    images = images * (torch.rand(images.shape, generator=generator) > 0.2).float()
    return (images + 0.1 * torch.randn(images.shape, generator=generator)).reshape(-1, 64)


def _info_nce(z1, z2, temperature):
    """SimCLR's NT-Xent: each view's positive is the other view of its image, among 2N − 1 candidates."""
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    similarity = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    n = len(z1)
    return F.cross_entropy(similarity, torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]))


def contrastive(store) -> tuple[bool, dict]:
    """SimCLR on two augmented views of the digits, batch 128, temperature 0.2, Adam 1e-3.

    The user knows InfoNCE starts at ln(2N − 1) and says so (expected_initial_loss).
    Held out: 1-nearest-neighbour accuracy from 5 labelled digits per class, encoder before and after.
    """
    torch.manual_seed(0)
    x, y = _digits()
    xtr, ytr, xva, yva = x[:1400], y[:1400], x[1400:], y[1400:]
    encoder = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64))
    model = nn.Sequential(encoder, nn.ReLU(), nn.Linear(64, 32))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch, temperature = 128, 0.2
    labelled = torch.cat([torch.nonzero(ytr == c).flatten()[:5] for c in range(10)])

    def few_shot():
        with torch.no_grad():
            return _knn_accuracy(encoder(xtr[labelled]), ytr[labelled], encoder(xva), yva, k=1)

    before = few_shot()
    generator = torch.Generator().manual_seed(1)
    with Probe(run="contrastive", store=store, config={"lr": 1e-3, "temperature": temperature, "batch": batch},
               expected_initial_loss=math.log(2 * batch - 1)) as probe:
        probe.watch(model, optimizer)
        for epoch in range(20):
            model.train()
            for idx in _batches(len(xtr), batch, generator):
                xb = xtr[idx]
                loss = _info_nce(model(_augment(xb, generator)), model(_augment(xb, generator)), temperature)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                probe.step(loss=loss, epoch=epoch)
            model.eval()
            views = torch.Generator().manual_seed(7)
            with torch.no_grad(), probe.evaluate("val") as ev:
                for start in range(0, len(xva) - batch + 1, batch):
                    xb = xva[start:start + batch]
                    ev.update(loss=_info_nce(model(_augment(xb, views)), model(_augment(xb, views)), temperature))
    after = few_shot()
    return after > before + 0.04, {"few_shot_accuracy_before": before, "few_shot_accuracy_after": after}


def multilabel(store, run: str = "multilabel", logits_to_probe: bool = False) -> tuple[bool, dict]:
    """8 labels per example (prevalences 15-85 %) from 20 features, BCEWithLogitsLoss; val micro-F1 logged.

    Not a C-class problem, so no num_classes, and the val pass records its loss only. With
    ``logits_to_probe`` it hands ``ev.update`` the logits and multi-hot targets as the quick start
    does for a classifier (the probe then takes each target row's argmax as its one class).
    """
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(3)
    n, features, labels = 2000, 20, 8
    x = torch.randn(n, features, generator=generator)
    hidden = torch.tanh(x @ torch.randn(features, features, generator=generator) / math.sqrt(features))
    score = (x @ torch.randn(features, labels, generator=generator)
             + hidden @ torch.randn(features, labels, generator=generator)) / math.sqrt(features)
    y = (score + 0.2 * torch.randn(n, labels, generator=generator) > torch.linspace(-1.0, 1.0, labels)).float()
    xtr, ytr, xva, yva = x[:1600], y[:1600], x[1600:], y[1600:]
    model = nn.Sequential(nn.Linear(features, 128), nn.ReLU(), nn.Linear(128, labels))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.BCEWithLogitsLoss()
    with Probe(run=run, store=store, config={"lr": 1e-3}) as probe:
        probe.watch(model, optimizer)
        for epoch in range(16):
            model.train()
            for idx in _batches(len(xtr), 64, generator):
                loss = criterion(model(xtr[idx]), ytr[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                probe.step(loss=loss, epoch=epoch)
            model.eval()
            with torch.no_grad(), probe.evaluate("val") as ev:
                logits = model(xva)
                if logits_to_probe:
                    ev.update(logits, yva, loss=criterion(logits, yva))
                else:
                    ev.update(loss=criterion(logits, yva))
                true_positives = ((logits > 0) & (yva > 0)).sum().item()
                f1 = 2 * true_positives / ((logits > 0).sum().item() + yva.sum().item())
            probe.log({"micro_f1": f1}, split="val")
    return f1 > 0.85, {"val_micro_f1": f1}


def distillation(store) -> tuple[bool, dict]:
    """A 16-unit student learns from a 256-unit teacher: 0.7·T²·KL(teacher ‖ student at T = 4) + 0.3·CE.

    It is a 10-class classifier, so the user passes num_classes=10 (confusion counts, per-class
    recall); the val split records the student's plain cross-entropy.
    """
    torch.manual_seed(0)
    x, y = _digits()
    xtr, ytr, xva, yva = x[:1400], y[:1400], x[1400:], y[1400:]
    teacher = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    teacher_optimizer = torch.optim.Adam(teacher.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(10):
        for idx in _batches(len(xtr), 64, generator):
            teacher_optimizer.zero_grad()
            F.cross_entropy(teacher(xtr[idx]), ytr[idx]).backward()
            teacher_optimizer.step()
    teacher.eval()
    student = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    temperature, alpha = 4.0, 0.7
    with Probe(run="distillation", store=store, config={"lr": 3e-3, "temperature": temperature, "alpha": alpha},
               num_classes=10) as probe:
        probe.watch(student, optimizer)
        for epoch in range(10):
            student.train()
            for idx in _batches(len(xtr), 64, generator):
                logits = student(xtr[idx])
                with torch.no_grad():
                    soft_targets = F.softmax(teacher(xtr[idx]) / temperature, -1)
                kd = F.kl_div(F.log_softmax(logits / temperature, -1), soft_targets,
                              reduction="batchmean") * temperature ** 2
                loss = alpha * kd + (1 - alpha) * F.cross_entropy(logits, ytr[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                probe.step(loss=loss, epoch=epoch)
            student.eval()
            with torch.no_grad(), probe.evaluate("val") as ev:
                logits = student(xva)
                ev.update(logits, yva, loss=F.cross_entropy(logits, yva))
    with torch.no_grad():
        accuracy = (student(xva).argmax(-1) == yva).float().mean().item()
    return accuracy > 0.9, {"student_val_accuracy": accuracy}


class _Reverser(nn.Module):
    def __init__(self, vocab: int, length: int, width: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.randn(length, width) * 0.02)
        self.transformer = nn.Transformer(width, nhead=4, num_encoder_layers=1, num_decoder_layers=1,
                                          dim_feedforward=64, dropout=0.0, batch_first=True)
        self.out = nn.Linear(width, vocab)

    def forward(self, source, target_in):
        mask = self.transformer.generate_square_subsequent_mask(target_in.shape[1])
        hidden = self.transformer(self.embed(source) + self.position[: source.shape[1]],
                                  self.embed(target_in) + self.position[: target_in.shape[1]], tgt_mask=mask)
        return self.out(hidden)


def seq2seq(store) -> tuple[bool, dict]:
    """A one-layer transformer encoder-decoder reverses 6 symbols; CE with label smoothing 0.1, 40-step warm-up.

    Token cross-entropy over the output vocabulary: the user passes vocab_size.
    Held out: greedy decoding, whole sequences right.
    """
    torch.manual_seed(0)
    symbols, length, bos = 10, 6, 10
    vocab = symbols + 1
    model = _Reverser(vocab, length)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 40))
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)

    def batch(n, generator):
        source = torch.randint(0, symbols, (n, length), generator=generator)
        target = source.flip(1)
        return source, torch.cat([torch.full((n, 1), bos), target[:, :-1]], 1), target

    generator = torch.Generator().manual_seed(1)
    val_source, val_in, val_target = batch(256, torch.Generator().manual_seed(9))
    with Probe(run="seq2seq", store=store, config={"lr": 2e-3, "label_smoothing": 0.1, "warmup": 40},
               vocab_size=vocab) as probe:
        probe.watch(model, optimizer)
        for step in range(300):
            model.train()
            source, target_in, target = batch(32, generator)
            loss = criterion(model(source, target_in).reshape(-1, vocab), target.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            probe.step(loss=loss)
            if (step + 1) % 30 == 0:
                model.eval()
                with torch.no_grad(), probe.evaluate("val") as ev:
                    logits = model(val_source, val_in)
                    ev.update(logits, val_target, loss=criterion(logits.reshape(-1, vocab), val_target.reshape(-1)))
    with torch.no_grad():
        decoded = torch.full((len(val_source), 1), bos)
        for _ in range(length):
            decoded = torch.cat([decoded, model(val_source, decoded)[:, -1].argmax(-1, keepdim=True)], 1)
        exact = (decoded[:, 1:] == val_target).all(1).float().mean().item()
    return exact > 0.9, {"greedy_exact_match": exact}


def actor_critic(store) -> tuple[bool, dict]:
    """Advantage actor-critic on a slippery 9-cell corridor, 32 episodes per update.

    Reaching the right end pays +1, the left end −1, each move −0.01 (10 % of moves slip the other
    way); loss = policy loss + 0.5 · value loss − 0.01 · entropy, which can be negative. Not a task
    the probe knows: no task argument. Held out: the greedy policy's mean return (random: about −0.1).
    """
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    cells, envs, gamma = 9, 32, 0.97
    net = nn.Sequential(nn.Linear(cells, 64), nn.Tanh(), nn.Linear(64, 3))  # two action logits and a value
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)

    def rollout(greedy=False):
        position = torch.full((envs,), cells // 2)
        alive = torch.ones(envs, dtype=torch.bool)
        log_probs, values, rewards, masks, entropies = [], [], [], [], []
        for _ in range(30):
            out = net(F.one_hot(position, cells).float())
            policy = torch.distributions.Categorical(logits=out[:, :2])
            action = out[:, :2].argmax(-1) if greedy else policy.sample()
            move = 2 * action - 1
            move = torch.where(torch.rand(envs, generator=generator) < 0.1, -move, move)
            position = (position + move).clamp(0, cells - 1)
            reward = torch.where(position == cells - 1, 1.0, torch.where(position == 0, -1.0, -0.01))
            log_probs.append(policy.log_prob(action))
            entropies.append(policy.entropy())
            values.append(out[:, 2])
            rewards.append(reward * alive)
            masks.append(alive.float())
            alive = alive & (position > 0) & (position < cells - 1)
            if not alive.any():
                break
        return log_probs, values, rewards, masks, entropies

    with Probe(run="actor_critic", store=store, config={"lr": 3e-3, "gamma": gamma}) as probe:
        probe.watch(net, optimizer)
        for _ in range(100):
            log_probs, values, rewards, masks, entropies = rollout()
            returns, running = [], torch.zeros(envs)
            for reward, mask in zip(reversed(rewards), reversed(masks)):
                running = reward + gamma * running * mask
                returns.append(running)
            returns, values = torch.stack(returns[::-1]), torch.stack(values)
            log_probs, masks = torch.stack(log_probs), torch.stack(masks)
            entropy = (torch.stack(entropies) * masks).sum() / masks.sum()
            policy_loss = -(log_probs * (returns - values).detach() * masks).sum() / masks.sum()
            value_loss = (((returns - values) ** 2) * masks).sum() / masks.sum()
            loss = policy_loss + 0.5 * value_loss - 0.01 * entropy
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            probe.step(loss=loss)
            probe.log({"return": torch.stack(rewards).sum(0).mean(), "entropy": entropy.detach()})
    with torch.no_grad():
        greedy_return = torch.stack(rollout(greedy=True)[2]).sum(0).mean().item()
    return greedy_return > 0.8, {"greedy_return": greedy_return}


def _mmd(a, b, scale: float = 0.5) -> float:
    def kernel(u, v):
        return torch.exp(-torch.cdist(u, v) ** 2 / (2 * scale ** 2)).mean()
    return (kernel(a, a) + kernel(b, b) - 2 * kernel(a, b)).item()


def gan(store) -> tuple[bool, dict]:
    """A GAN on two moons (non-saturating loss, Adam 1e-3, betas (0.5, 0.999)).

    The generator's loss is the run's loss; the discriminator's goes through probe.log. Held out:
    the RBF MMD of 1,000 samples to held-out real points, before and after.
    """
    torch.manual_seed(0)
    data = torch.tensor(make_moons(3000, noise=0.05, random_state=0)[0], dtype=torch.float32)
    data = (data - data.mean(0)) / data.std(0)
    real_train, real_test = data[:2000], data[2000:]
    generator_net = nn.Sequential(nn.Linear(8, 64), nn.LeakyReLU(0.2), nn.Linear(64, 64), nn.LeakyReLU(0.2),
                                  nn.Linear(64, 2))
    discriminator = nn.Sequential(nn.Linear(2, 64), nn.LeakyReLU(0.2), nn.Linear(64, 64), nn.LeakyReLU(0.2),
                                  nn.Linear(64, 1))
    generator_optimizer = torch.optim.Adam(generator_net.parameters(), lr=1e-3, betas=(0.5, 0.999))
    discriminator_optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-3, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    ones, zeros = torch.ones(64, 1), torch.zeros(64, 1)
    generator = torch.Generator().manual_seed(1)

    def distance():
        with torch.no_grad():
            return _mmd(generator_net(torch.randn(1000, 8, generator=torch.Generator().manual_seed(5))), real_test)

    before = distance()
    with Probe(run="gan", store=store, config={"lr": 1e-3, "betas": [0.5, 0.999]}) as probe:
        probe.watch(generator_net, generator_optimizer)
        for step in range(900):
            real = real_train[torch.randint(0, len(real_train), (64,), generator=generator)]
            fake = generator_net(torch.randn(64, 8, generator=generator))
            discriminator_loss = bce(discriminator(real), ones) + bce(discriminator(fake.detach()), zeros)
            discriminator_optimizer.zero_grad()
            discriminator_loss.backward()
            discriminator_optimizer.step()
            generator_loss = bce(discriminator(fake), ones)
            generator_optimizer.zero_grad()
            generator_loss.backward()
            generator_optimizer.step()
            probe.step(loss=generator_loss)
            probe.log({"discriminator_loss": discriminator_loss.detach()})
            if (step + 1) % 150 == 0:
                probe.log({"mmd": distance()}, split="val")
    after = distance()
    return after < 0.1 * before, {"mmd_before": before, "mmd_after": after}


def triplet(store) -> tuple[bool, dict]:
    """Metric learning on the digits: TripletMarginLoss(margin=1), random same/other-class triplets.

    Held out: 5-nearest-neighbour accuracy of the embeddings, logged each epoch.
    """
    torch.manual_seed(0)
    x, y = _digits()
    xtr, ytr, xva, yva = x[:1400], y[:1400], x[1400:], y[1400:]
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.TripletMarginLoss(margin=1.0)
    generator = torch.Generator().manual_seed(1)
    by_class = [torch.nonzero(ytr == c).flatten() for c in range(10)]

    def members(classes):
        return torch.stack([by_class[c][torch.randint(len(by_class[c]), (1,), generator=generator)][0]
                            for c in classes.tolist()])

    with Probe(run="triplet", store=store, config={"lr": 1e-3, "margin": 1.0}) as probe:
        probe.watch(model, optimizer)
        for epoch in range(12):
            model.train()
            for idx in _batches(len(xtr), 64, generator):
                other = (ytr[idx] + torch.randint(1, 10, (len(idx),), generator=generator)) % 10
                loss = criterion(model(xtr[idx]), model(xtr[members(ytr[idx])]), model(xtr[members(other)]))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                probe.step(loss=loss, epoch=epoch)
            model.eval()
            with torch.no_grad():
                accuracy = _knn_accuracy(model(xtr), ytr, model(xva), yva)
            probe.log({"knn_accuracy": accuracy}, split="val")
    return accuracy > 0.93, {"val_knn_accuracy": accuracy}


def accumulation(store) -> tuple[bool, dict]:
    """A digits classifier: micro-batches of 16, gradients accumulated over 4, clipped at norm 1, SGD momentum.

    probe.step once per optimizer step with the effective batch's mean loss (the scaled losses summed).
    """
    torch.manual_seed(0)
    x, y = _digits()
    xtr, ytr, xva, yva = x[:1400], y[:1400], x[1400:], y[1400:]
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    accumulate = 4
    generator = torch.Generator().manual_seed(1)
    with Probe(run="accumulation", store=store, config={"lr": 0.1, "accumulate": accumulate, "clip": 1.0},
               num_classes=10) as probe:
        probe.watch(model, optimizer)
        for epoch in range(8):
            model.train()
            micro = _batches(len(xtr), 16, generator)
            for start in range(0, len(micro) - accumulate + 1, accumulate):
                total = 0.0
                for idx in micro[start:start + accumulate]:
                    loss = criterion(model(xtr[idx]), ytr[idx]) / accumulate
                    loss.backward()
                    total = total + loss.detach()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad()
                probe.step(loss=total, epoch=epoch)
            model.eval()
            with torch.no_grad(), probe.evaluate("val") as ev:
                logits = model(xva)
                ev.update(logits, yva, loss=criterion(logits, yva))
    with torch.no_grad():
        accuracy = (model(xva).argmax(-1) == yva).float().mean().item()
    return accuracy > 0.93, {"val_accuracy": accuracy}


def huber(store) -> tuple[bool, dict]:
    """Huber regression (delta 1) of the diabetes progression score, standardised; AdamW(model.parameters()).

    The data are noisy (a linear model explains about half the variance), so the loss levels off far
    above 0. Held out: R² on 92 patients.
    """
    torch.manual_seed(0)
    data = load_diabetes()
    order = torch.randperm(len(data.data), generator=torch.Generator().manual_seed(0))
    x = torch.tensor(data.data, dtype=torch.float32)[order]
    y = torch.tensor(data.target, dtype=torch.float32)[order]
    x = (x - x[:350].mean(0)) / x[:350].std(0)
    y = (y - y[:350].mean()) / y[:350].std()
    xtr, ytr, xva, yva = x[:350], y[:350], x[350:], y[350:]
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1))
    # AdamW over every parameter at its default decay, as most code writes it: biases are decayed too,
    # which is a hint (info), not a warning, while the decay does no visible harm.
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    criterion = nn.HuberLoss(delta=1.0)
    generator = torch.Generator().manual_seed(1)
    with Probe(run="huber", store=store, config={"lr": 3e-3}, task="regression") as probe:
        probe.watch(model, optimizer)
        for epoch in range(40):
            model.train()
            for idx in _batches(len(xtr), 32, generator):
                loss = criterion(model(xtr[idx]).squeeze(-1), ytr[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                probe.step(loss=loss, epoch=epoch)
            model.eval()
            with torch.no_grad(), probe.evaluate("val") as ev:
                prediction = model(xva).squeeze(-1)
                ev.update(loss=criterion(prediction, yva))
                r2 = 1 - ((prediction - yva) ** 2).sum().item() / ((yva - yva.mean()) ** 2).sum().item()
            probe.log({"r2": r2}, split="val")
    return r2 > 0.35, {"val_r2": r2}


# ---------------------------------------------------------------------------------------- the cases


def _false_alarm(reason: str, *rules: str):
    return {"marks": pytest.mark.xfail(strict=True, raises=FalseAlarm, reason=reason), "allowed": set(rules)}


CASES = {
    "vae": (vae, None),
    "diffusion": (diffusion, None),
    "contrastive": (contrastive, None),
    "multilabel": (multilabel, None),
    # The quick start's ev.update(logits, targets) with multi-hot targets: the probe records the loss and,
    # with one warning, no accuracy or confusion counts (a multi-label pass has no one class per example).
    "multilabel_logits_to_probe": (functools.partial(multilabel, run="multilabel_logits_to_probe",
                                                     logits_to_probe=True), None),
    "distillation": (distillation, _false_alarm(
        "bad_initial_loss (warning): the first loss (6.9 = 0.7*T^2*KL + 0.3*CE) is judged against ln 10 because "
        "num_classes=10 was given for the confusion counts; num_classes describes the model's head, not what "
        "the training loss measures", "bad_initial_loss")),
    "seq2seq": (seq2seq, None),
    "actor_critic": (actor_critic, None),
    "gan": (gan, None),
    "triplet": (triplet, None),
    "accumulation": (accumulation, None),
    "huber": (huber, None),
}


def _diagnose(capsys, store, name: str) -> tuple[list[dict], str]:
    """The CLI's findings (``diagnose --json``) and text report of one run."""
    capsys.readouterr()
    assert main(["diagnose", name, "--store", str(store), "--json"]) == 0
    findings = json.loads(capsys.readouterr().out)["runs"][0]["findings"]
    assert main(["diagnose", name, "--store", str(store)]) == 0
    return findings, capsys.readouterr().out


@pytest.mark.parametrize("name", [pytest.param(name, marks=(case or {}).get("marks", ()))
                                  for name, (_, case) in CASES.items()])
def test_a_healthy_program_of_a_new_kind_gets_no_warning(name, tmp_path, capsys):
    program, case = CASES[name]
    store = tmp_path / "store"
    learned, metrics = program(store)
    assert learned, f"{name} did not learn, so it proves nothing about false alarms: {metrics}"
    findings, text = _diagnose(capsys, store, name)
    loud = [f"{f['rule']} ({f['severity']}): {f['message']}" for f in findings if f["severity"] != "info"]
    if case is not None:
        unexpected = [line for line in loud if line.split(" ")[0] not in case["allowed"]]
        assert not unexpected, f"a false alarm beyond the known one on {name}: {unexpected}"
    # Loss levels are judged only against a known scale: none of these runs' levels is called poor.
    assert " poor" not in text.lower(), text
    if loud:
        raise FalseAlarm(f"{name} ({metrics}): " + "; ".join(loud))
