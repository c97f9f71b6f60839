"""Stopping rules: how an example's loop ends (its status, and when), and when a whole run stops early."""
from __future__ import annotations

import math
from typing import Optional

import torch

from sweep.errors import UserError
from sweep.outputs import Status


def stop_status(loss_value: float, prediction: int, y: int, t: int, max_steps: int,
                check_final_state: bool = True) -> Optional[Status]:
    """Why the loop stops at step t, or None to take an update. Without `check_final_state` (the
    original scripts' boundary) the state after the last update is not checked for correctness."""
    if not math.isfinite(loss_value):
        return Status.DIVERGED
    if prediction == y and (t < max_steps or check_final_state):
        return Status.CORRECT
    if t == max_steps:
        return Status.NEVER_CORRECT
    return None


# stop_codes' codes for the statuses a loop can stop with (0: not stopped)
STOP_CODES = {1: Status.CORRECT, 2: Status.NEVER_CORRECT, 3: Status.DIVERGED}


def stop_codes(losses: torch.Tensor, predictions: torch.Tensor, labels: torch.Tensor, t: torch.Tensor,
               max_steps: int, check_final_state: bool = True) -> torch.Tensor:
    """`stop_status` of many loops at once, on their device (no host synchronisation): an int8
    tensor of STOP_CODES keys, 0 where a loop takes an update."""
    finite = torch.isfinite(losses)
    correct = finite & (predictions == labels)
    if not check_final_state:
        correct &= t < max_steps
    never = finite & ~correct & (t == max_steps)
    codes = torch.zeros_like(t, dtype=torch.int8)
    return codes.masked_fill(correct, 1).masked_fill(never, 2).masked_fill(~finite, 3)


class DivergenceGuard:
    """Stops a run that cannot give useful results: an example whose loss is not finite at the
    pretrained weights (a broken model, weights or input), or more than half of the first
    `FIRST` examples diverging (too large a learning rate). Rows written before are kept."""

    FIRST = 10

    def __init__(self, lr: float):
        self.lr, self.seen, self.diverged = lr, 0, 0

    def check(self, row: dict) -> None:
        if row["status"] != Status.DIVERGED:
            self.seen += 1
            return
        if not math.isfinite(row["initial_loss"]):
            raise UserError(f"{row['path']}: the loss at the pretrained weights is not finite: the model, its weights "
                            f"(model.checkpoint, model.package) or the input are broken; rows before it are kept")
        self.seen, self.diverged = self.seen + 1, self.diverged + 1
        if self.seen <= self.FIRST and self.diverged > self.FIRST / 2:
            raise UserError(f"{self.diverged} of the first {self.seen} examples diverged (the loss became non-finite): "
                            f"lr={self.lr:g} is too large for this model; try a smaller one, e.g. lr={self.lr / 10:g}. "
                            f"Rows so far are kept")
