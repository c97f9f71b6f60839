"""Universal difficulty: rank examples from a correctness matrix (models x examples).

Rule: rank 1 is the easiest example. Examples are ordered by the fraction of models that get them
right (descending); ties are broken by the mean true-class probability over the models (descending)
when it is given, then by example position, so the ranking is a total order and reproducible.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


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


def main(argv: list[str] | None = None) -> None:
    """`python -m sweep.difficulty MATRIX.npy --examples EXAMPLES [--out ranks.csv]`: rank any zoo's examples."""
    import argparse
    from pathlib import Path

    import pandas as pd

    from sweep.imagenet import read_list

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
