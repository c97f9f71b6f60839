"""A model's verdict on labelled images, batch by batch: the one loop behind the search for mistakes,
the probe and the correctness matrix, each of which only says how it batches and forwards."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Optional

import torch

from sweep.config import Precision
from sweep.training.precision import cross_entropy


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
