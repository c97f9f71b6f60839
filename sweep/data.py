"""Examples (image path, label, universal difficulty rank), image decoding and the model's transforms."""
from __future__ import annotations

import logging
import os
import random
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import timm.data
import torch
from PIL import Image
from torch import nn

from sweep.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    path: str   # absolute path of the image file; the example's identity
    label: int
    rank: int   # universal difficulty rank, 1 = easiest


def read_examples(images_root: Path, labels_csv: Path, difficulty_csv: Path) -> list[Example]:
    """Examples that exist on disk and have a label and a rank; CSV files are relative to `images_root`."""
    labels = pd.read_csv(labels_csv)
    ranks = pd.read_csv(difficulty_csv)
    for name, frame, needed in ((labels_csv, labels, {"file", "label"}), (difficulty_csv, ranks, {"path", "rank"})):
        if not needed <= set(frame.columns):
            raise UserError(f"{name}: expected columns {sorted(needed)}, found {list(frame.columns)}")
    merged = labels.merge(ranks, left_on="file", right_on="path", how="inner")
    if merged.empty:
        raise UserError(f"no file of {labels_csv} (e.g. {labels['file'].iloc[0] if len(labels) else 'none'!r}) "
                         f"matches a path of {difficulty_csv} (e.g. {ranks['path'].iloc[0] if len(ranks) else 'none'!r})")
    examples = [Example(str(Path(images_root) / f), int(y), int(r))
                for f, y, r in zip(merged["file"], merged["label"], merged["rank"])]
    present = [e for e in examples if os.path.isfile(e.path)]
    if not present:
        raise UserError(f"none of the {len(examples)} labelled, ranked images exists under {images_root} "
                                f"(e.g. {examples[0].path})")
    if len(present) < len(examples):
        missing = next(e.path for e in examples if not os.path.isfile(e.path))
        log.warning("%d of %d labelled, ranked images are missing on disk (e.g. %s): using the %d present",
                    len(examples) - len(present), len(examples), missing, len(present))
    return present


def check_labels(examples: list[Example], num_classes: int, model_name: str) -> None:
    """Every label must be a class of the model."""
    bad = next((e for e in examples if not 0 <= e.label < num_classes), None)
    if bad is not None:
        raise UserError(f"{bad.path}: label {bad.label} is outside the {num_classes} classes of model {model_name}")


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


def seeded_view(transform: Callable, image: Image.Image, seed: int) -> torch.Tensor:
    """Apply a random transform reproducibly (timm's random ops draw from `random` and torch)."""
    random.seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)


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
    return lambda example: seeded_view(transform, load_image(example.path),
                                       seed=seed * 1_000_003 + zlib.crc32(example.path.encode()))
