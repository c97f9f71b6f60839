"""Worker processes (execution.workers): same rows as one process, failures reported, clean stop, resume."""
import json
import os
import signal
import subprocess

import pandas as pd
import pytest
import timm
import torch

from helpers.commands import main_command, run_cli, wait_for_rows
from helpers.configs import compose_config, tiny_universe_overrides
from sweep.errors import UserError
from sweep.outputs import OUTCOME_COLUMNS
from sweep.run.job import run

EXAMPLES = 6
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="forked CPU workers need the GPUs hidden "
                                "(CUDA_VISIBLE_DEVICES=): autograd's GPU threads do not survive a fork")


def job(out, cache_dir, *overrides):
    """Run one job in-process with one torch thread per process (float results depend on the thread count)."""
    cfg = compose_config(*tiny_universe_overrides(cache_dir), f"sample_size={EXAMPLES}", "lr=3e-5", "max_steps=60",
                         "progress=false", "execution.threads=1", *overrides)
    run(cfg, out)
    return outcomes(out)


def outcomes(out):
    rows = pd.read_csv(out / "single_example_results.csv")
    return rows[OUTCOME_COLUMNS].sort_values("example_index").reset_index(drop=True)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, cache_dir):
    rows = job(tmp_path_factory.mktemp("one_process"), cache_dir)
    assert len(rows) == EXAMPLES and rows["steps_to_correct"].nunique() > 2
    return rows


def test_workers_give_exactly_the_rows_of_one_process(tmp_path, cache_dir, one_process):
    pd.testing.assert_frame_equal(job(tmp_path, cache_dir, "execution.workers=2"), one_process)


def test_workers_running_the_batched_engine(tmp_path, cache_dir, one_process):
    rows = job(tmp_path, cache_dir, "execution.workers=2", "execution.parallel=2", "execution.kernels=exact")
    exact = ["example_index", "path", "status", "steps_to_correct", "initial_prediction", "probe_error_after",
             "probe_flips_to_wrong", "probe_flips_to_right"]
    pd.testing.assert_frame_equal(rows[exact], one_process[exact])
    assert ((rows["loss_sum"] - one_process["loss_sum"]).abs() <= 1e-4 * one_process["loss_sum"]).all()
    assert ((rows["probe_loss_after"] - one_process["probe_loss_after"]).abs() <= 1e-4).all()


def test_channels_last_workers_give_exactly_the_rows_of_one_process(tmp_path, cache_dir, one_process):
    layout = "execution.memory_format=channels_last"
    rows = job(tmp_path / "one", cache_dir, layout)
    pd.testing.assert_frame_equal(job(tmp_path / "workers", cache_dir, layout, "execution.workers=2"), rows)
    exact = ["example_index", "path", "initial_prediction"]
    pd.testing.assert_frame_equal(rows[exact], one_process[exact])
    summary = json.loads((tmp_path / "one" / "training_summary.json").read_text())
    assert summary["execution"]["memory_format"] == "channels_last"  # the layout was in force


@pytest.mark.parametrize("failure", ["exception", "killed"])
def test_a_failing_worker_stops_the_run_and_keeps_finished_rows(tmp_path, cache_dir, one_process, monkeypatch,
                                                                failure):
    import sweep.training.executor
    victim = one_process.sort_values("initial_loss")["path"].iloc[0]  # handed out last (longest first)
    read_view = sweep.training.executor.read_view

    def failing(view, example):  # runs in a forked worker
        if example.path == victim:
            if failure == "killed":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("boom in the worker")
        return read_view(view, example)

    monkeypatch.setattr(sweep.training.executor, "read_view", failing)
    message = "boom in the worker" if failure == "exception" else "exited with code -9"
    with pytest.raises(RuntimeError, match=message):
        job(tmp_path, cache_dir, "execution.workers=2")
    kept = outcomes(tmp_path)
    assert 1 <= len(kept) < EXAMPLES and victim not in set(kept["path"])
    pd.testing.assert_frame_equal(kept, one_process[one_process["path"].isin(kept["path"])].reset_index(drop=True))

    monkeypatch.setattr(sweep.training.executor, "read_view", read_view)
    pd.testing.assert_frame_equal(job(tmp_path, cache_dir, "execution.workers=2"), one_process)  # resumes


@pytest.mark.slow  # the process-group SIGTERM test (test_data_safety) covers workers, hand-back and resume
def test_sigterm_stops_workers_cleanly_and_a_rerun_resumes(tmp_path, cache_dir):
    out, examples = tmp_path / "run", 8
    command = main_command(*tiny_universe_overrides(cache_dir), f"sample_size={examples}", "lr=1e-5", "max_steps=300",
                           "progress=false", "execution.workers=2", f"hydra.run.dir={out}")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_rows(out / "single_example_results.csv", 1, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode != 0 and "stopped by SIGTERM" in stderr, stderr[-2000:]
    kept = outcomes(out)
    assert 1 <= len(kept) < examples
    code, output = run_cli(*command[2:])  # the same command, resumed in this process
    assert code == 0, output[-2000:]
    resumed = outcomes(out)
    assert len(resumed) == examples and resumed["path"].is_unique
    pd.testing.assert_frame_equal(resumed[resumed["path"].isin(kept["path"])].reset_index(drop=True), kept)


def test_workers_must_be_positive(tmp_path, cache_dir):
    with pytest.raises(UserError, match="execution.workers=0: expected auto or an integer >= 1"):
        job(tmp_path, cache_dir, "execution.workers=0")


def test_a_dropout_model_in_train_mode_gives_the_same_rows_on_every_path(tmp_path, cache_dir):
    """Dropout drawn from each example's own seed: the simple path, the workers (longest first) and
    the engine setting (which falls back to the simple path in train mode) give identical rows."""
    if not timm.is_model("test_vit_relpos"):
        pytest.skip(f"timm {timm.__version__} has no test_vit_relpos (a tiny model with dropout, timm >= 1.0.31)")
    model = ["model.arch=test_vit_relpos", "train.mode=train", "lr=1e-4", "sample_size=4"]
    simple = job(tmp_path / "simple", cache_dir, *model, "execution.workers=1", "execution.parallel=1")
    assert simple["steps_to_correct"].nunique() > 1
    # workers, and in them the engine setting (which falls back to the simple path in train mode)
    pd.testing.assert_frame_equal(job(tmp_path / "workers", cache_dir, *model, "execution.workers=2",
                                      "execution.parallel=2"), simple)
