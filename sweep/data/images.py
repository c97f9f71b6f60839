"""Examples (image path, label, universal difficulty rank), image decoding and the model's transforms."""
from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable

import numpy as np
import timm.data
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from sweep.data.examples import Example
from sweep.errors import UserError
from sweep.randomness import seeded, view_seed

log = logging.getLogger(__name__)


class UnreadableImage(Exception):
    """An image file that exists and was read, but cannot be decoded (corrupt, truncated, not an image):
    its example is recorded as unreadable, for good."""


class ImageReadError(UserError):
    """An image file that could not be read, attempt after attempt (missing, no permission, a storage
    error): the run stops with the file named, keeping every row finished; a resume retries it."""


READ_ATTEMPTS, READ_BACKOFF_SECONDS = 4, 0.5  # a failed read waits 0.5, 1, 2 s before the next attempt

# What PIL raises for bytes it cannot decode (its UnidentifiedImageError and truncated files are
# OSErrors; some broken PNG and JPEG streams raise SyntaxError or ValueError, an overlarge image
# DecompressionBombError). Raised while decoding bytes already in memory, none of them is a read error.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def load_image(path: str, attempts: int = READ_ATTEMPTS) -> Image.Image:
    """Decode an image file as 8-bit RGB: grayscale, palette, CMYK, RGBA and 16-bit inputs are converted.

    The file is read first, in up to `attempts` tries with a growing pause (a network file system's
    hiccup), and raises ImageReadError if it stays unreadable; bytes that cannot be decoded raise
    UnreadableImage.
    """
    data = read_bytes(path, attempts)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale: scale to 8 bits, not clip
                pixels = np.asarray(image, dtype=np.float64)
                image = Image.fromarray(np.clip(pixels / 257.0, 0, 255).astype(np.uint8))
            return image.convert("RGB")
    except DECODE_ERRORS as error:
        what = "not an image format PIL can decode" if isinstance(error, UnidentifiedImageError) else error
        raise UnreadableImage(f"{type(error).__name__}: {what}") from error


def read_bytes(path: str, attempts: int = READ_ATTEMPTS) -> bytes:
    """The file's bytes, in up to `attempts` tries with a doubling pause between them; ImageReadError after."""
    for attempt in range(attempts):
        try:
            with open(path, "rb") as file:
                return file.read()
        except OSError as error:
            if attempt == attempts - 1:
                raise ImageReadError(f"{path}: cannot be read ({type(error).__name__}: {error.strerror or error}) "
                                     f"after {attempts} attempt{'s' * (attempts > 1)}; the rows finished so far are "
                                     f"kept, and rerunning the same command resumes the run") from None
            log.warning("%s: read failed (%s), attempt %d of %d", path, error, attempt + 1, attempts)
            time.sleep(READ_BACKOFF_SECONDS * 2 ** attempt)
    raise AssertionError("unreachable")


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
