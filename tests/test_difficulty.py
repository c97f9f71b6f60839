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
    expected = sorted(range(matrix.shape[1]), key=lambda i: (-fraction[i], i))  # ties: position (no probabilities)
    examples = (ORIGINAL / "gpqa_examples.csv").read_text().strip().split(",")
    assert list(table["path"]) == [examples[i] for i in expected]
    assert list(table["rank"]) == list(range(1, len(examples) + 1))
    assert (np.diff(table["fraction_correct"]) <= 0).all()
    assert (rank_examples(matrix) == table.set_index("path").loc[examples, "rank"].to_numpy()).all()
