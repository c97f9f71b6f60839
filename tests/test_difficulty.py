"""Universal difficulty: the ranking rule on a real correctness matrix, and the rank command."""
import numpy as np
import pandas as pd
import pytest

from helpers.configs import ORIGINAL
from sweep.data.difficulty import main as rank_command
from sweep.data.difficulty import rank_examples


@pytest.mark.skipif(not ORIGINAL.is_dir(), reason=f"{ORIGINAL} absent (the shared development data)")
def test_gpqa_matrix_ranking_follows_the_rule(tmp_path):
    matrix = np.load(ORIGINAL / "gpqa.npy")
    rank_command([str(ORIGINAL / "gpqa.npy"), "--examples", str(ORIGINAL / "gpqa_examples.csv"),
                  "--out", str(tmp_path / "ranks.csv")])
    table = pd.read_csv(tmp_path / "ranks.csv")
    fraction = matrix.mean(axis=0)
    examples = (ORIGINAL / "gpqa_examples.csv").read_text().strip().split(",")
    by_hand = {examples[i]: 1 + int((fraction > fraction[i]).sum()) for i in range(len(examples))}  # ties share
    assert dict(zip(table["path"], table["rank"], strict=True)) == by_hand
    assert table["rank"].nunique() < len(examples)  # gpqa has ties (equal fractions): they stay tied
    assert (np.diff(table["fraction_correct"]) <= 0).all()
    assert (rank_examples(matrix) == table.set_index("path").loc[examples, "rank"].to_numpy()).all()


def test_ties_share_the_smallest_rank_and_the_probability_breaks_them():
    correct = np.array([[1, 1, 0, 1], [1, 0, 0, 1]], dtype=bool)  # fractions 1, .5, 0, 1
    assert list(rank_examples(correct)) == [1, 3, 4, 1]
    probability = np.array([[0.9, 0.6, 0.1, 0.8], [0.9, 0.4, 0.2, 0.7]])
    assert list(rank_examples(correct, probability)) == [1, 3, 4, 2]
