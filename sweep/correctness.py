"""Correctness matrices (bool, models x examples), in the original project's file format.

A zoo of models evaluated on a labelled image set gives the matrix: `correctness.npy`, with
`models.csv` and `examples.csv` in the original single-line format. It ranks examples by
universal difficulty (`sweep.difficulty`), and one model's row is a wrong set (the original
`--model_csv_name`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch
from torch import nn

from sweep.data import Example
from sweep.difficulty import rank_examples, read_list
from sweep.errors import UserError


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[np.ndarray, np.ndarray]:
    """(correct, true-class probability) per example of `batches`, the model in eval mode."""
    model.eval()
    correct, true_prob = [], []
    for x, y in batches:
        prob = model(x).softmax(1)
        correct.append((prob.argmax(1) == y).numpy())
        true_prob.append(prob[torch.arange(len(y)), y].numpy())
    return np.concatenate(correct), np.concatenate(true_prob)


def write_matrix(out: Path, names: list[str], examples: list[str], correct: np.ndarray, true_prob: np.ndarray) -> None:
    """The matrix in the original format, and its ranking (`difficulty.csv`: path, rank, fraction_correct)."""
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "correctness.npy", correct)
    (out / "models.csv").write_text(",".join(names) + "\n")
    (out / "examples.csv").write_text(",".join(examples) + "\n")
    pd.DataFrame({"path": examples, "rank": rank_examples(correct, true_prob),
                  "fraction_correct": correct.mean(axis=0)}).to_csv(out / "difficulty.csv", index=False)


def wrong_from_matrix(data, examples: list[Example]) -> list[Example]:
    """The examples that model `data.wrong_from_model` got wrong, from its correctness-matrix row."""
    models = read_list(Path(data.difficulty_models).expanduser())
    if data.wrong_from_model not in models:
        close = [m for m in models if data.wrong_from_model.split(".")[0] in m][:5]
        raise UserError(f"data.wrong_from_model={data.wrong_from_model!r} is not in {data.difficulty_models} "
                        f"({len(models)} models; similar: {close})")
    row = np.load(Path(data.difficulty).expanduser())[models.index(data.wrong_from_model)].astype(bool)
    correct = dict(zip(read_list(Path(data.difficulty_examples).expanduser()), row))
    by_name = {Path(k).name: v for k, v in correct.items()}
    return [e for e in examples if not correct.get(e.path, by_name.get(Path(e.path).name, True))]
