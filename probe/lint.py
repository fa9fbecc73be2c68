"""Configuration lint: mistakes visible in the model and optimizer before training starts.

Each check is a pure function returning :class:`LintFinding`s whose ``rule`` is a
``RULES.md`` id; the probe records them as ``config_lint`` events with
``detail`` = ``{"rule", "message", "params"}`` as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Sequence

import torch

# Module classes whose weights are normalisation gains: HF Trainer's
# get_decay_parameter_names excludes exactly these and all biases (seed 001).
_NORM_TYPES: tuple[type, ...] = (
    torch.nn.modules.batchnorm._NormBase,
    torch.nn.LayerNorm,
    torch.nn.GroupNorm,
    torch.nn.LocalResponseNorm,
    *((torch.nn.RMSNorm,) if hasattr(torch.nn, "RMSNorm") else ()),
)
# Adam-family optimizers, for the hints below.
_ADAM_TYPES = ("Adam", "AdamW", "NAdam", "RAdam", "Adamax", "FusedAdam", "FusedAdamW")
# Transformers trained from scratch use beta2 = 0.98 ("Attention is all you
# need", seed 001); the default 0.999 reacts slowly to gradient-scale changes.
TRANSFORMER_BETA2 = 0.98
# Seed 002 ("FP16 training"): with fp16, raise Adam's eps from 1e-8 towards 1e-6..1e-4.
FP16_MIN_ADAM_EPS = 1e-7
# How many parameter names a finding lists before it says "and N more".
_MAX_LISTED = 20


@dataclass(frozen=True)
class LintFinding:
    rule: str
    message: str
    params: list[str] = field(default_factory=list)

    def detail(self) -> str:
        return json.dumps({"rule": self.rule, "message": self.message, "params": self.params})


def is_norm_module(module: torch.nn.Module) -> bool:
    """True for normalisation layers, including custom ones named ``*Norm``."""
    return isinstance(module, _NORM_TYPES) or type(module).__name__.endswith(("Norm", "Norm1d", "Norm2d"))


def no_decay_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names of biases and normalisation weights: parameters weight decay should skip."""
    names: set[str] = set()
    for module_name, module in model.named_modules():
        norm = is_norm_module(module)
        for param_name, _ in module.named_parameters(recurse=False):
            if norm or param_name == "bias" or param_name.endswith("_bias"):
                names.add(f"{module_name}.{param_name}" if module_name else param_name)
    return names


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def check_weight_decay(model: torch.nn.Module, optimizer: torch.optim.Optimizer, names: dict[int, str]) -> list[LintFinding]:
    """Weight decay applied to biases or norm weights (HF Trainer excludes them; seed 001)."""
    exempt = no_decay_parameter_names(model)
    decayed = [
        names[id(param)]
        for group in optimizer.param_groups
        if float(group.get("weight_decay", 0.0) or 0.0) > 0.0
        for param in group["params"]
        if names.get(id(param)) in exempt
    ]
    if not decayed:
        return []
    return [
        LintFinding(
            "weight_decay_on_norm_and_bias",
            f"weight decay is applied to {len(decayed)} bias/normalisation parameter(s) ({_listed(decayed)}); "
            "put them in a param group with weight_decay=0",
            decayed[:_MAX_LISTED],
        )
    ]


def check_adam(optimizer: torch.optim.Optimizer, *, has_attention: bool, amp_dtype: torch.dtype | None) -> list[LintFinding]:
    """Adam hints from the seeds, only where the configuration clearly contradicts them."""
    if type(optimizer).__name__ not in _ADAM_TYPES:
        return []
    findings = []
    for index, group in enumerate(optimizer.param_groups):
        betas = group.get("betas")
        eps = group.get("eps")
        if has_attention and betas is not None and float(betas[1]) > 0.99:
            findings.append(LintFinding(
                "adam_hyperparameters",
                f"param group {index}: Adam beta2={float(betas[1]):g} on an attention model; transformers trained "
                f"from scratch commonly use beta2={TRANSFORMER_BETA2} for stability",
            ))
        if amp_dtype == torch.float16 and eps is not None and float(eps) < FP16_MIN_ADAM_EPS:
            findings.append(LintFinding(
                "adam_hyperparameters",
                f"param group {index}: Adam eps={float(eps):g} under fp16; if training is unstable raise eps "
                "to 1e-6 or more",
            ))
    return findings


def check_fp16_without_scaler(amp_dtype: torch.dtype | None, scaler_enabled: bool) -> list[LintFinding]:
    """fp16 autocast with no GradScaler: small gradients underflow to zero (seed 001)."""
    if amp_dtype != torch.float16 or scaler_enabled:
        return []
    return [LintFinding(
        "amp_skipped_steps",
        "fp16 autocast is used without a GradScaler: small gradients underflow to zero; pass "
        "scaler=torch.amp.GradScaler() to scale the loss (or use bfloat16)",
    )]


def has_attention(model: torch.nn.Module) -> bool:
    """True if any submodule looks like an attention layer."""
    return any(
        isinstance(module, torch.nn.MultiheadAttention) or "attention" in type(module).__name__.lower()
        for module in model.modules()
    )
