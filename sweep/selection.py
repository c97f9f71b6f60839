"""Which examples a run processes: the model's mistakes at the pretrained weights, sampled reproducibly."""
from __future__ import annotations

import logging
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sweep.data import Example

log = logging.getLogger(__name__)


class _Views(Dataset):
    """(index, view) of each example, or (index, None) when its image cannot be decoded."""

    def __init__(self, examples: list[Example], view: Callable[[Example], torch.Tensor]):
        self.examples, self.view = examples, view

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int):
        try:
            return i, self.view(self.examples[i])
        except (OSError, ValueError, SyntaxError) as error:  # what PIL raises for corrupt or truncated files
            log.warning("%s cannot be read (%s): skipped", self.examples[i].path, error)
            return i, None


def _collate(items):
    readable = [(i, x) for i, x in items if x is not None]
    return [i for i, _ in readable], torch.stack([x for _, x in readable]) if readable else None


@torch.no_grad()
def find_wrong(model: nn.Module, examples: list[Example], view: Callable[[Example], torch.Tensor],
               device: torch.device, batch_size: int, progress: bool = True) -> tuple[dict[Example, float], int]:
    """Examples the model misclassifies, each with its cross-entropy loss there, evaluated in the
    model's current mode on the same view as training; and the number of images that could not be read.

    `batch_size` must be 1 when the model is in train mode, so BatchNorm sees one image as in training.
    """
    loader = DataLoader(_Views(examples, view), batch_size=batch_size, num_workers=0, collate_fn=_collate)
    wrong, readable = {}, 0
    for indices, images in tqdm(loader, desc="finding mistakes", unit="batch", disable=not progress, leave=False):
        if images is None:
            continue
        readable += len(indices)
        logits = model(images.to(device)).float()
        labels = torch.tensor([examples[i].label for i in indices], device=logits.device)
        losses = F.cross_entropy(logits, labels, reduction="none").cpu().tolist()
        predicted = logits.argmax(1).cpu().tolist()
        wrong.update({examples[i]: loss for i, p, loss in zip(indices, predicted, losses) if p != examples[i].label})
    return wrong, len(examples) - readable


def sample(wrong: Iterable[Example], sample_size: int, seed: int) -> list[Example]:
    """Draw `sample_size` without replacement, then order by difficulty (easiest first).

    The draw depends only on the wrong set, `sample_size` and `seed` (not on input order), so runs
    that differ in lr or max_steps see the same examples.
    """
    pool = sorted(wrong, key=lambda e: (e.rank, e.path))
    if sample_size >= len(pool):
        if sample_size > len(pool):
            log.warning("sample_size=%d but only %d wrong examples: taking all of them", sample_size, len(pool))
        return pool
    chosen = np.random.default_rng(seed).choice(len(pool), size=sample_size, replace=False)
    return [pool[i] for i in sorted(chosen)]
