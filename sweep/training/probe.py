"""What a correction costs the rest of the model: its drawdown on a probe set.

Model-editing work (Editable Neural Networks, Sinitsin et al. 2020) scores an edit by its drawdown:
the error on a fixed set of test images after the edit minus before. Here the probe is a set of
validation images the run never trains on, decoded once and kept as the model's input tensors,
always evaluated the way accuracy is measured (eval mode, the eval view): once at the pretrained
weights, then at the weights where each example's loop stopped.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from sweep.models import eval_mode
from sweep.randomness import probe_offset
from sweep.training.flops import StepCost
from sweep.verdicts import in_batches, judge

GPU_BATCH = 256         # probe images per forward pass on a GPU
CPU_BATCH_PIXELS = 2 ** 19  # on a CPU, about 10 images of 224 px per forward: larger batches outgrow the caches


@dataclass(frozen=True)
class ProbeResult:
    """The probe at one set of weights, over the first `images` of the probe set: their error
    (fraction wrong) and mean loss, the increase over the pretrained weights' on the same images (the
    drawdown, and the loss increase), and how many went from right to wrong and from wrong to right;
    `seconds` is the wall time it took (not a column: it feeds the summary's phases)."""
    images: int
    error: float
    loss: float
    drawdown: float
    loss_increase: float
    flips_to_wrong: int
    flips_to_right: int
    seconds: float = 0.0

    def columns(self) -> dict:
        """The results row's probe columns."""
        return {"probe_images": self.images, "probe_error_after": self.error, "drawdown": self.drawdown,
                "probe_flips_to_wrong": self.flips_to_wrong, "probe_flips_to_right": self.flips_to_right,
                "probe_loss_after": self.loss, "probe_loss_increase": self.loss_increase}


class Probe:
    """The probe images as tensors on the device, with the pretrained model's verdict on each.

    With a `budget` (probe.size=auto), an example is judged on part of the probe set only, as many
    images as cost at most `budget` times its correction's FLOPs (`cost`, counted): an example
    corrected in a few updates gets a few images, one that took hundreds gets the whole set. Each
    example's images start at an offset of its own into the set (`probe_offset` of its path, going
    round the end), so that cheap corrections are not all judged on the same few images: their
    drawdowns would be correlated, while the bootstrap over examples treats them as independent. The
    set is a random draw, so any run of consecutive images is a random sample of it, and a drawdown
    always compares the same images before and after. Without a budget (an explicit probe.size)
    every example gets the whole set, in the set's order.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, right_before: torch.Tensor, loss_before: torch.Tensor,
                 budget: Optional[float] = None, cost: Optional[StepCost] = None):
        self.x, self.y, self.right_before, self.loss_before = x, y, right_before, loss_before
        self.budget, self.cost = budget, cost

    def __len__(self) -> int:
        return len(self.y)

    def images_for(self, updates: int) -> int:
        """How many probe images judge an example whose loop took `updates` updates."""
        if self.budget is None:
            return len(self)
        affordable = math.floor(self.budget * self.cost.correction_flops(updates) / self.cost.forward_flops)
        return max(1, min(len(self), affordable))

    def positions(self, updates: int, key: Optional[str]) -> torch.Tensor:
        """The positions in the set of the images that judge the example `key` (its path) whose loop took
        `updates` updates: images_for(updates) of them from the example's own offset, round the end."""
        n = self.images_for(updates)
        offset = probe_offset(key) % len(self) if self.budget is not None and key is not None else 0
        return (offset + torch.arange(n, device=self.y.device)) % len(self)

    @property
    def error_before(self) -> float:
        return int((~self.right_before).sum()) / len(self)

    @property
    def mean_loss_before(self) -> float:
        return float(self.loss_before.mean())

    @classmethod
    def at_pretrained(cls, model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: Optional[float] = None,
                      cost: Optional[StepCost] = None) -> Probe:
        """The probe of images `x` with labels `y`, judged by `model` at its (pretrained) weights."""
        right, loss = cls._judge(lambda batch: _eval_forward(model, batch), x, y)
        return cls(x, y, right, loss, budget, cost)

    def after(self, forward: Callable[[torch.Tensor], torch.Tensor], updates: int,
              key: Optional[str] = None) -> ProbeResult:
        """The probe at the weights `forward` computes logits with (in eval mode, without gradients),
        for the example `key` whose loop took `updates` updates."""
        tick = time.perf_counter()
        positions = self.positions(updates, key)
        whole = len(positions) == len(self) and int(positions[0]) == 0
        x, y = (self.x, self.y) if whole else (self.x[positions], self.y[positions])
        right, loss = self._judge(forward, x, y)
        return self.result(positions, right, loss, time.perf_counter() - tick)

    def result(self, positions: torch.Tensor, right: torch.Tensor, loss: torch.Tensor,
               seconds: float) -> ProbeResult:
        """The result of the verdicts `right` and losses `loss` on the images at `positions`."""
        n = len(right)
        right_before, loss_before = self.right_before[positions], self.loss_before[positions]
        error, mean_loss = int((~right).sum()) / n, float(loss.mean())
        return ProbeResult(images=n, error=error, loss=mean_loss, drawdown=error - int((~right_before).sum()) / n,
                           loss_increase=mean_loss - float(loss_before.mean()),
                           flips_to_wrong=int((right_before & ~right).sum()),
                           flips_to_right=int((~right_before & right).sum()), seconds=seconds)

    def after_model(self, model: nn.Module, updates: int, key: Optional[str] = None) -> ProbeResult:
        """The probe at `model`'s current weights, evaluated in eval mode (its mode restored after)."""
        return self.after(lambda batch: _eval_forward(model, batch), updates, key)

    def judge_many(self, forward: Callable[[torch.Tensor], torch.Tensor],
                   positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(right, loss), each (copies, n), of several copies at once, copy i on the images at
        positions[i] (copies, n): `forward` maps the copies' batches (copies, batch, C, H, W) to
        logits (copies, batch, classes)."""
        chunks = positions.split(max(1, GPU_BATCH // len(positions)), dim=1)
        verdicts = judge(lambda x: forward(x).float(), ((self.x[chunk], self.y[chunk]) for chunk in chunks))
        return verdicts.right, verdicts.loss

    @staticmethod
    def _judge(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
               y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(right, loss) of every image, in batches."""
        batch = GPU_BATCH if x.is_cuda else max(1, min(GPU_BATCH, CPU_BATCH_PIXELS // (x.shape[-1] * x.shape[-2])))
        verdicts = judge(lambda images: forward(images).float(), in_batches(x, y, batch))
        return verdicts.right, verdicts.loss


def _eval_forward(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    with eval_mode(model):
        return model(batch)

