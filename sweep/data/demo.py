"""The embedded demo universe as a data source: its examples, pretrained models and their mistakes."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from sweep.config import UniverseConfig, check_value
from sweep.data.examples import Example, read_examples
from sweep.data.universe.build import Universe, build_universe, pretrained_weights
from sweep.data.universe.shapes import CLASSES
from sweep.models import load_checkpoint


@dataclass
class Demo:
    universe: Universe
    examples: list[Example]  # the validation images, labelled and ranked
    pretrain_epochs: int
    seed: int

    def pretrained(self, arch: str) -> nn.Module:
        """`arch` trained on the universe's train split (trained on first use, then cached)."""
        return load_checkpoint(self.universe.new_model(arch),
                               pretrained_weights(self.universe, arch, self.pretrain_epochs, self.seed))


def open_demo(universe: UniverseConfig | dict, cache: Path, progress: bool = False) -> Demo:
    """The universe of `universe` (its settings, or a dict of their fields), built on first use (with
    progress bars if `progress`)."""
    params = universe if isinstance(universe, dict) else dataclasses.asdict(universe)
    universe = build_universe(params, cache, progress)
    return Demo(universe, read_examples(universe.images_root, universe.labels_csv, universe.difficulty_csv),
                params["pretrain_epochs"], params["seed"])


def check_universe(universe: UniverseConfig) -> None:
    """The demo universe's parameters, which its build would otherwise refuse halfway."""
    check_value(universe.image_size, "data.universe.image_size", "an integer >= 16 (pixels)", lambda v: v >= 16)
    for key in ("n_train", "n_val"):
        check_value(universe[key], f"data.universe.{key}",
                    f"an integer >= {len(CLASSES)} (images; one per class at least)", lambda v: v >= len(CLASSES))
    check_value(universe.pretrain_epochs, "data.universe.pretrain_epochs", "an integer >= 1", lambda v: v >= 1)
    check_value(list(universe.zoo_archs), "data.universe.zoo_archs", "a non-empty list of timm architectures",
                lambda v: len(v) > 0)
    check_value(list(universe.zoo_epochs), "data.universe.zoo_epochs", "a non-empty list of integers >= 1 (epochs)",
                lambda v: len(v) > 0 and all(e >= 1 for e in v))
