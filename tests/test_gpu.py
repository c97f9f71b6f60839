"""On a GPU: exact fp32, repeatable runs, the engine against the simple path (fp32; fp16_scaler in eval
and train mode bit for bit; bf16 refused), the search against the loop at step 0, the automatic
choice, and the original's fp16 arithmetic (its loss against nn.CrossEntropyLoss under CUDA autocast,
its skipped updates). Skipped without CUDA."""
import pandas as pd
import pytest
import torch

from helpers.configs import compose_config, tiny_universe_overrides
from helpers.fp16 import linear_mistake, scaler_skips
from sweep.config import ModelMode, Precision, TrainConfig
from sweep.outputs import OUTCOME_COLUMNS
from sweep.run.job import run
from sweep.training.loop import SingleExampleTrainer
from sweep.verdicts import cross_entropy

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
    auto, summary = job(tmp_path / "auto", cache_dir, "execution.kernels=exact")
    assert summary["execution"]["parallel"] > 1, summary["execution"]
    pd.testing.assert_frame_equal(auto[EXACT], simple[EXACT])
    assert ((auto["loss_sum"] - simple["loss_sum"]).abs() <= 1e-4 * simple["loss_sum"].abs().max()).all()


def test_the_kernel_choice_stays_within_the_tolerance_of_exact_kernels(tmp_path, cache_dir):
    """`execution.kernels=auto` (the default) times cuDNN's choice among the formulations and keeps the rows
    within the kernels' tolerance of vmap's own convolutions; a second run reads the timings back."""
    from sweep.tolerance import KERNELS, agreement
    exact, _ = job(tmp_path / "exact", cache_dir, "execution.parallel=4", "execution.kernels=exact")
    auto, summary = job(tmp_path / "auto", cache_dir, "execution.parallel=4")
    kernels = summary["execution"]["kernels"]
    assert kernels["setting"] == "auto" and kernels["why"] is None
    assert all("cudnn_benchmark" in shape["ms"] for shape in kernels["shapes"])
    matched = agreement(auto, exact, KERNELS)
    assert matched.ok, matched.describe()
    _, again = job(tmp_path / "again", cache_dir, "execution.parallel=4")
    assert again["execution"]["kernels"]["timed_shapes"] == 0


@pytest.mark.parametrize("mode", [ModelMode.eval, ModelMode.train])
def test_fp16_scaler_in_the_engine_is_the_simple_path_bit_for_bit(mode):
    """The original's arithmetic on CUDA (cuDNN's BatchNorm with the copies folded into the channels
    included): each copy's status, steps, skipped updates, loss sum and distance are the simple path's."""
    import timm

    from sweep.training.engine import batched_engine
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=5).cuda()
    xs = 3 * torch.randn(6, 3, 64, 64, device="cuda")
    with torch.no_grad():
        ys = [int(model.eval()(x[None]).argmin()) for x in xs]
    train = TrainConfig(mode=mode, precision=Precision.fp16_scaler, check_final_state=False)
    simple = SingleExampleTrainer(model, train, 1e-3, 30)
    expected = [simple.fit(x[None], y) for x, y in zip(xs, ys, strict=True)]
    simple.reset()
    engine, why = batched_engine(model, train, 1e-3, 30, 4, (3, 64, 64))
    assert engine is not None, why
    got = dict(engine.run((i, x, y, None) for i, (x, y) in enumerate(zip(xs, ys, strict=True))))
    for i, want in enumerate(expected):
        assert (got[i].status, got[i].steps_taken, got[i].skipped_updates, got[i].loss_sum, got[i].weight_distance) \
            == (want.status, want.steps_taken, want.skipped_updates, want.loss_sum, want.weight_distance), i


def test_bf16_takes_the_simple_path_and_says_why(tmp_path, cache_dir):
    """bf16 through the engine changed steps on an H200 (the copies' batched bf16 products round
    otherwise than one example's): the engine is refused, asked for or not, and the rows are the
    simple path's."""
    simple, _ = job(tmp_path / "simple", cache_dir, "train.precision=bf16", "execution.parallel=1")
    asked, summary = job(tmp_path / "asked", cache_dir, "train.precision=bf16", "execution.parallel=4")
    assert summary["execution"]["parallel"] == 1 and "train.precision=bf16" in summary["execution"]["why"]
    pd.testing.assert_frame_equal(asked, simple)


def test_the_fp16_loss_is_cross_entropy_under_cuda_autocast_bit_for_bit(mistakes):
    """The loop's fp16_scaler loss, written out, equals nn.CrossEntropyLoss inside CUDA's fp16
    autocast (the original's code) exactly: an fp32 tensor holding an fp16 value."""
    model, examples = mistakes
    model = model.cuda().eval()
    x = torch.stack([x for x, _ in examples]).cuda()
    y = torch.tensor([y for _, y in examples]).cuda()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        logits = model(x)
        original = torch.nn.CrossEntropyLoss(reduction="none")(logits, y)
    ours = cross_entropy(logits, y, Precision.fp16_scaler, reduction="none")
    model.cpu()
    assert original.dtype == ours.dtype == torch.float32
    assert torch.equal(original, ours)
    assert torch.equal(ours, ours.half().float())


@pytest.mark.parametrize("scale_input", [1.0, 3.0])
@pytest.mark.parametrize("initial_loss", [0.75, 2.0, 9.0])
def test_fp16_skips_on_cuda_follow_the_scalers_arithmetic(initial_loss, scale_input):
    model, x, y = linear_mistake(initial_loss, scale_input)
    model, x = model.cuda(), x.cuda()
    expected = scaler_skips(model, x, y, "cuda")
    train = TrainConfig(mode=ModelMode.eval, precision=Precision.fp16_scaler, check_final_state=False)
    outcome = SingleExampleTrainer(model, train, 1e-9, expected + 1).fit(x, y)
    assert expected >= 1 and outcome.skipped_updates == expected
