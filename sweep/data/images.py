"""The model's views of an example: its transforms, and the view of one example (None where unreadable)."""
from __future__ import annotations

import logging
from collections.abc import Callable

import timm.data
import torch
from PIL import Image
from torch import nn

from sweep.data.examples import Example
from sweep.data.image_files import UnreadableImage, load_image
from sweep.randomness import seeded, view_seed

log = logging.getLogger(__name__)


def model_transform(model: nn.Module, training: bool) -> Callable[[Image.Image], torch.Tensor]:
    """The model's own preprocessing (timm data config): the eval transform, or a random training view."""
    config = timm.data.resolve_data_config(model=model)
    return timm.data.create_transform(**config, is_training=training)


def read_view(view: Callable[[Example], torch.Tensor], example: Example) -> torch.Tensor | None:
    """`view(example)`, or None (logged) when its image cannot be decoded: the example is then
    recorded as unreadable and the run goes on. A file that cannot be read (ImageReadError) and an
    error in the transform are not the image's fault: they propagate."""
    try:
        return view(example)
    except UnreadableImage as error:
        log.warning("%s cannot be decoded (%s): recorded as unreadable", example.path, error)
        return None


def example_view(model: nn.Module, random_view: bool, seed: int) -> Callable[[Example], torch.Tensor]:
    """The model's input for an example: its eval transform, or one random training view seeded by
    the run seed and the image path (so the wrong-set search and the fine-tuning see the same one)."""
    transform = model_transform(model, training=random_view)
    if not random_view:
        return lambda example: transform(load_image(example.path))

    def one_view(example: Example) -> torch.Tensor:
        image = load_image(example.path)
        with seeded(view_seed(seed, example.path)):  # timm's random ops draw from `random` and torch
            return transform(image)

    return one_view
