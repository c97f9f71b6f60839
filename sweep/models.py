"""Create timm models and load their pretrained weights."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import timm
import torch
from torch import nn


def create_model(arch: str, num_classes: Optional[int] = None, image_size: Optional[int] = None,
                 mean: Optional[tuple] = None, std: Optional[tuple] = None) -> nn.Module:
    """A randomly initialised timm model; optional overrides describe a non-ImageNet input.

    The overrides go into the model's `pretrained_cfg`, so `timm.data.resolve_data_config` gives the
    matching preprocessing for every model alike.
    """
    if arch not in timm.list_models():
        raise ValueError(f"model.arch={arch!r} is not a timm architecture (see timm.list_models())")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    try:  # architectures with a fixed input size (ViTs) must be told it; the rest reject the argument
        model = timm.create_model(arch, img_size=image_size, **kwargs) if image_size else None
    except TypeError:
        model = None
    if model is None:
        model = timm.create_model(arch, **kwargs)
    if image_size is not None:
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, image_size, image_size),
                                "mean": mean, "std": std, "crop_pct": 1.0, "interpolation": "bilinear",
                                "num_classes": num_classes}
    return model


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state dict strictly (plain, or wrapped as {'state_dict': ...} / {'model': ...})."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"checkpoint {path} does not fit this architecture: {error}") from None
    return model
