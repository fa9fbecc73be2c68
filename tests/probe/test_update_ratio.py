"""The sampled update ratio against the exact one, on tensors too big to copy cheaply."""

from __future__ import annotations

import pytest
import torch

from traindoctor.probe.statistics import UpdateTracker


def _exact_ratios(before, params):
    return [(p.detach() - b).norm().item() / b.norm().item() for p, b in zip(params, before)]


@pytest.mark.parametrize(
    "optimizer_factory",
    [
        lambda params: torch.optim.Adam(params, lr=1e-3),
        lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
    ],
    ids=["adam", "sgd_momentum"],
)
def test_sampled_update_ratio_is_within_a_few_percent_of_exact(optimizer_factory):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256))
    params = list(model.parameters())
    optimizer = optimizer_factory(params)
    sampled = UpdateTracker(params, exact_max_bytes=0, sample_size=4096)
    exact = UpdateTracker(params)
    assert exact.exact and not sampled.exact
    errors = []
    for _ in range(5):
        model(torch.randn(64, 256)).pow(2).mean().backward()
        before = [p.detach().clone() for p in params]
        sampled.before_step()
        exact.before_step()
        optimizer.step()
        optimizer.zero_grad()
        sampled_norms, sampled_ratios = sampled.after_step()
        exact_norms, exact_ratios = exact.after_step()
        reference = torch.tensor(_exact_ratios(before, params))
        torch.testing.assert_close(exact_ratios, reference, rtol=1e-5, atol=0)
        torch.testing.assert_close(sampled_norms, exact_norms)  # weight norms are always exact
        errors.append(((sampled_ratios - reference).abs() / reference).max().item())
    # Tensors of <= 4096 elements (the biases) are kept whole, so exact; the
    # 131072-element weights are sampled at 1/32. Expected error ~ 1/sqrt(2·4096) ≈ 1 %.
    print(f"max relative error of the sampled update ratio: {max(errors):.4f}")
    assert max(errors) < 0.05
    small = [i for i, p in enumerate(params) if p.numel() <= 4096]
    assert all(sampled.indices[i] is None for i in small)


def test_sample_indices_are_fixed_across_steps():
    params = [torch.nn.Parameter(torch.randn(100_000))]
    tracker = UpdateTracker(params, exact_max_bytes=0, sample_size=128, seed=7)
    first = tracker.indices[0].clone()
    tracker.before_step()
    with torch.no_grad():
        params[0].add_(1.0)
    tracker.after_step()
    assert torch.equal(first, tracker.indices[0])
    assert torch.equal(first, UpdateTracker(params, exact_max_bytes=0, sample_size=128, seed=7).indices[0])
