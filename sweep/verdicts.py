"""A model's verdict on labelled images, batch by batch: the one loop behind the search for mistakes,
the probe and the correctness matrix, each of which only says how it batches and forwards."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F

from sweep.config import Precision


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, precision: Precision,
                  reduction: str = "mean") -> torch.Tensor:
    """The loss of `logits` (as the forward under `precision` left them) against `target`.

    For `fp16_scaler`, the original's arithmetic: `nn.CrossEntropyLoss` inside CUDA's fp16 autocast.
    `cross_entropy` has no autocast rule of its own on CUDA; it decomposes into
    `log_softmax(logits, dtype=logits.dtype)`, whose explicit dtype autocast keeps, so the
    log-probabilities are fp16, and `nll_loss`, which autocast runs in fp32 on those fp16 values.
    The loss is an fp32 tensor holding an fp16 value (as 99.9% of the original's logged losses are),
    and its gradient reaches the log-probabilities cast back to fp16: at the scaler's first scale,
    65,536, the true class's gradient is -65,536, beyond fp16's largest finite value, so the first
    update always overflows and is skipped. Written out here, it is the same on a CPU, whose autocast
    would instead compute `cross_entropy` in fp32.

    Otherwise the loss is computed in fp32 from the logits (bf16 logits are upcast first).
    """
    if precision == Precision.fp16_scaler:
        return F.nll_loss(torch.log_softmax(logits, 1, dtype=logits.dtype).float(), target, reduction=reduction)
    return F.cross_entropy(logits.float(), target, reduction=reduction)


@dataclass(frozen=True)
class Verdicts:
    """Per image, in the order of the batches (batches concatenated along their last dimension, so a
    batch of several copies' images, (copies, batch), gives (copies, images)): the predicted class,
    whether it is the label, the loss, and the true class's probability when asked for."""
    predicted: torch.Tensor
    right: torch.Tensor
    loss: torch.Tensor
    probability: Optional[torch.Tensor] = None


@torch.no_grad()
def judge(forward: Callable[[Any], torch.Tensor], batches: Iterable[tuple[Any, torch.Tensor]],
          precision: Precision = Precision.fp32, probability: bool = False) -> Verdicts:
    """The verdicts of `forward` (inputs -> logits, classes last) on each (inputs, labels) of `batches`.

    The loss is the loop's for `precision` (fp32 from the logits, or the original's fp16 arithmetic),
    so that an image's loss here is its loss at step 0; the probability is the softmax's, in fp32.
    """
    predicted, right, loss, true_probability = [], [], [], []
    for inputs, labels in batches:
        logits = forward(inputs)
        labels = labels.to(logits.device)
        predicted.append(logits.argmax(-1))
        right.append(predicted[-1] == labels)
        loss.append(cross_entropy(logits.movedim(-1, 1), labels, precision, reduction="none"))
        if probability:
            true_probability.append(logits.float().softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1))
    if not predicted:  # nothing to judge (every image unreadable, say)
        return Verdicts(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.bool), torch.empty(0),
                        torch.empty(0) if probability else None)
    return Verdicts(torch.cat(predicted, -1), torch.cat(right, -1), torch.cat(loss, -1),
                    torch.cat(true_probability, -1) if probability else None)


def in_batches(x: torch.Tensor, y: torch.Tensor, size: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) in consecutive batches of `size` images."""
    return zip(x.split(size), y.split(size), strict=True)
