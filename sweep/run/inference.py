"""The pretrained model's verdict on many examples, in batches (images decoded by loader processes
while the model runs), in the loop's arithmetic: the loss and prediction of each, and its mistakes."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sweep.config import Precision
from sweep.data.examples import Example
from sweep.data.image_files import ImageReadError
from sweep.data.images import read_view
from sweep.errors import UserError
from sweep.randomness import seeded
from sweep.training.precision import autocast_context
from sweep.verdicts import judge


@dataclass(frozen=True)
class Mistake:
    """What the pretrained model did with an example it gets wrong."""
    loss: float
    prediction: int


class _Views(Dataset):
    """(index, view) of each example: None when its image cannot be decoded, the ImageReadError when
    its file cannot be read (raised in the main process, not in a loader process's traceback)."""

    def __init__(self, examples: list[Example], view: Callable[[Example], torch.Tensor]):
        self.examples, self.view = examples, view

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int):
        try:
            return i, read_view(self.view, self.examples[i])
        except ImageReadError as error:
            return i, error


def _collate(items):
    """(indices of the readable examples, their views stacked or None, the first read error or None)."""
    errors = [x for _, x in items if isinstance(x, ImageReadError)]
    readable = [(i, x) for i, x in items if isinstance(x, torch.Tensor)]
    return ([i for i, _ in readable], torch.stack([x for _, x in readable]) if readable else None,
            errors[0] if errors else None)


LOADER_MIN_EXAMPLES = 256  # fewer: decoding in this process beats starting loader processes
LOADER_MAX_WORKERS = 8


@dataclass(frozen=True)
class Search:
    """How a model is run over many examples: on the input `view` of each, on `device`, `batch_size` at a
    time (1 when the model is in train mode, so BatchNorm sees one image as in training), decoded by up
    to `cores` loader processes, in the arithmetic of `precision` (the loop's autocast and loss); in
    train mode the forward's randomness (dropout) is drawn from `forward_seed(example)`, as at the
    loop's step 0."""
    view: Callable[[Example], torch.Tensor]
    device: torch.device = torch.device("cpu")
    batch_size: int = 64
    cores: int = 1
    precision: Precision = Precision.fp32
    forward_seed: Optional[Callable[[Example], int]] = None
    progress: bool = True


def infer(model: nn.Module, examples: list[Example], search: Search) -> tuple[dict[Example, Mistake], int]:
    """The model's loss and prediction on every readable example, in its current mode, run as `search`
    says; and the number of images that could not be read. Images are decoded by loader processes
    (into pinned memory for a GPU) while the model runs. The model's buffers (BatchNorm running
    statistics, which train mode moves) are restored after.
    """
    view, device, forward_seed = search.view, search.device, search.forward_seed
    buffers = [(b, b.clone()) for b in model.buffers()]
    many = len(examples) >= LOADER_MIN_EXAMPLES and search.cores > 1
    workers = min(search.cores, LOADER_MAX_WORKERS) if many else 0
    loader = DataLoader(_Views(examples, view), batch_size=search.batch_size, num_workers=workers, collate_fn=_collate,
                        pin_memory=device.type == "cuda")
    autocast = autocast_context(search.precision, device.type)
    order: list[int] = []  # the readable examples, in the order judged

    def readable_batches():
        for indices, images, error in tqdm(loader, desc="finding mistakes", unit="batch", disable=not search.progress,
                                           leave=False):
            if error is not None:
                raise error
            if images is not None:
                order.extend(indices)
                yield (indices, images), torch.tensor([examples[i].label for i in indices])

    def forward(batch: tuple[list[int], torch.Tensor]) -> torch.Tensor:
        indices, images = batch
        seed = forward_seed(examples[indices[0]]) if forward_seed is not None and len(indices) == 1 else None
        with seeded(seed, device) if seed is not None else contextlib.nullcontext(), autocast():
            return model(images.to(device, non_blocking=True))

    try:
        verdicts = judge(forward, readable_batches(), search.precision)
        results = {examples[i]: Mistake(loss, p) for i, p, loss in
                   zip(order, verdicts.predicted.tolist(), verdicts.loss.tolist(), strict=True)}
    finally:  # train mode moves BatchNorm's running statistics: put them back, whatever happened
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
    return results, len(examples) - len(order)


def find_wrong(model: nn.Module, examples: list[Example], search: Search) -> tuple[dict[Example, Mistake], int]:
    """The examples the model misclassifies (see `infer`), and the number of images that could not be read."""
    results, unreadable = infer(model, examples, search)
    wrong = {example: mistake for example, mistake in results.items() if mistake.prediction != example.label}
    broken = [e for e, mistake in wrong.items() if not math.isfinite(mistake.loss)]
    if broken:
        raise UserError(f"{broken[0].path}: the loss at the pretrained weights is not finite (and for "
                        f"{len(broken) - 1} other images): the model, its weights (model.checkpoint, "
                        f"model.package) or the input are broken; nothing was trained")
    return wrong, unreadable
