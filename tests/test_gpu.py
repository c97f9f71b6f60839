"""On a GPU: exact fp32, repeatable runs, the engine against the simple path, the search against the
loop at step 0, the automatic choice, bf16 and the original's fp16 scaler. Skipped without CUDA."""
import pandas as pd
import pytest

from helpers.configs import compose_config, tiny_universe_overrides
from sweep.config import ModelMode, Precision, TrainConfig
from sweep.outputs import OUTCOME_COLUMNS
from sweep.run.job import run
from sweep.training.loop import SingleExampleTrainer

pytestmark = pytest.mark.gpu
EXACT = ["example_index", "path", "status", "steps_to_correct", "initial_prediction"]


def job(out, cache_dir, *overrides):
    cfg = compose_config(*tiny_universe_overrides(cache_dir), "sample_size=12", "lr=3e-5", "max_steps=100",
                         "progress=false", "execution.device=cuda", *overrides)
    summary = run(cfg, out)
    rows = pd.read_csv(out / "single_example_results.csv").sort_values("example_index").reset_index(drop=True)
    return rows[OUTCOME_COLUMNS], summary


def test_two_identical_runs_give_identical_rows_and_fp32_is_exact(tmp_path, cache_dir):
    first, summary = job(tmp_path / "a", cache_dir, "execution.parallel=1")
    again, _ = job(tmp_path / "b", cache_dir, "execution.parallel=1")
    pd.testing.assert_frame_equal(first, again)
    assert summary["tf32_matmul"] is False and summary["tf32_cudnn"] is False
    assert summary["cudnn_deterministic"] is True and summary["deterministic_algorithms"] is True
    assert summary["device_name"] != "CPU" and summary["cuda"] and summary["cudnn"]
    # the wrong-set search (batch 64) and the loop (batch 1) agree at step 0
    assert summary["correct_at_step_0"] == 0
    assert first["steps_to_correct"].nunique() > 2


def test_engine_matches_the_simple_path_and_auto_takes_it(tmp_path, cache_dir):
    simple, _ = job(tmp_path / "simple", cache_dir, "execution.parallel=1")
    auto, summary = job(tmp_path / "auto", cache_dir)
    assert summary["execution"]["parallel"] > 1, summary["execution"]
    pd.testing.assert_frame_equal(auto[EXACT], simple[EXACT])
    assert ((auto["loss_sum"] - simple["loss_sum"]).abs() <= 1e-4 * simple["loss_sum"].abs().max()).all()


def test_bf16_runs_on_the_engine_or_says_why_not(tmp_path, cache_dir):
    rows, summary = job(tmp_path, cache_dir, "train.precision=bf16")
    assert len(rows) == 12 and summary["execution"]["description"]
    print("bf16:", summary["execution"]["description"], dict(rows["status"].value_counts()))


def test_fp16_scaler_skips_the_first_updates_on_cuda(mistakes):
    model, examples = mistakes
    model = model.cuda()
    train = TrainConfig(mode=ModelMode.eval, precision=Precision.fp16_scaler, check_final_state=False)
    trainer = SingleExampleTrainer(model, train, 3e-5, 100)
    outcomes = [trainer.fit(x[None].cuda(), y) for x, y in examples]
    skipped = [o.skipped_updates for o in outcomes]
    print("fp16 scaler, skipped updates per example:", skipped, "steps:", [o.steps_taken for o in outcomes])
    assert all(o.skipped_updates <= o.steps_taken for o in outcomes)
    model.cpu()
