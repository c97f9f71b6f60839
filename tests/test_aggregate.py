"""analysis/aggregate.py on a synthetic sweep built in a temp dir, and on the original scripts' outputs."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy import stats

from analysis.aggregate import aggregate
from helpers.configs import ROOT, SHARED_DATA
from sweep.schema import COLUMNS


def fake_rows(rng, paths, scale):
    n = len(paths)
    rank = np.arange(1, n + 1) * 10
    steps = np.maximum(1, (rank / 10 * scale + rng.normal(0, 5, n))).astype(int)
    status = np.where(steps > 40, "never_correct", "correct")
    loss_sum = steps * rng.uniform(0.5, 1.5, n)
    return pd.DataFrame({
        "example_index": range(n), "path": paths, "total_loss_to_correct": np.where(status == "correct", loss_sum + 0.1, -1),
        "universal_difficulty_rank": rank, "label": 1, "initial_prediction": 2, "status": status,
        "steps_to_correct": np.where(status == "correct", steps, -1), "loss_sum": loss_sum,
        "initial_loss": rng.uniform(1, 3, n) + rank / 1000, "final_loss": 0.5, "initial_margin": -rng.uniform(0, 2, n),
        "initial_grad_norm": rng.uniform(5, 10, n), "weight_distance": 0.1, "skipped_updates": 0,
        "seconds": 0.01})[COLUMNS]


@pytest.fixture
def sweep(tmp_path):
    rng = np.random.default_rng(0)
    paths = [f"/data/img_{i}.png" for i in range(30)]
    for job, (model, lr) in enumerate([("resnet18", 1e-5), ("resnet18", 5e-6), ("resnet34", 1e-5), ("resnet34", 5e-6)]):
        job_dir = tmp_path / "sweep" / str(job)
        (job_dir / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create({"lr": lr, "max_steps": 40, "seed": 0, "model": {"arch": model},
                                         "progress": False}), job_dir / ".hydra" / "config.yaml")
        rows = fake_rows(rng, paths, scale=1.0 if lr == 1e-5 else 1.3)
        if job == 3:
            rows = rows.iloc[:12]  # still in progress: no summary yet
        else:
            (job_dir / "training_summary.json").write_text("{}")
        rows.to_csv(job_dir / "single_example_results.csv", index=False)
    empty = tmp_path / "sweep" / "4"
    (empty / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"lr": 1e-3, "max_steps": 40, "seed": 0, "model": {"arch": "resnet50"}}),
                   empty / ".hydra" / "config.yaml")
    (empty / "single_example_results.csv").write_text(",".join(COLUMNS) + "\n")
    return tmp_path / "sweep"


def test_synthetic_sweep(sweep):
    result = aggregate([sweep], sweep)
    merged, runs, pairs = result["merged"], result["runs"], result["pairs"]
    assert len(merged) == 30 * 3 + 12  # the empty run contributes nothing, the partial one its rows
    assert {"model", "lr", "run", "run_dir"} <= set(merged.columns)
    assert "progress" not in merged.columns  # not a parameter of the experiment
    assert len(runs) == 4
    first = merged[merged["run_dir"] == str(sweep / "0")]
    corrected = first[first["status"] == "correct"]
    row = runs[runs["run_dir"] == str(sweep / "0")].iloc[0]
    for score in ("loss_sum", "steps_to_correct", "initial_loss", "initial_margin", "initial_grad_norm"):
        expected = stats.spearmanr(corrected[score], corrected["universal_difficulty_rank"]).statistic
        assert row[f"rho_{score}"] == pytest.approx(expected)
        assert row[f"rho_{score}_ci_low"] <= row[f"rho_{score}"] <= row[f"rho_{score}_ci_high"]
    assert row["n_correct"] == len(corrected) and row["n_never_correct"] == (first["status"] == "never_correct").sum()
    assert row["median_steps_to_correct"] == corrected["steps_to_correct"].median()
    # censored examples tied at the worst cost: same as ranking with never-corrected at +inf
    measured = first.assign(s=np.where(first["status"] == "correct", first["steps_to_correct"], np.inf))
    assert row["rho_steps_to_correct_censored_worst"] == pytest.approx(
        stats.spearmanr(measured["s"], measured["universal_difficulty_rank"]).statistic)
    # partial Spearman: correlation of residuals of the ranks
    r = {c: stats.rankdata(corrected[c]) for c in ("loss_sum", "universal_difficulty_rank", "initial_loss")}
    resid = {c: r[c] - np.polyval(np.polyfit(r["initial_loss"], r[c], 1), r["initial_loss"])
             for c in ("loss_sum", "universal_difficulty_rank")}
    assert row["partial_rho_loss_sum_given_initial_loss"] == pytest.approx(
        stats.pearsonr(resid["loss_sum"], resid["universal_difficulty_rank"]).statistic)
    # paired comparisons: runs differing only in lr (per model) or only in model (per lr)
    assert sorted(pairs["differs_in"]) == ["lr", "lr", "model", "model"]
    lr_pair = pairs[(pairs["run_a"] == "model=resnet18, lr=1e-05") & (pairs["run_b"] == "model=resnet18, lr=5e-06")]
    a, b = (merged[merged["run_dir"] == str(sweep / j)] for j in ("0", "1"))
    both = a[a.status == "correct"].merge(b[b.status == "correct"], on="path")
    assert lr_pair["wilcoxon_p"].item() == pytest.approx(stats.wilcoxon(both["loss_sum_x"] - both["loss_sum_y"]).pvalue)
    for name in ("merged.csv", "runs.csv", "paired.csv", "report.md", "loss_vs_difficulty.png",
                 "loss_vs_difficulty.svg", "rho_forest.png", "rho_forest.svg", "steps_ecdf.png", "steps_ecdf.svg"):
        assert (sweep / name).stat().st_size > 0, name
    report = (sweep / "report.md").read_text()
    assert "no rows yet" in report
    assert "in progress" in report
    assert "## Paired comparisons" in report and "wilcoxon_p" in report


def test_no_runs_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "analysis" / "aggregate.py"), str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no single_example_results.csv (or original training_summary.json) found under" in result.stderr
    assert str(tmp_path) in result.stderr and "Traceback" not in result.stderr


ORIGINAL = SHARED_DATA / "original" / "outputs"


@pytest.mark.skipif(not ORIGINAL.is_dir(), reason=f"{ORIGINAL} absent (the shared development data)")
def test_original_scripts_outputs(tmp_path):
    runs = aggregate([ORIGINAL], tmp_path)["runs"].set_index("model")
    resnet34 = runs.loc["resnet34.a3_in1k"]
    # the single-loss script's total loss (from its training_summary.json) beside the steps variant's steps
    assert resnet34["n_examples"] == 1000 and resnet34["n_correct"] == 1000
    assert resnet34["rho_total_loss_to_correct"] == pytest.approx(0.176, abs=0.001)
    assert resnet34["rho_steps_to_correct"] == pytest.approx(0.131, abs=0.001)
    assert runs.loc["efficientvit_b0.r224_in1k", "rho_steps_to_correct"] == pytest.approx(0.07, abs=0.01)
    # the epsilon variant under its own names, never as a cost to correct
    for model, rho in (("efficientvit_m1.r224_in1k", 0.32), ("efficientvit_m2.r224_in1k", 0.45)):
        assert runs.loc[model, "rho_loss_sum_to_epsilon"] == pytest.approx(rho, abs=0.01)
        assert runs.loc[model, "n_correct"] == 0 and pd.isna(runs.loc[model].get("rho_loss_sum"))
    merged = pd.read_csv(tmp_path / "merged.csv")
    steps = merged.loc[merged["run"] == "model=resnet34.a3_in1k", "steps_to_correct"]
    original = pd.read_csv(ORIGINAL / "resnet34.a3_in1k" / "single_example_results.csv")["steps_to_correct"]
    assert list(steps) == list(original - 1)  # the original's 1-based steps as t
