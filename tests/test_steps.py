"""log_steps=true: every evaluated state's loss in steps.csv, consistent with the rows, resumable."""
import shutil

import pandas as pd
import pytest

from analysis.aggregate import load_runs
from analysis.figures import loss_trajectories
from helpers.configs import compose_config, tiny_universe_overrides
from sweep.run.job import run


def job(out, cache_dir, *overrides):
    cfg = compose_config(*tiny_universe_overrides(cache_dir), "sample_size=12", "lr=3e-5", "max_steps=60",
                         "progress=false", "execution.threads=1", "log_steps=true", *overrides)
    run(cfg, out)
    return pd.read_csv(out / "single_example_results.csv"), pd.read_csv(out / "steps.csv")


def test_steps_hold_every_evaluated_loss(tmp_path, cache_dir):
    rows, steps = job(tmp_path, cache_dir)
    assert list(steps.columns) == ["example_index", "step", "loss"]
    for _, row in rows.iterrows():
        losses = steps[steps["example_index"] == row["example_index"]].sort_values("step")
        assert list(losses["step"]) == list(range(row["updates"] + 1))  # every state evaluated: t = 0 .. updates
        assert losses["loss"].iloc[0] == pytest.approx(row["initial_loss"])
        assert losses["loss"].iloc[-1] == pytest.approx(row["final_loss"])
        assert losses["loss"].iloc[:-1].sum() == pytest.approx(row["loss_sum"])
    assert (rows["updates"] > 0).all() and rows["status"].eq("correct").sum() >= 6
    runs = load_runs([tmp_path])  # as the aggregate reads them, steps.csv included
    assert loss_trajectories([("lr=3e-05", runs[0])], tmp_path) == [tmp_path / "loss_trajectories.png",
                                                                    tmp_path / "loss_trajectories.svg"]


def test_steps_of_an_example_without_a_row_are_dropped_on_resume(tmp_path, cache_dir):
    rows, steps = job(tmp_path / "whole", cache_dir)
    out = tmp_path / "resumed"
    shutil.copytree(tmp_path / "whole", out)
    # as if killed between writing the last example's steps and its row
    results = (out / "single_example_results.csv").read_text().splitlines(keepends=True)
    (out / "single_example_results.csv").write_text("".join(results[:-1]))
    resumed_rows, resumed_steps = job(out, cache_dir)
    assert not resumed_steps.duplicated(["example_index", "step"]).any()
    key = ["example_index", "step"]
    pd.testing.assert_frame_equal(resumed_steps.sort_values(key).reset_index(drop=True),
                                  steps.sort_values(key).reset_index(drop=True))


def test_no_steps_file_without_log_steps(tmp_path, cache_dir):
    cfg = compose_config(*tiny_universe_overrides(cache_dir), "sample_size=1", "max_steps=5", "progress=false")
    run(cfg, tmp_path)
    assert not (tmp_path / "steps.csv").exists()
