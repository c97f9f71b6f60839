"""A run's data source: its examples (path, label, rank), its pretrained model and, where the data
names one, a precomputed wrong set."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from torch import nn

from sweep.cache import cache_root
from sweep.correctness import wrong_from_matrix
from sweep.data import Example, check_labels
from sweep.demo import open_demo
from sweep.imagenet import imagenet_examples
from sweep.models import create_model, pretrained_model


@dataclass
class Source:
    examples: list[Example]
    new_model: Callable[[str], nn.Module] = create_model  # arch -> randomly initialised model for this data
    default_pretrained: Optional[Callable[[str], nn.Module]] = None  # the data's default weights (else timm's hub)
    wrong: Optional[list[Example]] = None  # a precomputed wrong set, when the config names one

    def pretrained(self, model_cfg) -> nn.Module:
        """The model `model_cfg` names, with its checkpoint, its package's weights or the data's default,
        checked against the examples' labels."""
        model = pretrained_model(model_cfg.arch, model_cfg.checkpoint, model_cfg.package, self.new_model,
                                 self.default_pretrained)
        check_labels(self.examples, model.num_classes, model_cfg.arch)
        return model


def open_source(cfg) -> Source:
    """The Source for `cfg.data` (data=demo or data=imagenet)."""
    if cfg.data.name == "demo":
        demo = open_demo(cfg.data.universe, cache_root(cfg.cache_dir))
        return Source(demo.examples, demo.universe.new_model, demo.pretrained)
    examples = imagenet_examples(cfg.data)
    wrong = wrong_from_matrix(cfg.data, examples) if cfg.data.wrong_from_model else None
    return Source(examples, wrong=wrong)
