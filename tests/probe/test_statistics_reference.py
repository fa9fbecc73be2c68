"""Every recorded statistic equals a plain per-tensor computation done beside the probe."""

from __future__ import annotations

import math

import pytest
import torch

from traindoctor.probe import Probe
from tests.probe.conftest import make_batches, make_model, read_run, series

OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "adam": lambda params: torch.optim.Adam(params, lr=1e-2),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1),
}
# mode: (micro-batches per step, autocast dtype, GradScaler, clip after backward)
MODES = {
    "fp32": (1, None, False, False),
    "accumulate3": (3, None, False, False),
    "clip": (1, None, False, True),
    "accumulate_clip": (2, None, False, True),
    "bf16_autocast": (1, torch.bfloat16, False, True),
    "fp16_scaler_clip": (2, torch.float16, True, True),
}
STEPS = 6
SKIPPED_STEP = 4  # under a scaler, an inf is planted in a gradient at this step


def _ratio(update: float, weight: float) -> float:
    return update / weight if weight else (math.inf if update else math.nan)


def _train(tmp_path, optimizer_name: str, mode: str, layer_every: int = 1, model_dtype=torch.float32):
    micro, dtype, use_scaler, clip = MODES[mode]
    model = make_model().to(model_dtype)
    optimizer = OPTIMIZERS[optimizer_name]([
        {"params": [p for n, p in model.named_parameters() if n.startswith("0.")]},
        {"params": [p for n, p in model.named_parameters() if not n.startswith("0.")], "lr": 3e-3},
    ])
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8) if use_scaler else None
    names = dict((id(p), n) for n, p in model.named_parameters())
    batches = make_batches(STEPS * micro)
    reference: dict[int, dict] = {}
    with Probe(run="ref", store=tmp_path, layer_every=layer_every, strict=True) as probe:
        probe.watch(model, optimizer, scaler=scaler)
        for step in range(1, STEPS + 1):
            losses = []
            for x, y in batches[(step - 1) * micro: step * micro]:
                x = x.to(model_dtype)
                with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                losses.append(loss.detach().float())
                (scaler.scale(loss / micro) if scaler else loss / micro).backward()
            if scaler and step == SKIPPED_STEP:
                model[0].weight.grad[0, 0] = float("inf")
            scale = scaler.get_scale() if scaler else 1.0
            grad_norms = {names[id(p)]: p.grad.double().norm().item() / scale for p in model.parameters()}
            if scaler:
                scaler.unscale_(optimizer)
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.05)
            before = {names[id(p)]: p.detach().clone().double() for p in model.parameters()}
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad()
            reference[step] = {
                "loss": torch.stack(losses).mean().item(),
                "grad_norm": grad_norms,
                "weight_norm": {n: p.detach().double().norm().item() for n, p in model.named_parameters()},
                "update_ratio": {
                    n: _ratio((p.detach().double() - before[n]).norm().item(), before[n].norm().item())
                    for n, p in model.named_parameters()
                },
                "lr": [group["lr"] for group in optimizer.param_groups],
                "scale": scale,
            }
            probe.step(loss=torch.stack(losses).mean(), epoch=0)
    return reference, model, use_scaler


@pytest.mark.parametrize("mode", list(MODES), ids=list(MODES))
@pytest.mark.parametrize("optimizer_name", list(OPTIMIZERS), ids=list(OPTIMIZERS))
def test_recorded_statistics_equal_per_tensor_reference(tmp_path, optimizer_name, mode):
    reference, model, use_scaler = _train(tmp_path, optimizer_name, mode)
    meta, scalars, events, _ = read_run(tmp_path)
    skipped = {SKIPPED_STEP} if use_scaler else set()
    measured_steps = [s for s in reference if s not in skipped]
    assert meta["status"] == "finished"
    assert series(scalars, "loss") == pytest.approx({s: r["loss"] for s, r in reference.items()}, rel=1e-6)
    for group in range(2):
        assert series(scalars, "lr", layer=f"group{group}") == pytest.approx(
            {s: r["lr"][group] for s, r in reference.items()})
    assert series(scalars, "grad_norm") == pytest.approx(
        {s: math.sqrt(sum(v * v for v in reference[s]["grad_norm"].values())) for s in measured_steps}, rel=1e-5)
    for name, _ in model.named_parameters():
        for statistic in ("grad_norm", "weight_norm", "update_ratio"):
            expected = {s: reference[s][statistic][name] for s in measured_steps}
            assert series(scalars, statistic, layer=name) == pytest.approx(expected, rel=1e-4, abs=1e-9), (statistic, name)
    if use_scaler:
        assert series(scalars, "amp_scale") == pytest.approx({s: r["scale"] for s, r in reference.items()})
        assert series(scalars, "amp_skipped") == {s: float(s in skipped) for s in reference}
        assert events.loc[events["kind"] == "amp_step_skipped", "step"].tolist() == [SKIPPED_STEP]
    else:
        assert "amp_scale" not in set(scalars["name"])


@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_float64_model_statistics_equal_reference(tmp_path, optimizer_name):
    reference, model, _ = _train(tmp_path, optimizer_name, "accumulate_clip", model_dtype=torch.float64)
    _, scalars, _, _ = read_run(tmp_path)
    assert series(scalars, "grad_norm") == pytest.approx(
        {s: math.sqrt(sum(v * v for v in r["grad_norm"].values())) for s, r in reference.items()}, rel=1e-5)
    for name, _ in model.named_parameters():
        for statistic in ("grad_norm", "weight_norm", "update_ratio"):
            expected = {s: r[statistic][name] for s, r in reference.items()}
            assert series(scalars, statistic, layer=name) == pytest.approx(expected, rel=1e-4, abs=1e-9), (statistic, name)


def test_per_layer_statistics_follow_the_cadence(tmp_path):
    _train(tmp_path, "adam", "fp32", layer_every=2)
    _, scalars, _, _ = read_run(tmp_path)
    for statistic in ("grad_norm", "weight_norm", "update_ratio"):
        steps = set(scalars.loc[(scalars["name"] == statistic) & scalars["layer"].notna(), "step"])
        assert steps == {1, 2, 4, 6}, statistic
    assert set(series(scalars, "grad_norm")) == set(range(1, STEPS + 1))
