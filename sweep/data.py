"""Examples (image path, label, universal difficulty rank), image decoding and the model's transforms."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import timm.data
import torch
from PIL import Image
from torch import nn


@dataclass(frozen=True)
class Example:
    path: str   # absolute path of the image file; the example's identity
    label: int
    rank: int   # universal difficulty rank, 1 = easiest


def read_examples(images_root: Path, labels_csv: Path, difficulty_csv: Path) -> list[Example]:
    """Examples that have an image, a label and a rank; files in the CSVs are relative to `images_root`."""
    labels = pd.read_csv(labels_csv)
    ranks = pd.read_csv(difficulty_csv)
    for name, frame, needed in ((labels_csv, labels, {"file", "label"}), (difficulty_csv, ranks, {"path", "rank"})):
        if not needed <= set(frame.columns):
            raise ValueError(f"{name}: expected columns {sorted(needed)}, found {list(frame.columns)}")
    merged = labels.merge(ranks, left_on="file", right_on="path", how="inner")
    return [Example(str(Path(images_root) / f), int(y), int(r))
            for f, y, r in zip(merged["file"], merged["label"], merged["rank"])]


def load_image(path: str) -> Image.Image:
    """Decode an image file as RGB (grayscale, palette, CMYK and RGBA inputs are converted)."""
    with Image.open(path) as image:
        image.load()
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
