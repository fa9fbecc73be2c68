"""On-device statistics: per-tensor norms and the update/weight ratio of an optimizer step.

Everything here launches kernels and returns device tensors; nothing reads a
value back to the host.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

# Weights up to this size are copied whole before a cadence step, so the
# update ratio is exact; above it a fixed sample of elements per tensor is
# kept instead: a full copy would add the model's size to peak memory (500 MB
# for GPT-2 small), while 4096 samples per tensor cost ~1 % error.
DEFAULT_EXACT_MAX_BYTES = 128 * 2**20
# Elements sampled per tensor in sampled mode. For a ratio the relative error
# of the sampled ‖Δw‖ is about 1/sqrt(2·k) when updates are roughly uniform in
# size (Adam); k=4096 gives ~1 % (tests/probe/test_update_ratio.py measures it).
DEFAULT_SAMPLE_SIZE = 4096


def tensor_norms(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """L2 norm of each tensor, in float32, stacked into one 1-D tensor."""
    if not tensors:
        return torch.zeros(0)
    device = tensors[0].device
    if all(t.device == device and t.layout == torch.strided and t.dtype != torch.float64 for t in tensors):
        # dtype=float32 accumulates fp16/bf16 tensors without overflow.
        return torch.stack(torch._foreach_norm(list(tensors), 2, dtype=torch.float32))
    # float64 cannot be narrowed by vector_norm's dtype=: take the norm, then convert.
    return torch.stack([norm32(t).to(device) for t in tensors])


def norm32(tensor: torch.Tensor) -> torch.Tensor:
    """L2 norm of one tensor (dense, sparse or float64) as a 0-d float32 tensor on its device."""
    tensor = _dense(tensor)
    if tensor.dtype == torch.float64:
        return torch.linalg.vector_norm(tensor).float()
    return torch.linalg.vector_norm(tensor, dtype=torch.float32)


def _dense(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.coalesce().values() if tensor.is_sparse else tensor


class UpdateTracker:
    """Measures ‖w_after − w_before‖ / ‖w_before‖ per tensor across one optimizer step.

    Exact mode keeps a full copy of the weights between the step's pre- and
    post-hook. Sampled mode keeps, per tensor larger than ``sample_size``, the
    same ``sample_size`` randomly chosen elements (fixed at construction) and
    scales the sampled ‖Δw‖ by sqrt(numel / sample_size): an unbiased
    estimate of ‖Δw‖² over the whole tensor; ‖w_before‖ is always exact.

    Args:
        params: the watched parameters, in recording order.
        exact_max_bytes: copy the weights whole when they take at most this much.
        sample_size: elements kept per tensor in sampled mode.
        seed: seed of the sample indices.
    """

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        *,
        exact_max_bytes: int = DEFAULT_EXACT_MAX_BYTES,
        sample_size: int = DEFAULT_SAMPLE_SIZE,
        seed: int = 0,
    ) -> None:
        self.params = list(params)
        total_bytes = sum(p.numel() * p.element_size() for p in self.params)
        self.exact = total_bytes <= exact_max_bytes
        self.indices: list[torch.Tensor | None] = []
        self.scales: list[float] = []
        generator = torch.Generator().manual_seed(seed)
        for param in self.params:
            if self.exact or param.numel() <= sample_size:
                self.indices.append(None)
                self.scales.append(1.0)
            else:
                index = torch.randperm(param.numel(), generator=generator)[:sample_size]
                self.indices.append(index.sort().values.to(param.device))
                self.scales.append(math.sqrt(param.numel() / sample_size))
        device = self.params[0].device if self.params else torch.device("cpu")
        # Made here, not at the first step: a host-to-device copy from pageable memory syncs.
        self._scale_tensor = torch.tensor(self.scales, dtype=torch.float32).to(device)
        self._before: list[torch.Tensor] | None = None
        self._before_norms: torch.Tensor | None = None

    def _kept(self) -> list[torch.Tensor]:
        # Called under no_grad: no detach() needed (one dispatcher call per tensor fewer).
        return [
            p.clone() if index is None else p.reshape(-1).index_select(0, index)
            for p, index in zip(self.params, self.indices)
        ]

    @torch.no_grad()
    def before_step(self) -> None:
        """Remember the weights (or their samples) and ‖w_before‖."""
        self._before_norms = tensor_norms(self.params)
        self._before = self._kept()

    @torch.no_grad()
    def after_step(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Return (weight norms after the step, update ratios), or None without a ``before_step``."""
        if self._before is None or self._before_norms is None:
            return None
        # In place on the copy taken before the step (w_before - w_after: the
        # same norm): no second copy of the weights, no allocation of Δw.
        now = [p if index is None else p.reshape(-1).index_select(0, index)
               for p, index in zip(self.params, self.indices)]
        torch._foreach_sub_(self._before, now)
        delta_norms = tensor_norms(self._before)
        ratios = delta_norms * self._scale_tensor / self._before_norms
        weight_norms = tensor_norms(self.params)
        self._before = self._before_norms = None
        return weight_norms, ratios

    def discard(self) -> None:
        self._before = self._before_norms = None
