"""Universal difficulty: read it from any supported file, or rank examples from a correctness matrix.

Difficulty files, by format:
- the original single line: comma-separated image paths, easiest first (rank = position + 1);
- a CSV with a header: a path column (`path` or `file`) and `rank` (1 = easiest) or `score`
  (higher = easier, e.g. fraction of models correct; ranked descending, ties by position);
- a correctness matrix `.npy` (bool, models x examples) with its examples list, ranked by
  `rank_examples`.

Ranking rule: rank 1 is the easiest example. Examples are ordered by the fraction of models that
get them right (descending); ties are broken by the mean true-class probability over the models
(descending) when it is given, then by example position, so the ranking is a total order and
reproducible.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from sweep.errors import UserError


def rank_examples(correct: np.ndarray, true_class_prob: Optional[np.ndarray] = None) -> np.ndarray:
    """Rank (1 = easiest) of each example (column) of a bool (models x examples) correctness matrix."""
    correct = np.asarray(correct)
    if correct.ndim != 2 or correct.dtype != bool:
        raise ValueError(f"correctness matrix must be 2-D bool (models x examples), got {correct.dtype} "
                         f"with shape {correct.shape}")
    fraction = correct.mean(axis=0)
    tie_break = np.zeros_like(fraction) if true_class_prob is None else np.asarray(true_class_prob).mean(axis=0)
    position = np.arange(correct.shape[1])
    order = np.lexsort((position, -tie_break, -fraction))  # last key is primary
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def read_list(path: Path) -> list[str]:
    """A list file in the original format (one comma-separated line) or one entry per line."""
    text = Path(path).read_text().strip()
    return [item.strip() for item in re.split(r"[,\n]", text) if item.strip()]


def read_difficulty(path: Path, examples_file: Optional[Path] = None) -> pd.DataFrame:
    """Columns `path`, `rank` (1 = easiest) from any supported difficulty file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data.difficulty={path}: no such file")
    if path.suffix == ".npy":
        if examples_file is None:
            raise UserError(f"data.difficulty={path} is a correctness matrix: set data.difficulty_examples "
                             f"to its examples list")
        matrix = np.load(path)
        examples = read_list(examples_file)
        if matrix.ndim != 2 or matrix.shape[1] != len(examples):
            raise UserError(f"{path}: shape {matrix.shape} does not fit the {len(examples)} examples of "
                             f"{examples_file} (expected models x examples)")
        return pd.DataFrame({"path": examples, "rank": rank_examples(matrix.astype(bool))})
    first_line = path.open().readline()
    header = [c.strip().lower() for c in first_line.split(",")]
    path_column = next((c for c in ("path", "file") if c in header), None)
    if path_column is None:  # the original single-line order
        paths = read_list(path)
        return pd.DataFrame({"path": paths, "rank": np.arange(1, len(paths) + 1)})
    table = pd.read_csv(path)
    table.columns = [c.strip().lower() for c in table.columns]
    if "rank" in table:
        return pd.DataFrame({"path": table[path_column], "rank": table["rank"].astype(int)})
    if "score" in table:
        order = np.lexsort((np.arange(len(table)), -table["score"].to_numpy()))
        ranks = np.empty(len(table), dtype=np.int64)
        ranks[order] = np.arange(1, len(table) + 1)
        return pd.DataFrame({"path": table[path_column], "rank": ranks})
    raise UserError(f"{path}: expected a 'rank' or 'score' column beside '{path_column}', found {list(table.columns)}")


def main(argv: list[str] | None = None) -> None:
    """`python -m sweep.difficulty MATRIX.npy --examples EXAMPLES [--out ranks.csv]`: rank any zoo's examples."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__ + "\n\n" + __doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("matrix", type=Path, help="bool .npy, models x examples")
    parser.add_argument("--examples", type=Path, required=True, help="the examples list (one line, comma-separated)")
    parser.add_argument("--out", type=Path, default=Path("difficulty.csv"), help="CSV with columns path,rank,fraction_correct")
    args = parser.parse_args(argv)
    matrix, examples = np.load(args.matrix), read_list(args.examples)
    if matrix.ndim != 2 or matrix.shape[1] != len(examples):
        parser.exit(2, f"{args.matrix}: shape {matrix.shape} does not fit the {len(examples)} examples of {args.examples}\n")
    table = pd.DataFrame({"path": examples, "rank": rank_examples(matrix.astype(bool)),
                          "fraction_correct": matrix.mean(axis=0)}).sort_values("rank")
    table.to_csv(args.out, index=False)
    print(f"ranked {len(examples)} examples by {matrix.shape[0]} models -> {args.out}")


if __name__ == "__main__":
    main()
