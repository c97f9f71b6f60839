"""The embedded universe: reproducible, difficulty tracks the generating severity, mistakes to correct."""
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from helpers.configs import TINY_UNIVERSE, compose_config
from sweep.config import UniverseConfig
from sweep.data.universe.build import build_universe, pretrained_weights
from sweep.run.job import run


@pytest.fixture(scope="session")
def default_universe(cache_dir):
    return build_universe(dataclasses.asdict(UniverseConfig()), cache_dir)


# A universe that builds in a couple of seconds: one zoo member (clearly above chance), one model to pretrain.
QUICK = {**TINY_UNIVERSE, "zoo_archs": ["test_efficientnet"], "zoo_epochs": [4]}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_rebuild_gives_identical_files_whatever_the_thread_count(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a job of a parallel launcher would have
    try:
        first = build_universe(dict(QUICK), tmp_path / "a")
        first_weights = torch.load(pretrained_weights(first, "test_resnet", 1, 0), weights_only=True)
    finally:
        torch.set_num_threads(threads)
    second = build_universe(dict(QUICK), tmp_path / "b")
    first_image = "val/" + pd.read_csv(first.labels_csv)["file"][0]
    for name in ("correctness.npy", "difficulty.csv", "labels.csv", "val_meta.csv", "models.csv", "zoo.csv",
                 first_image):
        assert digest(first.root / name) == digest(second.root / name), name
    second_weights = torch.load(pretrained_weights(second, "test_resnet", 1, 0), weights_only=True)
    assert all(torch.equal(first_weights[k], second_weights[k]) for k in first_weights)
    assert digest(pretrained_weights(first, "test_resnet", 1, 0)) == digest(pretrained_weights(second, "test_resnet",
                                                                                              1, 0))  # the file too


def test_cached_universe_is_reused(tmp_path):
    universe = build_universe(dict(QUICK), tmp_path)
    stamp = (universe.root / "correctness.npy").stat().st_mtime_ns
    assert build_universe(dict(QUICK), tmp_path).root == universe.root
    assert (universe.root / "correctness.npy").stat().st_mtime_ns == stamp
    other = build_universe({**QUICK, "n_val": 150}, tmp_path)
    assert other.root != universe.root  # keyed by its parameters


@pytest.mark.slow  # builds the default universe (about 45 s on 2 cores)
def test_universal_difficulty_tracks_nuisance_severity(default_universe):
    meta = pd.read_csv(default_universe.val_meta_csv)
    rho = stats.spearmanr(meta["severity"], meta["rank"]).statistic
    print(f"Spearman rho(severity, universal difficulty rank) = {rho:.3f} over {len(meta)} images")
    assert rho > 0.5
    assert sorted(meta["rank"]) == list(range(1, len(meta) + 1))
    correct = np.load(default_universe.root / "correctness.npy")
    models = (default_universe.root / "models.csv").read_text().strip().split(",")
    assert correct.dtype == bool and correct.shape == (len(models), len(meta))


@pytest.mark.slow
def test_default_model_has_a_few_hundred_mistakes_with_a_spread_of_costs(default_universe, cache_dir, tmp_path):
    summary = run(compose_config(f"cache_dir={cache_dir}", "sample_size=12", "progress=false"), tmp_path)
    wrong = len(pd.read_csv(tmp_path / "selection.csv"))
    assert wrong == 12
    rows = pd.read_csv(tmp_path / "single_example_results.csv")
    print(f"default model: {summary['selection']['examples']} validation images; steps to correct "
          f"{sorted(rows['steps_to_correct'])}")
    assert (rows["status"] == "correct").all()
    assert rows["steps_to_correct"].max() >= 3 * max(rows["steps_to_correct"].min(), 1)
    ordered = rows.sort_values("example_index")
    assert ordered["universal_difficulty_rank"].is_monotonic_increasing  # the selection is easiest first


@pytest.mark.slow
def test_default_model_gets_a_few_hundred_validation_images_wrong(default_universe, cache_dir):
    from sweep.data.demo import open_demo
    from sweep.data.images import example_view
    from sweep.run.inference import Search, find_wrong
    demo = open_demo(UniverseConfig(), cache_dir)
    model = demo.pretrained("test_resnet").eval()
    wrong, unreadable = find_wrong(model, demo.examples, Search(example_view(model, random_view=False, seed=0),
                                                                batch_size=256, progress=False))
    assert unreadable == 0
    print(f"default model gets {len(wrong)} of {len(demo.examples)} validation images wrong")
    assert 150 <= len(wrong) <= 700
