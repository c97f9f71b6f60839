"""Data sources: where a run's examples, labels, difficulty ranks and pretrained weights come from."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import timm
from torch import nn

from sweep.data import Example, read_examples
from sweep.imagenet import imagenet_examples, wrong_from_matrix
from sweep.models import hub_model, load_checkpoint, load_package_weights
from sweep.universe.build import build_universe, pretrained_weights


@dataclass
class Source:
    examples: list[Example]
    new_model: Callable[[str], nn.Module]        # arch -> randomly initialised model for this data
    default_pretrained: Callable[[str], nn.Module]  # arch -> the data set's default pretrained model
    wrong: Optional[list[Example]] = None         # a precomputed wrong set, when the config asks for one


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
        return Source(examples, universe.new_model,
                      lambda arch: load_checkpoint(universe.new_model(arch),
                                                   pretrained_weights(universe, arch, epochs, seed)))
    if cfg.data.name == "imagenet":
        for key in ("images", "difficulty"):
            if not cfg.data[key]:
                raise ValueError(f"data=imagenet needs data.{key}")
        examples = imagenet_examples(cfg.data)
        wrong = wrong_from_matrix(cfg.data, examples) if cfg.data.wrong_from_model else None
        return Source(examples, lambda arch: timm.create_model(arch), hub_model, wrong)
    raise ValueError(f"data.name={cfg.data.name!r} is not supported; expected one of: demo, imagenet")


def pretrained_model(cfg, source: Source) -> nn.Module:
    """The model `cfg.model` names, with its checkpoint, its package's weights or the source's default."""
    if cfg.model.checkpoint:
        return load_checkpoint(source.new_model(cfg.model.arch), Path(cfg.model.checkpoint).expanduser())
    if cfg.model.package:
        return load_package_weights(source.new_model(cfg.model.arch), cfg.model.package)
    return source.default_pretrained(cfg.model.arch)
