"""Scale out: joblib and submitit launchers, shards of one run, sweep directories that cannot collide."""
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from analysis.aggregate import aggregate
from helpers.commands import main_command, results, run_cli, run_main
from helpers.configs import ROOT, tiny_universe_overrides
from sweep.config import register_configs

TINY_RUN = ["model=test_resnet", "lr=2e-5", "max_steps=300", "progress=false"]


def multirun(*args, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return run_main("-m", *args, cwd=cwd, timeout=timeout)


def assert_complete_jobs(sweep: Path, n_jobs: int, rows_per_job: int) -> None:
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == [str(i) for i in range(n_jobs)]
    for job in jobs:
        assert len(results(job)) == rows_per_job
        assert (job / "training_summary.json").is_file() and (job / "loss_vs_difficulty.png").is_file()


@pytest.mark.slow  # two jobs in joblib's processes; the preset's composition is checked below
def test_joblib_parallel_sweep(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    multirun("hydra/launcher=parallel", *TINY_RUN, "sample_size=3", "lr=2e-5,4e-5", "aggregate=false",
             f"hydra.sweep.dir={sweep}", *tiny_universe_overrides(cache_dir), cwd=tmp_path)
    assert_complete_jobs(sweep, 2, 3)
    log = (sweep / "0" / "main.log").read_text()
    assert "done" in log


@pytest.mark.slow  # submitit's code path; the slurm tests run it on a real cluster where one answers (CI)
def test_submitit_local_sweep(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    multirun("hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", *TINY_RUN, "sample_size=2",
             "seed=0,1", f"hydra.sweep.dir={sweep}", *tiny_universe_overrides(cache_dir), cwd=tmp_path)
    assert_complete_jobs(sweep, 2, 2)
    assert (sweep / ".submitit").is_dir()


def test_parallel_preset_composes():
    from hydra import compose, initialize_config_dir
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=parallel"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2


def test_slurm_preset_composes():
    from hydra import compose, initialize_config_dir
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.max_num_timeout > 0 and launcher.array_parallelism > 0


def test_shards_together_equal_the_unsharded_run(tmp_path, cache_dir):
    whole = tmp_path / "whole"
    code, output = run_cli(*TINY_RUN, "sample_size=7", f"hydra.run.dir={whole}", *tiny_universe_overrides(cache_dir))
    assert code == 0, output[-2000:]
    sweep = tmp_path / "sharded"
    code, output = run_cli("-m", *TINY_RUN, "sample_size=7", "shard.index=range(0,3)", "shard.count=3",
                           "aggregate=false", f"hydra.sweep.dir={sweep}", *tiny_universe_overrides(cache_dir))
    assert code == 0, output[-2000:]
    shards = [results(sweep / str(i)) for i in range(3)]
    assert [len(s) for s in shards] == [3, 2, 2]
    union = pd.concat(shards).sort_values("example_index").reset_index(drop=True)
    pd.testing.assert_frame_equal(union, results(whole))
    runs = aggregate([sweep], sweep, figures=False)["runs"]  # the shards merged into one run
    assert len(runs) == 1 and runs["n_examples"].item() == 7
    assert "merged shards [0, 1, 2] of 3" in runs["notes"].item()


@pytest.mark.slow  # two concurrent sweeps
def test_two_sweeps_started_together_do_not_collide(tmp_path, cache_dir):
    command = main_command("-m", *TINY_RUN, "sample_size=1", "max_steps=2", *tiny_universe_overrides(cache_dir))
    processes = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for _ in range(2)]
    assert all(p.wait(timeout=600) == 0 for p in processes)
    sweeps = list((tmp_path / "multirun").glob("*/*"))
    assert len(sweeps) == 2 and all((s / "0" / "single_example_results.csv").is_file() for s in sweeps)
