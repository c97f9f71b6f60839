"""AdamW, Adam and SGD stepped through torch.optim's functional API with its fused kernels.

A step is one call of `torch.optim.adamw.adamw` (or `adam.adam`, `sgd.sgd`) with `fused=True`:
the same kernel, arguments and lazily created state as `torch.optim.<Name>(..., fused=True)`, so
parameters come out bit-identical (tested against the installed torch). What is left out is the
optimizer object's Python around it (parameter groups, hooks), which matters for the tiny steps
of single-example fine-tuning; and it lets the batched engine give each copy's parameters their
own state yet step many copies, or any subset of them, in one call.

As in torch.optim, a parameter whose `.grad` is None is skipped, and its state (step count, moments,
momentum buffer) is created on its first update and lives in `state[parameter]`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.optim import adam, adamw, sgd

from sweep.config import Optimizer

BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim's defaults, which the original scripts used


class FusedOptimizer:
    """One of AdamW, Adam (L2 weight decay) or SGD (momentum, no dampening) over a list of parameters."""

    def __init__(self, params, name: Optimizer, lr: float, weight_decay: float, momentum: float):
        self.params = list(params)
        devices = {(p.device, p.dtype) for p in self.params}
        if len(devices) > 1:
            raise ValueError(f"the fused optimizer needs parameters of one device and dtype, "
                             f"got {sorted(map(str, devices))}")
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
        step = adamw.adamw if self.name == Optimizer.adamw else adam.adam
        step(params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
             [s["step"] for s in states], fused=True, amsgrad=False, beta1=BETAS[0], beta2=BETAS[1], lr=self.lr,
             weight_decay=self.weight_decay, eps=EPS, maximize=False)

    def _sgd(self, params: list[torch.Tensor]) -> None:
        # torch.optim's first update of a parameter creates its momentum buffer from the gradient;
        # later ones blend the gradient in. Parameters at either stage are updated in one call each.
        fresh = [p for p in params if p not in self.state]
        later = [p for p in params if p in self.state]
        for group in (fresh, later):
            if not group:
                continue
            buffers = [self.state[p]["momentum_buffer"] if p in self.state else None for p in group]
            sgd.sgd(group, [p.grad for p in group], buffers, fused=True, weight_decay=self.weight_decay,
                    momentum=self.momentum, lr=self.lr, dampening=0.0, nesterov=False, maximize=False)
            if self.momentum and group is fresh:  # the buffers torch.optim just created
                self.state.update({p: {"momentum_buffer": buffer} for p, buffer in zip(group, buffers, strict=True)})


def _adam_state(p: torch.Tensor) -> dict:
    """Fresh Adam state as torch.optim creates it for fused=True (float32 step on the parameter's device)."""
    return {"step": torch.zeros((), dtype=torch.float32, device=p.device),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
