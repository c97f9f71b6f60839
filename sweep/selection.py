"""Which examples a run processes: the model's mistakes at the pretrained weights, sampled reproducibly."""
from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sweep.config import SearchMode
from sweep.data import Example, example_view, read_view
from sweep.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Selection:
    examples: list[Example]           # the sampled wrong examples, easiest first
    initial_losses: dict[str, float]  # path -> loss at the pretrained weights, where the search computed it
    info: dict                        # counts: examples, wrong, unreadable, selected


class _Views(Dataset):
    """(index, view) of each example, or (index, None) when its image cannot be decoded."""

    def __init__(self, examples: list[Example], view: Callable[[Example], torch.Tensor]):
        self.examples, self.view = examples, view

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int):
        return i, read_view(self.view, self.examples[i])


def _collate(items):
    readable = [(i, x) for i, x in items if x is not None]
    return [i for i, _ in readable], torch.stack([x for _, x in readable]) if readable else None


@torch.no_grad()
def find_wrong(model: nn.Module, examples: list[Example], view: Callable[[Example], torch.Tensor],
               device: torch.device, batch_size: int, progress: bool = True) -> tuple[dict[Example, float], int]:
    """Examples the model misclassifies, each with its cross-entropy loss there, evaluated in the
    model's current mode on the same view as training; and the number of images that could not be read.

    `batch_size` must be 1 when the model is in train mode, so BatchNorm sees one image as in training.
    The model's buffers (BatchNorm running statistics, which train mode moves) are restored after.
    """
    buffers = [(b, b.clone()) for b in model.buffers()]
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
    for buffer, saved in buffers:
        buffer.copy_(saved)
    broken = [e for e, loss in wrong.items() if not math.isfinite(loss)]
    if broken:
        raise UserError(f"{broken[0].path}: the loss at the pretrained weights is not finite (and for {len(broken) - 1} "
                        f"other images): the model, its weights (model.checkpoint, model.package) or the input are "
                        f"broken; nothing was trained")
    return wrong, len(examples) - readable


def rank_order(examples) -> list[Example]:
    """Examples easiest first (ties, which a ranking does not have, by path)."""
    return sorted(examples, key=lambda e: (e.rank, e.path))


def sample(pool: list[Example], sample_size: int, seed: int) -> list[Example]:
    """The original scripts' draw: `random.Random(seed).sample(pool, sample_size)` when the pool is
    larger, else all of it; then ordered by difficulty, easiest first.

    The pool's order is part of the draw: matrix-column order for a wrong set from a correctness
    matrix (as the original), else rank order. So the draw depends only on the wrong set,
    `sample_size` and `seed`, and runs that differ in lr or max_steps see the same examples.
    """
    if sample_size >= len(pool):
        if sample_size > len(pool):
            log.warning("sample_size=%d but only %d wrong examples: taking all of them", sample_size, len(pool))
        chosen = list(pool)
    else:
        chosen = random.Random(seed).sample(pool, sample_size)
    return sorted(chosen, key=lambda e: e.rank)


def select(cfg, model: nn.Module, examples: list[Example], view: Callable[[Example], torch.Tensor],
           device: torch.device, precomputed: Optional[list[Example]]) -> Selection:
    """The run's selection: its wrong set (precomputed, or found by inference at the pretrained
    weights, in the training mode and view or, with search.mode=eval, in eval mode on the eval view),
    sampled."""
    losses: dict[Example, float] = {}
    if precomputed is not None:
        pool, unreadable = precomputed, 0
    else:
        training = model.training
        if cfg.search.mode == SearchMode.eval:
            model.eval()
            view = example_view(model, random_view=False, seed=cfg.seed)
        losses, unreadable = find_wrong(model, examples, view, device, 1 if model.training else 64,
                                        progress=cfg.progress)
        model.train(training)
        pool = rank_order(losses)
    log.info("the pretrained model gets %d of %d examples wrong (%d unreadable)", len(pool), len(examples),
             unreadable)
    if not pool:
        raise UserError(f"model {cfg.model.arch} gets no example of data={cfg.data.name} wrong: nothing to correct")
    chosen = sample(pool, cfg.sample_size, cfg.seed)
    info = {"examples": len(examples), "wrong": len(pool), "unreadable": unreadable, "selected": len(chosen)}
    return Selection(chosen, {e.path: losses[e] for e in chosen if e in losses}, info)
