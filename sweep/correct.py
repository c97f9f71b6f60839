"""The core loop: reset to the pretrained weights, fine-tune on one example until it is classified correctly.

For t = 0, 1, ...: forward; if the loss is not finite -> diverged; if argmax == y -> correct with
steps_to_correct = t; if t == max_steps -> never_correct; else add the loss to loss_sum and take one
optimizer step. So loss_sum sums the losses of the updates actually taken.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from sweep.config import ModelMode, Precision, TrainConfig
from sweep.optim import FusedOptimizer

CORRECT, NEVER_CORRECT, DIVERGED, UNREADABLE = "correct", "never_correct", "diverged", "unreadable"


@dataclass
class Outcome:
    status: str
    loss_sum: float           # sum of the losses of the updates taken (a lower bound unless correct)
    initial_loss: float
    final_loss: float         # loss of the last state evaluated
    initial_prediction: int
    initial_margin: float     # true-class logit minus the largest other logit, at the pretrained weights
    initial_grad_norm: float  # L2 norm of the full gradient at the pretrained weights
    weight_distance: float    # L2 distance between final and pretrained parameters
    steps_taken: int          # optimizer updates taken

    @property
    def steps_to_correct(self) -> int:
        """t at which argmax == y; -1 unless corrected (the original convention)."""
        return self.steps_taken if self.status == CORRECT else -1

    @property
    def total_loss_to_correct(self) -> float:
        """The original scripts' cost: loss_sum plus the loss of the first correct state; -1 if never correct."""
        return self.loss_sum + self.final_loss if self.status == CORRECT else -1.0


def stop_status(loss_value: float, prediction: int, y: int, t: int, max_steps: int) -> Optional[str]:
    """Why the loop stops at step t, in the order of DESIGN.md, or None to take an update."""
    if not math.isfinite(loss_value):
        return DIVERGED
    if prediction == y:
        return CORRECT
    if t == max_steps:
        return NEVER_CORRECT
    return None


def autocast_context(precision: Precision, device_type: str) -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 autocast (no loss scaler: bf16 needs none), or nothing for fp32."""
    if precision == Precision.bf16:
        return lambda: torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext


class SingleExampleTrainer:
    """Fine-tunes one model on one example at a time, restoring the pretrained state before each."""

    def __init__(self, model: nn.Module, train: TrainConfig, lr: float, max_steps: int):
        self.model, self.train, self.lr, self.max_steps = model, train, lr, max_steps
        state = model.state_dict(keep_vars=True)
        self.state = list(state.values())
        self.snapshot = [t.detach().clone() for t in self.state]
        saved = dict(zip(state, self.snapshot))
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in trainable]
        self.pretrained_params = [saved[name] for name, _ in trainable]  # the snapshot's tensors, no second copy
        self.autocast = autocast_context(train.precision, next(model.parameters()).device.type)

    @torch.no_grad()
    def reset(self) -> None:
        """Restore every parameter and buffer in place (no reallocation, unlike load_state_dict)."""
        for tensor, saved in zip(self.state, self.snapshot):
            tensor.copy_(saved)
        for param in self.params:  # no gradient left over from earlier use of the model
            param.grad = None
        self.model.train(self.train.mode == ModelMode.train)

    def fit(self, x: torch.Tensor, y: int, on_step: Optional[Callable[[int, float], None]] = None) -> Outcome:
        """Run the loop on one example `x` (1, C, H, W) with label `y` from the pretrained weights."""
        self.reset()
        optimizer = FusedOptimizer(self.params, self.train.optimizer, self.lr, self.train.weight_decay,
                                   self.train.momentum)
        target = torch.tensor([y], device=x.device)
        loss_sum, t = 0.0, 0
        while True:
            with self.autocast():
                logits = self.model(x)
            loss = F.cross_entropy(logits.float(), target)
            # one host synchronisation per step: the loss and the prediction together
            loss_value, prediction = torch.stack([loss.detach(), logits.detach().argmax(1)[0].float()]).tolist()
            prediction = int(prediction)
            if t == 0:
                initial_loss, initial_prediction = loss_value, prediction
                initial_margin = margin(logits.detach().float()[0], y)
                loss.backward()
                initial_grad_norm = l2_norm([p.grad for p in self.params if p.grad is not None])
            status = stop_status(loss_value, prediction, y, t, self.max_steps)
            if status is not None:
                break
            loss_sum += loss_value
            if t > 0:
                loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            t += 1
            if on_step is not None:
                on_step(t, loss_value)
        optimizer.zero_grad()
        return Outcome(status=status, loss_sum=loss_sum,
                       initial_loss=initial_loss, final_loss=loss_value, initial_prediction=initial_prediction,
                       initial_margin=initial_margin, initial_grad_norm=initial_grad_norm,
                       weight_distance=self.weight_distance(), steps_taken=t)

    @torch.no_grad()
    def weight_distance(self) -> float:
        return l2_norm([p - p0 for p, p0 in zip(self.params, self.pretrained_params)])


def margin(logits: torch.Tensor, y: int) -> float:
    """True-class logit minus the largest other logit."""
    others = torch.cat([logits[:y], logits[y + 1:]])
    return float(logits[y] - others.max())


def l2_norm(tensors: list[torch.Tensor]) -> float:
    """L2 norm of all the tensors' entries together."""
    if not tensors:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors])))
