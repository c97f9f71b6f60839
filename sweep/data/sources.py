"""A run's data source: its examples (path, label, rank), its pretrained model and, where the data
names one, a precomputed wrong set."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd
from torch import nn

from sweep.config import DataConfig, ImageFolderDataConfig, ModelConfig
from sweep.data.correctness import wrong_from_matrix
from sweep.data.demo import check_universe, open_demo
from sweep.data.examples import Example, check_labels
from sweep.data.image_folders import image_folder_examples, path_matcher
from sweep.errors import UserError
from sweep.files import existing
from sweep.models import create_model, hub_name, package_version, pretrained_model


@dataclass
class Source:
    examples: list[Example]
    new_model: Callable[[str], nn.Module] = create_model  # arch -> randomly initialised model for this data
    default_pretrained: Optional[Callable[[str], nn.Module]] = None  # the data's default weights (else timm's hub)
    wrong: Optional[list[Example]] = None  # a precomputed wrong set in its pool order, when the config names one

    def pretrained(self, spec: ModelConfig) -> nn.Module:
        """The model `spec` (the `model` settings) names, with its checkpoint, its package's weights or
        the data's default, checked against the examples' labels."""
        model = pretrained_model(spec.arch, spec.checkpoint, spec.package, self.new_model,
                                 self.default_pretrained)
        check_labels(self.examples, model.num_classes, spec.arch)
        return model

    def weights_source(self, spec: ModelConfig) -> str:
        """Where the pretrained weights of `spec` come from, in words (the digest of their
        content is the identity; this says what it is the digest of)."""
        if spec.checkpoint:
            return f"model.checkpoint={spec.checkpoint}"
        if spec.package:
            return f"model.package={spec.package} {package_version(spec.package)}"
        if self.default_pretrained is not None:
            return "trained on the demo universe"
        return f"timm hub: {hub_name(spec.arch)}"


MATRIX_KEYS = ("correctness", "correctness_examples", "correctness_models")


def check_inputs(data: DataConfig, arch: Optional[str] = None) -> None:
    """The input files `data` names exist and come together, and a correctness model map names `arch`,
    checked before any work starts."""
    if data.name == "demo":
        check_universe(data.universe)
        return
    files = ["difficulty", "labels", "difficulty_examples"]
    row_named = data.wrong_from_model or data.correctness_model_map
    if any(getattr(data, key) for key in MATRIX_KEYS) or row_named:
        unset = [key for key in MATRIX_KEYS if not getattr(data, key)]
        if unset or not row_named:
            missing = [f"data.{key}" for key in unset] + ([] if row_named else ["data.wrong_from_model"])
            raise UserError(f"{missing[0]} is not set: a wrong set from a correctness matrix needs "
                            f"{', '.join(f'data.{k}' for k in MATRIX_KEYS)} and data.wrong_from_model (or, in a sweep "
                            f"over models, data.correctness_model_map)")
        files += [*MATRIX_KEYS, "correctness_model_map"]
    for key in files:
        if getattr(data, key):
            existing(getattr(data, key), f"data.{key}")
    if data.correctness_model_map and not data.wrong_from_model and arch is not None:
        matrix_row(data, arch)


def matrix_row(data: ImageFolderDataConfig, arch: str) -> str:
    """The correctness matrix's row of the model `arch`: data.wrong_from_model, or its row in
    data.correctness_model_map (columns arch,row); an arch the map does not name is refused."""
    if data.wrong_from_model:
        return data.wrong_from_model
    path = Path(data.correctness_model_map).expanduser()
    try:
        table = pd.read_csv(path, dtype=str)
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError) as error:
        raise UserError(f"data.correctness_model_map={path}: not a readable CSV ({str(error).splitlines()[0]}); "
                        f"expected columns arch,row") from None
    if not {"arch", "row"} <= set(table.columns):
        raise UserError(f"data.correctness_model_map={path}: columns {list(table.columns)}; expected arch,row")
    rows = dict(zip(table["arch"].str.strip(), table["row"].str.strip(), strict=True))
    if arch not in rows:
        raise UserError(f"model.arch={arch} is not in data.correctness_model_map={path} (it maps "
                        f"{', '.join(sorted(rows)[:8])}{', ...' if len(rows) > 8 else ''}); add a line {arch},<its row "
                        f"in data.correctness_models>")
    return rows[arch]


def open_source(data: DataConfig, arch: str, cache: Path, progress: bool) -> Source:
    """The Source of `data` (data=demo or data=imagenet) for the model `arch`; the demo universe lives
    in `cache`."""
    if data.name == "demo":
        demo = open_demo(data.universe, cache, progress)
        return Source(demo.examples, demo.universe.new_model, demo.pretrained)
    matcher = path_matcher(data)
    examples = image_folder_examples(data, matcher)
    matrix = data.wrong_from_model or data.correctness_model_map
    wrong = wrong_from_matrix(data, matrix_row(data, arch), examples, matcher.local) if matrix else None
    return Source(examples, wrong=wrong)
