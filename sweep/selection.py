"""Which examples a run processes: the model's mistakes at the pretrained weights, sampled reproducibly."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sweep.data import Example, read_view
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


def select(cfg, model: nn.Module, examples: list[Example], view: Callable[[Example], torch.Tensor],
           device: torch.device, precomputed: Optional[list[Example]]) -> Selection:
    """The run's selection: its wrong set (precomputed, or found by inference at the pretrained
    weights in the model's mode), sampled."""
    if precomputed is not None:
        wrong, unreadable = dict.fromkeys(precomputed, np.nan), 0
        log.info("wrong set from the correctness matrix row of %s", OmegaConf.select(cfg, "data.wrong_from_model"))
    else:
        batch_size = 1 if model.training else 64
        wrong, unreadable = find_wrong(model, examples, view, device, batch_size, progress=cfg.progress)
    log.info("the pretrained model gets %d of %d examples wrong (%d unreadable)", len(wrong), len(examples),
             unreadable)
    if not wrong:
        raise UserError(f"model {cfg.model.arch} gets no example of data={cfg.data.name} wrong: nothing to correct")
    chosen = sample(wrong, cfg.sample_size, cfg.seed)
    info = {"examples": len(examples), "wrong": len(wrong), "unreadable": unreadable, "selected": len(chosen)}
    return Selection(chosen, {e.path: wrong[e] for e in chosen if not np.isnan(wrong[e])}, info)
