"""Examples: an image path with its label and universal difficulty rank, read from CSV files."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sweep.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    path: str   # absolute path of the image file; the example's identity
    label: int
    rank: int   # universal difficulty rank, 1 = easiest


def examples_table(examples: list[Example], **columns) -> pd.DataFrame:
    """The examples as a table (path, label, rank, then `columns`), as a run keeps its selection, probe
    set and shared selection."""
    return pd.DataFrame({"path": [e.path for e in examples], "label": [e.label for e in examples],
                         "rank": [e.rank for e in examples], **columns})


def table_examples(table: pd.DataFrame) -> list[Example]:
    """The examples of a table that `examples_table` wrote, in its order."""
    return [Example(p, int(y), int(r)) for p, y, r in zip(table["path"], table["label"], table["rank"], strict=True)]


def read_examples(images_root: Path, labels_csv: Path, difficulty_csv: Path) -> list[Example]:
    """Examples that exist on disk and have a label and a rank; CSV files are relative to `images_root`."""
    labels = pd.read_csv(labels_csv)
    ranks = pd.read_csv(difficulty_csv)
    for name, frame, needed in ((labels_csv, labels, {"file", "label"}), (difficulty_csv, ranks, {"path", "rank"})):
        if not needed <= set(frame.columns):
            raise UserError(f"{name}: expected columns {sorted(needed)}, found {list(frame.columns)}")
    merged = labels.merge(ranks, left_on="file", right_on="path", how="inner")
    if merged.empty:
        label_file = labels["file"].iloc[0] if len(labels) else "none"
        rank_path = ranks["path"].iloc[0] if len(ranks) else "none"
        raise UserError(f"no file of {labels_csv} (e.g. {label_file!r}) matches a path of {difficulty_csv} "
                        f"(e.g. {rank_path!r})")
    examples = [Example(str(Path(images_root) / f), int(y), int(r))
                for f, y, r in zip(merged["file"], merged["label"], merged["rank"], strict=True)]
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

