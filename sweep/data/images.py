"""Examples (image path, label, universal difficulty rank), image decoding and the model's transforms."""
from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import timm.data
import torch
from PIL import Image
from torch import nn

from sweep.data.examples import Example
from sweep.randomness import seeded, view_seed

log = logging.getLogger(__name__)


def load_image(path: str) -> Image.Image:
    """Decode an image file as 8-bit RGB: grayscale, palette, CMYK, RGBA and 16-bit inputs are converted."""
    with Image.open(path) as image:
        image.load()
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale: scale to 8 bits, not clip
            pixels = np.asarray(image, dtype=np.float64)
            image = Image.fromarray(np.clip(pixels / 257.0, 0, 255).astype(np.uint8))
        return image.convert("RGB")


def model_transform(model: nn.Module, training: bool) -> Callable[[Image.Image], torch.Tensor]:
    """The model's own preprocessing (timm data config): the eval transform, or a random training view."""
    config = timm.data.resolve_data_config(model=model)
    return timm.data.create_transform(**config, is_training=training)


UNREADABLE_ERRORS = (OSError, ValueError, SyntaxError)  # what PIL raises for corrupt or truncated files


def read_view(view: Callable[[Example], torch.Tensor], example: Example) -> torch.Tensor | None:
    """`view(example)`, or None (logged) when its image cannot be decoded: the example is then
    recorded as unreadable and the run goes on."""
    try:
        return view(example)
    except UNREADABLE_ERRORS as error:
        log.warning("%s cannot be read (%s)", example.path, error)
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
