"""Universal difficulty: read it from any supported file, or rank examples from a correctness matrix.

Difficulty files, by format:
- the original single line: comma-separated image paths, easiest first (rank = position + 1);
- a CSV with a header: a path column (`path` or `file`) and `rank` (1 = easiest) or `score`
  (higher = easier, e.g. fraction of models correct; ranked descending, equal scores tied);
- a correctness matrix `.npy` (bool, models x examples) with its examples list, ranked by
  `rank_examples`.

Ranking rule, the same for every matrix (the demo universe's zoo, `ltc-zoo`, a `.npy` difficulty
file) and for scores: rank 1 is the easiest example. Examples are ordered by the fraction of models
that get them right (descending), then by the mean true-class probability over the models
(descending) where it is known. Examples equal in both are tied: they share the smallest rank of
their group (1, 2, 2, 4, ...), so that no arbitrary order (such as file position) separates them.
Rank statistics treat tied ranks as ties; any tie-preserving ranking gives the same Spearman rho.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from sweep.data.file_formats import (
    IMAGE_SUFFIXES,
    PATH_COLUMNS,
    load_matrix,
    read_list,
    refuse_duplicates,
)
from sweep.errors import UserError
from sweep.files import atomic_write_text, existing


def rank_examples(correct: np.ndarray, true_class_prob: Optional[np.ndarray] = None) -> np.ndarray:
    """Rank (1 = easiest) of each example (column) of a bool (models x examples) correctness matrix."""
    correct = np.asarray(correct)
    if correct.ndim != 2 or correct.dtype != bool:
        raise ValueError(f"correctness matrix must be 2-D bool (models x examples), got {correct.dtype} "
                         f"with shape {correct.shape}")
    fraction = correct.mean(axis=0)
    probability = np.zeros_like(fraction) if true_class_prob is None else np.asarray(true_class_prob).mean(axis=0)
    return tied_ranks(-fraction, -probability)


def tied_ranks(*keys: np.ndarray) -> np.ndarray:
    """Rank (1 = first) of each element when ordered by `keys` (ascending; the first key is primary);
    elements equal in every key share the smallest rank of their group."""
    order = np.lexsort(keys[::-1])  # lexsort's last key is primary
    ordered = np.stack([np.asarray(key)[order] for key in keys])
    starts = np.r_[True, (np.diff(ordered, axis=1) != 0).any(axis=0)]  # a new value begins a new rank
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.maximum.accumulate(np.where(starts, np.arange(1, len(order) + 1), 0))
    return ranks


def read_difficulty(path: Path, examples_file: Optional[Path] = None) -> pd.DataFrame:
    """Columns `path`, `rank` (1 = easiest) from any supported difficulty file, its format detected
    explicitly: `.npy` is a matrix; a first line naming image files is the original single line;
    anything else must be a CSV whose header names a path column."""
    key = "data.difficulty"
    path = existing(path, key)
    if path.suffix == ".npy":
        return _matrix_ranks(path, examples_file)
    with open(path) as file:
        first_line = file.readline().strip()
    if not first_line:
        raise UserError(f"{key}={path}: the file is empty (or starts with an empty line); expected the original "
                        f"single line of image paths, or a CSV with a header")
    fields = [f.strip() for f in first_line.split(",")]
    if any("/" in f or f.lower().endswith(IMAGE_SUFFIXES) for f in fields):  # the original single-line order
        paths = read_list(path, key)
        return pd.DataFrame({"path": paths, "rank": np.arange(1, len(paths) + 1)})
    return _csv_ranks(path, key)


def _matrix_ranks(path: Path, examples_file: Optional[Path]) -> pd.DataFrame:
    matrix, examples = _matrix_with_examples(path, examples_file)
    return pd.DataFrame({"path": examples, "rank": rank_examples(matrix)})


def _matrix_with_examples(path: Path, examples_file: Optional[Path],
                          keys: tuple[str, str] = ("data.difficulty", "data.difficulty_examples")
                          ) -> tuple[np.ndarray, list[str]]:
    """The matrix and its examples list, `keys` naming them in errors (config keys, or a command's arguments)."""
    matrix_key, examples_key = keys
    if examples_file is None:
        raise UserError(f"{matrix_key}={path} is a correctness matrix: set {examples_key} to its examples list")
    matrix = load_matrix(path, matrix_key)
    examples = read_list(examples_file, examples_key)
    if matrix.shape[1] != len(examples):
        raise UserError(f"{examples_key}={examples_file}: {len(examples)} examples, but "
                        f"{matrix_key}={path} has {matrix.shape[1]} columns (models x examples)")
    return matrix, examples


def _csv_ranks(path: Path, key: str) -> pd.DataFrame:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.columns = [c.strip().lower() for c in table.columns]
    path_column = next((c for c in PATH_COLUMNS if c in table), None)
    if path_column is None:
        raise UserError(f"{key}={path}: a CSV header with columns {list(table.columns)} but no path column; "
                        f"expected one named {' or '.join(PATH_COLUMNS)} (or the original single line of image "
                        f"paths, which a header of names is not)")
    value_column = next((c for c in ("rank", "score") if c in table), None)
    if value_column is None:
        raise UserError(f"{key}={path}: expected a 'rank' or 'score' column beside '{path_column}', "
                        f"found {list(table.columns)}")
    if table.empty:
        raise UserError(f"{key}={path}: a header and no rows")
    values = pd.to_numeric(table[value_column], errors="coerce")
    bad = values.isna() | ~np.isfinite(values)
    if value_column == "rank":
        bad |= (values < 1) | (values != values.round())
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise UserError(f"{key}={path}, line {first + 2}: {value_column} {table[value_column].iloc[first]!r} is not "
                        f"{'a whole number >= 1' if value_column == 'rank' else 'a finite number'}")
    refuse_duplicates(list(table[path_column]), path, key, where=lambda i: f"line {i + 2}")
    if value_column == "rank":
        return pd.DataFrame({"path": table[path_column], "rank": values.astype(int)})
    return pd.DataFrame({"path": table[path_column], "rank": tied_ranks(-values.to_numpy())})


def main(argv: list[str] | None = None) -> None:
    """`python -m sweep.data.difficulty MATRIX.npy --examples EXAMPLES [--out ranks.csv]`: rank any zoo's examples."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__ + "\n\n" + __doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("matrix", type=Path, help="bool .npy, models x examples")
    parser.add_argument("--examples", type=Path, required=True, help="the examples list (one line, comma-separated)")
    parser.add_argument("--out", type=Path, default=Path("difficulty.csv"),
                        help="CSV with columns path,rank,fraction_correct")
    args = parser.parse_args(argv)
    try:
        matrix, examples = _matrix_with_examples(args.matrix, args.examples, ("MATRIX", "--examples"))
    except UserError as error:
        parser.exit(2, f"error: {error}\n")
    table = pd.DataFrame({"path": examples, "rank": rank_examples(matrix),
                          "fraction_correct": matrix.mean(axis=0)}).sort_values("rank")
    atomic_write_text(args.out, table.to_csv(index=False))
    print(f"ranked {len(table)} examples by {matrix.shape[0]} models -> {args.out}")


if __name__ == "__main__":
    main()
