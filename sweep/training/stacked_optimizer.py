"""AdamW, Adam and SGD over K independent copies of a model held as one stacked tensor per parameter.

The batched engine keeps each parameter of all its copies in one tensor of shape (K, ...). Each copy
must be stepped as if it had an optimizer of its own that started fresh with its current example:
its own step count (Adam's bias corrections) and its own moments or momentum. That state is stacked
the same way (moments of shape (K, ...), a step count per copy and parameter), and a fresh state is
zeros: torch.optim's own starting point, so a refilled copy is reset in place (`reset`).

A step is one call of torch.optim's fused kernel (`adamw.adamw`, `adam.adam`, `sgd.sgd` with
`fused=True`, as the simple path's `FusedOptimizer`), over per-copy views of the stacked tensors made
once: no per-copy Python in a step, and the same arithmetic as the simple path's optimizer, bit for
bit. The views are ordered copy by copy, so the first n copies are a prefix of each list: dropping
copies moves the kept ones to the front of the stacked tensors (`keep`) and steps a shorter prefix,
with nothing rebuilt.

With `fused=False` a step is torch.optim's default implementation instead (`foreach=True`: the same
arithmetic per tensor as its single-tensor loop on a CPU, and its multi-tensor kernels on a GPU),
which the original scripts' optimizer runs behind their loss scaler; the step counts then live on
the CPU, as torch.optim keeps them. A step may leave out copies (a loss scaler skips their update):
their parameters, moments and step counts stay as they were.
"""
from __future__ import annotations

import torch
from torch.optim import adam, adamw, sgd

from sweep.config import Optimizer
from sweep.training.fused_optimizer import BETAS, EPS


class StackedOptimizer:
    """One of AdamW, Adam (L2 weight decay) or SGD (momentum, no dampening) over stacked `params`,
    each (K, ...) with copy i's parameter in slice i, updated with the stacked `grads` (same shapes,
    written by the caller before each step). Only the first `count` copies are stepped."""

    def __init__(self, params: list[torch.Tensor], grads: list[torch.Tensor], name: Optimizer, lr: float,
                 weight_decay: float, momentum: float, fused: bool = True):
        self.name, self.lr, self.weight_decay, self.momentum, self.fused = name, lr, weight_decay, momentum, fused
        self.params, self.count = params, len(params[0])
        if name == Optimizer.sgd:  # the momentum buffer: zero is its fresh state (the first update stores the gradient)
            self.state = [[torch.zeros_like(p) for p in params]] if momentum else []
            self.steps = None
        else:  # Adam and AdamW: the two moments, and the step counts as torch.optim keeps them for fused kernels
            self.state = [[torch.zeros_like(p) for p in params] for _ in range(2)]
            self.steps = torch.zeros(len(params), self.count, dtype=torch.float32,
                                     device=params[0].device if fused else "cpu")
        stacked = [params, grads, *self.state] + ([list(self.steps)] if self.steps is not None else [])
        self.views = [[tensor[i] for i in range(self.count) for tensor in tensors] for tensors in stacked]

    def reset(self, i: int) -> None:
        """Copy i starts afresh, as with a new optimizer: its moments (or momentum) and step counts zero."""
        for tensors in self.state:
            for tensor in tensors:
                tensor[i].zero_()
        if self.steps is not None:
            self.steps[:, i] = 0

    def keep(self, order: list[int]) -> None:
        """Keep len(order) copies: slot j takes the state of copy order[j] (moved only where j differs),
        and only those slots are stepped from now on. The caller moves the parameters alike."""
        moves = move_rows(order)
        if moves is not None:
            for tensors in self.state:
                for tensor in tensors:
                    tensor[moves[0]] = tensor[moves[1]]
            if self.steps is not None:
                self.steps[:, moves[0]] = self.steps[:, moves[1]]
        self.count = len(order)

    @torch.no_grad()
    def step(self, copies: list[int] | None = None) -> None:
        """One update of the first `count` copies of every parameter, or of the copies in `copies` only."""
        n = len(self.params)
        if copies is None:
            params, grads, *state = (views[:self.count * n] for views in self.views)
        else:
            params, grads, *state = ([views[i * n + j] for i in copies for j in range(n)] for views in self.views)
            if not params:
                return
        how = {"fused": True} if self.fused else {"foreach": True, "fused": False}
        if self.name == Optimizer.sgd:  # a zero momentum buffer steps as torch's fresh (None) one, bit for bit
            sgd.sgd(params, grads, state[0] if state else [None] * len(params), **how,
                    weight_decay=self.weight_decay, momentum=self.momentum, lr=self.lr, dampening=0.0,
                    nesterov=False, maximize=False)
            return
        exp_avg, exp_avg_sq, steps = state
        update = adamw.adamw if self.name == Optimizer.adamw else adam.adam
        update(params, grads, exp_avg, exp_avg_sq, [], steps, **how, amsgrad=False, beta1=BETAS[0],
               beta2=BETAS[1], lr=self.lr, weight_decay=self.weight_decay, eps=EPS, maximize=False)


def move_rows(order: list[int]) -> tuple[list[int], list[int]] | None:
    """(targets, sources) of the rows that move when slot j takes copy order[j]; None if none moves."""
    moved = [(j, i) for j, i in enumerate(order) if i != j]
    return (list(j for j, _ in moved), list(i for _, i in moved)) if moved else None
