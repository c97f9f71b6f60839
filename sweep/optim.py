"""AdamW, Adam and SGD stepped by torch's fused kernels, without torch.optim's per-step Python.

A step here is one call of the same ATen kernel, with the same arguments and the same lazily
created state, as `torch.optim.<Name>(..., fused=True)`, so parameters come out bit-identical
(tested). What is left out is the Python around it: parameter groups, hooks, grouping tensors by
device and dtype on every step (measured in benchmarks/engine.py; figures in the README).

As in torch.optim, a parameter whose `.grad` is None is skipped, and its state (step count, moments,
momentum buffer) is created on its first update and lives in `state[parameter]`.
"""
from __future__ import annotations

from typing import Optional

import torch

from sweep.config import Optimizer

BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim's defaults, which the original scripts used


class FusedOptimizer:
    """One of AdamW, Adam (L2 weight decay) or SGD (momentum, no dampening) over a list of parameters."""

    def __init__(self, params, name: Optimizer, lr: float, weight_decay: float, momentum: float):
        self.params = list(params)
        devices = {(p.device, p.dtype) for p in self.params}
        if len(devices) > 1:
            raise ValueError(f"the fused optimizer needs parameters of one device and dtype, got {sorted(map(str, devices))}")
        self.name, self.lr, self.weight_decay, self.momentum = name, lr, weight_decay, momentum
        self.state: dict[torch.Tensor, dict] = {}

    @torch.no_grad()
    def step(self, params: Optional[list[torch.Tensor]] = None) -> None:
        """One update of `params` (default: every parameter that has a gradient)."""
        if params is None:
            params = [p for p in self.params if p.grad is not None]
        if not params:
            return
        if self.name == Optimizer.sgd:
            self._sgd(params)
        else:
            self._adam(params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _adam(self, params: list[torch.Tensor]) -> None:
        states = [self.state.get(p) or self.state.setdefault(p, _adam_state(p)) for p in params]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        kernel = torch._fused_adamw_ if self.name == Optimizer.adamw else torch._fused_adam_
        kernel(params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
               [], steps, amsgrad=False, lr=self.lr, beta1=BETAS[0], beta2=BETAS[1],
               weight_decay=self.weight_decay, eps=EPS, maximize=False, grad_scale=None, found_inf=None)

    def _sgd(self, params: list[torch.Tensor]) -> None:
        if not self.momentum:
            self._sgd_kernel(params, [], is_first_step=False)
            return
        # torch.optim's first update copies the gradient into a new buffer (is_first_step); later
        # ones blend it in. Parameters at either stage are updated in one call per stage.
        fresh = [p for p in params if p not in self.state]
        later = [p for p in params if p in self.state]
        for p in fresh:
            self.state[p] = {"momentum_buffer": torch.empty_like(p.grad)}
        for group, first in ((fresh, True), (later, False)):
            if group:
                self._sgd_kernel(group, [self.state[p]["momentum_buffer"] for p in group], is_first_step=first)

    def _sgd_kernel(self, params: list[torch.Tensor], buffers: list[torch.Tensor], is_first_step: bool) -> None:
        torch._fused_sgd_(params, [p.grad for p in params], buffers, weight_decay=self.weight_decay,
                          momentum=self.momentum, lr=self.lr, dampening=0.0, nesterov=False, maximize=False,
                          is_first_step=is_first_step, grad_scale=None, found_inf=None)


def _adam_state(p: torch.Tensor) -> dict:
    """Fresh Adam state as torch.optim creates it for fused=True (float32 step on the parameter's device)."""
    return {"step": torch.zeros((), dtype=torch.float32, device=p.device),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
