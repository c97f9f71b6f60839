"""What a correction costs the rest of the model: its drawdown on a probe set.

Model-editing work (Editable Neural Networks, Sinitsin et al. 2020) scores an edit by its drawdown:
the error on a fixed set of test images after the edit minus before. Here the probe is a set of
validation images the run never trains on, decoded once and kept as the model's input tensors,
always evaluated the way accuracy is measured (eval mode, the eval view): once at the pretrained
weights, then at the weights where each example's loop stopped.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sweep.models import eval_mode

GPU_BATCH = 256         # probe images per forward pass on a GPU
CPU_BATCH_PIXELS = 2 ** 19  # on a CPU, about 10 images of 224 px per forward: larger batches outgrow the caches


@dataclass(frozen=True)
class ProbeResult:
    """The probe at one set of weights: its error (fraction wrong) and mean loss, their increase over
    the pretrained weights' (the drawdown, and the loss increase), and how many images went from
    right to wrong and from wrong to right."""
    error: float
    loss: float
    drawdown: float
    loss_increase: float
    flips_to_wrong: int
    flips_to_right: int

    def columns(self) -> dict:
        """The results row's probe columns."""
        return {"probe_error_after": self.error, "drawdown": self.drawdown,
                "probe_flips_to_wrong": self.flips_to_wrong, "probe_flips_to_right": self.flips_to_right,
                "probe_loss_after": self.loss, "probe_loss_increase": self.loss_increase}


class Probe:
    """The probe images as tensors on the device, with the pretrained model's verdict on each."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, right_before: torch.Tensor, loss_before: torch.Tensor):
        self.x, self.y, self.right_before, self.loss_before = x, y, right_before, loss_before

    def __len__(self) -> int:
        return len(self.y)

    @property
    def error_before(self) -> float:
        return int((~self.right_before).sum()) / len(self)

    @property
    def mean_loss_before(self) -> float:
        return float(self.loss_before.mean())

    @classmethod
    def at_pretrained(cls, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Probe:
        """The probe of images `x` with labels `y`, judged by `model` at its (pretrained) weights."""
        right, loss = cls._judge(lambda batch: _eval_forward(model, batch), x, y)
        return cls(x, y, right, loss)

    def after(self, forward: Callable[[torch.Tensor], torch.Tensor]) -> ProbeResult:
        """The probe at the weights `forward` computes logits with (in eval mode, without gradients)."""
        right, loss = self._judge(forward, self.x, self.y)
        error, mean_loss = int((~right).sum()) / len(right), float(loss.mean())
        return ProbeResult(error=error, loss=mean_loss, drawdown=error - self.error_before,
                           loss_increase=mean_loss - self.mean_loss_before,
                           flips_to_wrong=int((self.right_before & ~right).sum()),
                           flips_to_right=int((~self.right_before & right).sum()))

    def after_model(self, model: nn.Module) -> ProbeResult:
        """The probe at `model`'s current weights, evaluated in eval mode (its mode restored after)."""
        return self.after(lambda batch: _eval_forward(model, batch))

    @staticmethod
    @torch.no_grad()
    def _judge(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
               y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(right, loss) of every image, in batches."""
        rights, losses = [], []
        batch = GPU_BATCH if x.is_cuda else max(1, min(GPU_BATCH, CPU_BATCH_PIXELS // (x.shape[-1] * x.shape[-2])))
        for start in range(0, len(y), batch):
            logits = forward(x[start:start + batch]).float()
            rights.append(logits.argmax(1) == y[start:start + batch])
            losses.append(F.cross_entropy(logits, y[start:start + batch], reduction="none"))
        return torch.cat(rights), torch.cat(losses)


def _eval_forward(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    with eval_mode(model):
        return model(batch)

