"""Batched engine: K independent copies of the pretrained model, each fine-tuned on its own example,
in one vmapped forward/backward per step (torch.func), with finished slots refilled from the queue.

Each copy follows exactly the loop of `sweep.correct` (same checks, same order, and a fresh
optimizer of the same kind per example, stepping that copy's slice of the stacked parameters), so
per-example outcomes match the simple path up to floating-point reduction order.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from sweep.config import ModelMode, TrainConfig
from sweep.correct import Outcome, autocast_context, l2_norm, make_optimizer, margin, stop_status


def batching_obstacle(model: nn.Module, train: TrainConfig) -> Optional[str]:
    """Why the batched engine cannot reproduce the simple path for this setup, or None."""
    if train.mode == ModelMode.train:
        return "train.mode=train: BatchNorm statistics and dropout differ per copy (simple path used)"
    return None


@dataclass
class _Slot:
    item: object
    y: int
    optimizer: torch.optim.Optimizer
    params: list[torch.Tensor]           # this copy's views into the stacked parameters
    t: int = 0
    loss_sum: float = 0.0
    first: dict = field(default_factory=dict)


class BatchedTrainer:
    """Runs many single-example fine-tunings at once; yields (item, Outcome) as each finishes."""

    def __init__(self, model: nn.Module, train: TrainConfig, lr: float, max_steps: int, parallel: int):
        self.model, self.train, self.lr, self.max_steps, self.parallel = model, train, lr, max_steps, parallel
        self.model.eval()
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.pretrained = [p.detach().clone() for n, p in model.named_parameters() if p.requires_grad]
        # shared by all copies and never updated: buffers (eval mode) and frozen parameters
        self.constants = {**{n: b.detach() for n, b in model.named_buffers()},
                          **{n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}}
        self.autocast = autocast_context(train.precision, self.pretrained[0].device.type)
        self._step = vmap(grad_and_value(self._loss, has_aux=True), in_dims=(0, None, 0, 0))

    def _loss(self, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor):
        with self.autocast():
            logits = functional_call(self.model, ({**params, **buffers}), (x.unsqueeze(0),))
        return F.cross_entropy(logits.float(), y.unsqueeze(0)), logits.detach().float().squeeze(0)

    def run(self, queue: Iterable[tuple[object, torch.Tensor, int]],
            on_step: Optional[Callable[[int, float], None]] = None) -> Iterator[tuple[object, Outcome]]:
        """`queue` yields (item, x of shape (C, H, W), label); items come back with their outcomes."""
        queue = iter(queue)
        initial = list(itertools.islice(queue, self.parallel))
        if not initial:
            return
        k = len(initial)
        stacked = [p.unsqueeze(0).repeat(k, *([1] * p.dim())) for p in self.pretrained]
        xs = torch.stack([x for _, x, _ in initial])
        ys = torch.zeros(k, dtype=torch.long, device=xs.device)
        slots: list[Optional[_Slot]] = [None] * k

        def fill(i: int, entry) -> None:
            item, x, y = entry
            for s, p0 in zip(stacked, self.pretrained):
                s[i].copy_(p0)
            xs[i].copy_(x)
            ys[i] = y
            views = [s[i] for s in stacked]
            slots[i] = _Slot(item, y, make_optimizer(views, self.train.optimizer, self.lr, self.train.weight_decay,
                                                     self.train.momentum), views)

        for i, entry in enumerate(initial):
            fill(i, entry)

        while any(slots):
            active = [i for i, s in enumerate(slots) if s is not None]
            if len(active) < len(slots):  # queue exhausted: drop idle copies instead of computing them
                stacked = [s[active] for s in stacked]
                xs, ys = xs[active], ys[active]
                slots = [slots[i] for i in active]
                for i, slot in enumerate(slots):
                    slot.params = [s[i] for s in stacked]
                    for group in slot.optimizer.param_groups:
                        old = group["params"]
                        group["params"] = slot.params
                        for o, new in zip(old, slot.params):
                            if o in slot.optimizer.state:
                                slot.optimizer.state[new] = slot.optimizer.state.pop(o)
            grads, (losses, logits) = self._step(dict(zip(self.names, stacked)), self.constants, xs, ys)
            loss_values, predictions = losses.tolist(), logits.argmax(1).tolist()
            for i, slot in enumerate(slots):
                loss_value, prediction = loss_values[i], predictions[i]
                if slot.t == 0:
                    slot.first = {"initial_loss": loss_value, "initial_prediction": prediction,
                                  "initial_margin": margin(logits[i], slot.y),
                                  "initial_grad_norm": l2_norm([grads[n][i] for n in self.names])}
                status = stop_status(loss_value, prediction, slot.y, slot.t, self.max_steps)
                if status is not None:
                    yield slot.item, self._outcome(slot, status, loss_value)
                    entry = next(queue, None)
                    slots[i] = None
                    if entry is not None:
                        fill(i, entry)
                    continue
                slot.loss_sum += loss_value
                for p, n in zip(slot.params, self.names):
                    p.grad = grads[n][i]
                slot.optimizer.step()
                slot.t += 1
                if on_step is not None:
                    on_step(slot.t, loss_value)
            for slot in slots:
                if slot is not None:
                    for p in slot.params:
                        p.grad = None

    def _outcome(self, slot: _Slot, status: str, final_loss: float) -> Outcome:
        distance = l2_norm([p - p0 for p, p0 in zip(slot.params, self.pretrained)])
        return Outcome(status=status, loss_sum=slot.loss_sum, final_loss=final_loss, weight_distance=distance,
                       steps_taken=slot.t, **slot.first)

