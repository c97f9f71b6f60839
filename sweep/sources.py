"""Data sources: where a run's examples, labels, difficulty ranks and pretrained weights come from."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from sweep.data import Example, read_examples
from sweep.models import load_checkpoint
from sweep.universe.build import build_universe, pretrained_weights


@dataclass
class Source:
    examples: list[Example]
    new_model: Callable[[str], nn.Module]     # arch -> randomly initialised model with this data's head
    default_weights: Callable[[str], Path]    # arch -> pretrained state dict for this data


def cache_root(cache_dir: str | None) -> Path:
    """Configured cache dir, else $LTC_CACHE_DIR, else ~/.cache/loss-to-correct."""
    chosen = cache_dir or os.environ.get("LTC_CACHE_DIR") or Path.home() / ".cache" / "loss-to-correct"
    return Path(chosen).expanduser()


def open_source(cfg) -> Source:
    """The Source for `cfg.data` (a Config)."""
    if cfg.data.name == "demo":
        universe = build_universe(cfg.data.universe, cache_root(cfg.cache_dir))
        examples = read_examples(universe.images_root, universe.labels_csv, universe.difficulty_csv)
        epochs, seed = cfg.data.universe.pretrain_epochs, cfg.data.universe.seed
        return Source(examples, universe.new_model, lambda arch: pretrained_weights(universe, arch, epochs, seed))
    raise ValueError(f"data.name={cfg.data.name!r} is not supported; expected one of: demo")


def pretrained_model(cfg, source: Source) -> nn.Module:
    """The model `cfg.model` names, loaded with its checkpoint or the source's pretrained weights."""
    model = source.new_model(cfg.model.arch)
    return load_checkpoint(model, cfg.model.checkpoint or source.default_weights(cfg.model.arch))
