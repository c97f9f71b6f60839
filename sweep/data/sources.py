"""A run's data source: its examples (path, label, rank), its pretrained model and, where the data
names one, a precomputed wrong set."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from torch import nn

from sweep.config import Config, DataConfig, ModelConfig
from sweep.data.correctness import wrong_from_matrix
from sweep.data.demo import open_demo
from sweep.data.examples import Example, check_labels
from sweep.data.image_folders import image_folder_examples, path_matcher
from sweep.errors import UserError
from sweep.models import create_model, hub_name, package_version, pretrained_model


@dataclass
class Source:
    examples: list[Example]
    new_model: Callable[[str], nn.Module] = create_model  # arch -> randomly initialised model for this data
    default_pretrained: Optional[Callable[[str], nn.Module]] = None  # the data's default weights (else timm's hub)
    wrong: Optional[list[Example]] = None  # a precomputed wrong set in its pool order, when the config names one

    def pretrained(self, model_cfg: ModelConfig) -> nn.Module:
        """The model `model_cfg` names, with its checkpoint, its package's weights or the data's default,
        checked against the examples' labels."""
        model = pretrained_model(model_cfg.arch, model_cfg.checkpoint, model_cfg.package, self.new_model,
                                 self.default_pretrained)
        check_labels(self.examples, model.num_classes, model_cfg.arch)
        return model

    def weights_source(self, model_cfg: ModelConfig) -> str:
        """Where the pretrained weights of `model_cfg` come from, in words (the digest of their
        content is the identity; this says what it is the digest of)."""
        if model_cfg.checkpoint:
            return f"model.checkpoint={model_cfg.checkpoint}"
        if model_cfg.package:
            return f"model.package={model_cfg.package} {package_version(model_cfg.package)}"
        if self.default_pretrained is not None:
            return "trained on the demo universe"
        return f"timm hub: {hub_name(model_cfg.arch)}"


MATRIX_KEYS = ("correctness", "correctness_examples", "correctness_models", "wrong_from_model")


def check_inputs(data: DataConfig) -> None:
    """The input files `data` names exist and come together, checked before any work starts."""
    if data.name == "demo":
        return
    files = ["difficulty", "labels", "difficulty_examples"]
    if any(data[key] for key in MATRIX_KEYS):
        unset = [key for key in MATRIX_KEYS if not data[key]]
        if unset:
            raise UserError(f"data.{unset[0]} is not set: a wrong set from a correctness matrix needs "
                            f"{', '.join(f'data.{k}' for k in MATRIX_KEYS)}")
        files += MATRIX_KEYS[:3]
    for key in files:
        if data[key] and not Path(data[key]).expanduser().is_file():
            raise UserError(f"data.{key}={data[key]}: no such file")


def open_source(cfg: Config, cache: Path) -> Source:
    """The Source for `cfg.data` (data=demo or data=imagenet); the demo universe lives in `cache`."""
    if cfg.data.name == "demo":
        demo = open_demo(cfg.data.universe, cache, cfg.progress)
        return Source(demo.examples, demo.universe.new_model, demo.pretrained)
    matcher = path_matcher(cfg.data)
    examples = image_folder_examples(cfg.data, matcher)
    wrong = wrong_from_matrix(cfg.data, examples, matcher.local) if cfg.data.wrong_from_model else None
    return Source(examples, wrong=wrong)
