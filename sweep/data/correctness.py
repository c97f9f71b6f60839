"""Correctness matrices (bool, models x examples), in the original project's file format.

A zoo of models evaluated on a labelled image set gives the matrix: `correctness.npy`, with
`models.csv` and `examples.csv` in the original single-line format. It ranks examples by
universal difficulty (`sweep.data.difficulty`), and one model's row is a wrong set (the original
`--model_csv_name`).
"""
from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
from torch import nn

from sweep.config import ImageFolderDataConfig
from sweep.data.difficulty import rank_examples
from sweep.data.examples import Example
from sweep.data.file_formats import load_matrix, read_list
from sweep.errors import UserError
from sweep.files import atomic_write_text, replacing
from sweep.verdicts import judge

log = logging.getLogger(__name__)


def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[np.ndarray, np.ndarray]:
    """(correct, true-class probability) per example of `batches`, the model in eval mode."""
    model.eval()
    verdicts = judge(model, batches, probability=True)
    return verdicts.right.cpu().numpy(), verdicts.probability.cpu().numpy()


def write_matrix(out: Path, names: list[str], examples: list[str], correct: np.ndarray, true_prob: np.ndarray) -> None:
    """The matrix in the original format, and its ranking (`difficulty.csv`: path, rank, fraction_correct)."""
    out.mkdir(parents=True, exist_ok=True)
    with replacing(out / "correctness.npy") as staging, open(staging, "wb") as file:
        np.save(file, correct)
    atomic_write_text(out / "models.csv", ",".join(names) + "\n")
    atomic_write_text(out / "examples.csv", ",".join(examples) + "\n")
    ranking = pd.DataFrame({"path": examples, "rank": rank_examples(correct, true_prob),
                  "fraction_correct": correct.mean(axis=0)})
    atomic_write_text(out / "difficulty.csv", ranking.to_csv(index=False))


def wrong_from_matrix(data: ImageFolderDataConfig, model_row: str, examples: list[Example],
                      local_path: Callable[[str], Optional[str]]) -> list[Example]:
    """The examples the model of row `model_row` got wrong, in matrix-column order (the original
    `--model_csv_name` row of `--bars_npy`), kept where the image is local, labelled and ranked.
    `local_path` maps a matrix example path to its local file, as for the difficulty file."""
    matrix = load_matrix(data.correctness, "data.correctness")
    models = read_list(Path(data.correctness_models), "data.correctness_models")
    columns = read_list(Path(data.correctness_examples), "data.correctness_examples")
    if len(models) != matrix.shape[0]:
        raise UserError(f"data.correctness_models={data.correctness_models}: {len(models)} models, but "
                        f"data.correctness={data.correctness} has {matrix.shape[0]} rows (models x examples)")
    if len(columns) != matrix.shape[1]:
        raise UserError(f"data.correctness_examples={data.correctness_examples}: {len(columns)} examples, but "
                        f"data.correctness={data.correctness} has {matrix.shape[1]} columns (models x examples)")
    if model_row not in models:
        close = difflib.get_close_matches(model_row, models, n=5, cutoff=0.4)
        key = "data.wrong_from_model" if data.wrong_from_model else "the row data.correctness_model_map names"
        raise UserError(f"{key}={model_row!r} is not in data.correctness_models="
                        f"{data.correctness_models} ({len(models)} models; closest: {', '.join(close) or 'none'})")
    row = matrix[models.index(model_row)]
    by_path = {e.path: e for e in examples}
    wrong_columns = [columns[i] for i in np.flatnonzero(~row)]
    local = [by_path.get(local_path(p)) for p in wrong_columns]
    pool = [e for e in local if e is not None]
    log.info("%s gets %d of %d matrix examples wrong; %d of them are local images with a label and a rank",
             model_row, len(wrong_columns), len(columns), len(pool))
    return pool
