"""Which examples a run processes: the model's mistakes at the pretrained weights, sampled reproducibly."""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd
import torch
import torch.nn.functional as F
from filelock import FileLock
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sweep.config import Augmentation, Config, MemoryFormat, SearchMode
from sweep.data.examples import Example
from sweep.data.images import example_view, read_view
from sweep.errors import UserError
from sweep.files import atomic_write_text

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


LOADER_MIN_EXAMPLES = 256  # fewer: decoding in this process beats starting loader processes
LOADER_MAX_WORKERS = 8


@torch.no_grad()
def find_wrong(model: nn.Module, examples: list[Example], view: Callable[[Example], torch.Tensor],
               device: torch.device, batch_size: int, progress: bool = True,
               cores: int = 1) -> tuple[dict[Example, float], int]:
    """Examples the model misclassifies, each with its cross-entropy loss there, evaluated in the
    model's current mode on the same view as training; and the number of images that could not be read.

    Images are decoded by up to `cores` loader processes (into pinned memory for a GPU) while the
    model runs. `batch_size` must be 1 when the model is in train mode, so BatchNorm sees one image
    as in training. The model's buffers (BatchNorm running statistics, which train mode moves) are
    restored after.
    """
    buffers = [(b, b.clone()) for b in model.buffers()]
    workers = min(cores, LOADER_MAX_WORKERS) if len(examples) >= LOADER_MIN_EXAMPLES and cores > 1 else 0
    loader = DataLoader(_Views(examples, view), batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                        pin_memory=device.type == "cuda")
    wrong, readable = {}, 0
    for indices, images in tqdm(loader, desc="finding mistakes", unit="batch", disable=not progress, leave=False):
        if images is None:
            continue
        readable += len(indices)
        logits = model(images.to(device, non_blocking=True)).float()
        labels = torch.tensor([examples[i].label for i in indices], device=logits.device)
        losses = F.cross_entropy(logits, labels, reduction="none").cpu().tolist()
        predicted = logits.argmax(1).cpu().tolist()
        wrong.update({examples[i]: loss for i, p, loss in zip(indices, predicted, losses) if p != examples[i].label})
    for buffer, saved in buffers:
        buffer.copy_(saved)
    broken = [e for e, loss in wrong.items() if not math.isfinite(loss)]
    if broken:
        raise UserError(f"{broken[0].path}: the loss at the pretrained weights is not finite (and for "
                        f"{len(broken) - 1} other images): the model, its weights (model.checkpoint, "
                        f"model.package) or the input are broken; nothing was trained")
    return wrong, len(examples) - readable


def state_digest(model: nn.Module) -> str:
    """A digest of every parameter and buffer: the identity of the pretrained weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def examples_digest(examples: list[Example]) -> str:
    return hashlib.sha256(repr([(e.path, e.label) for e in examples]).encode()).hexdigest()[:16]


def cached_wrong_set(cache: Path, key: dict, examples: list[Example],
                     search: Callable[[], tuple[dict[Example, float], int]]) -> tuple[dict[Example, float], int]:
    """The wrong set of `key` from the cache, or searched once (under a lock: parallel jobs of a
    sweep over lrs search once per model) and stored."""
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache / "wrong-sets" / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    by_path = {e.path: e for e in examples}
    with FileLock(f"{path}.lock"):
        if path.exists():
            table = pd.read_csv(path)
            info = json.loads(path.with_suffix(".json").read_text())
            log.info("wrong set from the cache (%s): %d examples", path, len(table))
            return {by_path[p]: loss for p, loss in zip(table["path"], table["loss"])}, info["unreadable"]
        wrong, unreadable = search()
        frame = pd.DataFrame({"path": [e.path for e in wrong], "loss": list(wrong.values())})
        path.with_suffix(".json").write_text(json.dumps({**key, "unreadable": unreadable}, indent=2))
        atomic_write_text(path, frame.to_csv(index=False))
    return wrong, unreadable


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


def sample_mistakes(model: nn.Module, examples: list[Example], view: Callable[[Example], torch.Tensor], n: int,
                    seed: int = 0) -> list[tuple[Example, float]]:
    """`n` of the model's mistakes among `examples` (in its current mode, on `view`, on the CPU), drawn as a
    run draws them, easiest first, each with its loss at the pretrained weights."""
    wrong, _ = find_wrong(model, examples, view, torch.device("cpu"), 64, progress=False)
    return [(example, wrong[example]) for example in sample(rank_order(wrong), n, seed)]


def select(cfg: Config, model: nn.Module, examples: list[Example], view: Callable[[Example], torch.Tensor],
           device: torch.device, precomputed: Optional[list[Example]], cache: Optional[Path] = None,
           cores: int = 1, layout: MemoryFormat = MemoryFormat.contiguous) -> Selection:
    """The run's selection: its wrong set (precomputed, or found by inference at the pretrained
    weights, in the training mode and view or, with search.mode=eval, in eval mode on the eval view;
    cached under `cache` per model, weights, examples, mode, view, device and the weights' memory
    `layout`), sampled."""
    losses: dict[Example, float] = {}
    if precomputed is not None:
        pool, unreadable = precomputed, 0
    else:
        training = model.training
        random_view = cfg.train.augmentation == Augmentation.one_view
        if cfg.search.mode == SearchMode.eval:
            model.eval()
            view, random_view = example_view(model, random_view=False, seed=cfg.seed), False
        search = functools.partial(find_wrong, model, examples, view, device, 1 if model.training else 64,
                                   progress=cfg.progress, cores=cores)
        if cache is None:
            losses, unreadable = search()
        else:
            key = {"weights": state_digest(model), "examples": examples_digest(examples), "training": model.training,
                   "view": f"random, seed {cfg.seed}" if random_view else "eval", "device": device.type}
            if layout != MemoryFormat.contiguous:  # contiguous entries keep the key they had before layouts
                key["memory_format"] = layout.value
            losses, unreadable = cached_wrong_set(cache, key, examples, search)
        model.train(training)
        pool = rank_order(losses)
    log.info("the pretrained model gets %d of %d examples wrong (%d unreadable)", len(pool), len(examples),
             unreadable)
    if not pool:
        raise UserError(f"model {cfg.model.arch} gets no example of data={cfg.data.name} wrong: nothing to correct")
    chosen = sample(pool, cfg.sample_size, cfg.seed)
    info = {"examples": len(examples), "wrong": len(pool), "unreadable": unreadable, "selected": len(chosen)}
    return Selection(chosen, {e.path: losses[e] for e in chosen if e in losses}, info)
