"""The loop's arithmetic: autocast, and its updates (plain fused steps, or the original fp16 loss scaler). The
loss itself is `sweep.verdicts.cross_entropy`, shared with every verdict."""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from sweep.config import Optimizer, Precision, TrainConfig
from sweep.training.fused_optimizer import FusedOptimizer


def autocast_context(precision: Precision, device_type: str) -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 or fp16 autocast, or nothing for fp32."""
    if precision in (Precision.bf16, Precision.fp16_scaler):
        dtype = torch.bfloat16 if precision == Precision.bf16 else torch.float16
        return lambda: torch.autocast(device_type, dtype=dtype)
    return contextlib.nullcontext


class ScaledUpdates:
    """The original scripts' fp16 updates: torch.optim's optimizer (as they built it) behind a fresh
    GradScaler. An update whose scaled gradient overflows is skipped and the scale halved."""

    def __init__(self, params: list[torch.Tensor], train: TrainConfig, lr: float, device_type: str):
        self.optimizer = torch_optimizer(params, train, lr)
        self.scaler = torch.amp.GradScaler(device_type)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # the gradient's true scale, for the gradient norm and the step

    def step(self) -> bool:
        """Take the update unless the gradient overflowed; True if it was skipped."""
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        return self.scaler.get_scale() < scale

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()


class PlainUpdates:
    """Plain updates: backward, then one step of the fused optimizer."""

    def __init__(self, params: list[torch.Tensor], train: TrainConfig, lr: float):
        self.optimizer = FusedOptimizer(params, train.optimizer, lr, train.weight_decay, train.momentum)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> bool:
        self.optimizer.step()
        self.optimizer.zero_grad()
        return False

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()


def torch_optimizer(params: list[torch.Tensor], train: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """torch.optim's default (non-fused) implementation of `train.optimizer`, as the original scripts built it."""
    if train.optimizer == Optimizer.sgd:
        return torch.optim.SGD(params, lr=lr, momentum=train.momentum, weight_decay=train.weight_decay)
    kind = torch.optim.AdamW if train.optimizer == Optimizer.adamw else torch.optim.Adam
    return kind(params, lr=lr, weight_decay=train.weight_decay)

