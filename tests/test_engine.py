"""The batched engine reproduces the simple path per example (deterministic mode)."""

import pandas as pd
import pytest
import torch

from helpers.configs import compose_config, tiny_universe_overrides
from sweep.config import Optimizer, Precision, TrainConfig
from sweep.run.job import run
from sweep.run.results import finished
from sweep.training.copies import Copies
from sweep.training.engine import BatchedTrainer, batched_engine
from sweep.training.executor import Executor
from sweep.training.loop import SingleExampleTrainer

SETTINGS = {Optimizer.adamw: (3e-5, 60), Optimizer.adam: (3e-5, 60), Optimizer.sgd: (3e-4, 60)}  # (lr, max_steps)
MANY = 36  # examples for K=32: more than the copies, so that slots are refilled and then dropped


@pytest.fixture(scope="module")
def many_mistakes(cache_dir):
    """The tiny universe's pretrained model and MANY of its real mistakes."""
    from helpers.configs import TINY_UNIVERSE
    from helpers.mistakes import demo_mistakes
    from sweep.data.demo import open_demo
    model, chosen = demo_mistakes(open_demo(dict(TINY_UNIVERSE), cache_dir), "test_resnet", MANY)
    return model, [(x, y) for x, y, _ in chosen]


@pytest.fixture(scope="module")
def simple_outcomes(mistakes, many_mistakes):
    """The simple path's outcomes of 10 or MANY mistakes per optimizer (SGD with momentum), computed once."""
    cache = {}

    def outcomes(optimizer, many):
        if (optimizer, many) not in cache:
            model, examples = many_mistakes if many else mistakes
            lr, max_steps = SETTINGS[optimizer]
            simple = SingleExampleTrainer(model, TrainConfig(optimizer=optimizer), lr, max_steps)
            cache[optimizer, many] = [simple.fit(x[None], y) for x, y in examples]
            simple.reset()
        return cache[optimizer, many]
    return outcomes


@pytest.mark.parametrize("optimizer, k", [
    pytest.param(Optimizer.adamw, 1, marks=pytest.mark.slow), pytest.param(Optimizer.adamw, 3, marks=pytest.mark.slow),
    (Optimizer.adamw, 8), pytest.param(Optimizer.adamw, 32, marks=pytest.mark.slow),  # K=32: in CI's slow run
    pytest.param(Optimizer.adam, 1, marks=pytest.mark.slow), pytest.param(Optimizer.adam, 3, marks=pytest.mark.slow),
    (Optimizer.adam, 8), pytest.param(Optimizer.adam, 32, marks=pytest.mark.slow),
    (Optimizer.sgd, 1), pytest.param(Optimizer.sgd, 3, marks=pytest.mark.slow), (Optimizer.sgd, 8),
    pytest.param(Optimizer.sgd, 32, marks=pytest.mark.slow)])
def test_batched_engine_matches_simple_path(mistakes, many_mistakes, simple_outcomes, k, optimizer):
    """Every copy is stepped as with an optimizer of its own (step counts, moments, momentum), its slot
    refilled when its example finishes (fewer copies than examples) and dropped once the queue is empty."""
    many = k == 32
    model, examples = many_mistakes if many else mistakes
    train = TrainConfig(optimizer=optimizer)
    lr, max_steps = SETTINGS[optimizer]
    expected = simple_outcomes(optimizer, many)
    steps = [o.steps_taken for o in expected]
    assert len(set(steps)) >= 4 and len(examples) > k, steps  # examples finish at different steps: slots refilled
    engine = BatchedTrainer(model, train, lr, max_steps, parallel=k)
    got = dict(engine.run((i, x, y, None) for i, (x, y) in enumerate(examples)))
    for i, want in enumerate(expected):
        assert (got[i].status, got[i].steps_to_correct, got[i].steps_taken) == \
            (want.status, want.steps_to_correct, want.steps_taken), i
        assert got[i].loss_sum == pytest.approx(want.loss_sum, rel=1e-4, abs=1e-6)
        for field in ("initial_loss", "final_loss", "initial_margin", "initial_grad_norm", "initial_el2n",
                      "weight_distance"):
            assert getattr(got[i], field) == pytest.approx(getattr(want, field), rel=1e-4, abs=1e-5), field
        assert got[i].initial_prediction == want.initial_prediction


def test_the_optimizer_holds_one_tensor_per_parameter_whatever_k(mistakes):
    """The engine's parameters and optimizer state are stacked (one tensor per parameter and moment for
    all K copies); dropping copies moves the kept ones to the front, their state with them."""
    model, _ = mistakes
    trainable = sum(p.requires_grad for p in model.parameters())
    for k in (3, 8):
        engine = BatchedTrainer(model, TrainConfig(), 3e-5, 3, parallel=k)
        copies = Copies(engine.pretrained, k, engine._optimizer, [True] * trainable)
        moments = copies.optimizer.state
        assert len(copies.stacked) == trainable and all(len(s) == k for s in copies.stacked)
        assert [len(tensors) for tensors in moments] == [trainable, trainable]
        assert all(len(t) == k for tensors in moments for t in tensors)
        assert copies.optimizer.steps.shape == (trainable, k)
        copies.step([torch.full_like(s, i + 1.0) for i, s in enumerate(copies.stacked)])
        copies.reset(1)
        before = [m[k - 1].clone() for m in moments[0]]
        copies.keep([1, k - 1])
        assert all(len(s) == 2 for s in copies.stacked) and copies.optimizer.count == 2
        assert copies.optimizer.steps[:, :2].tolist() == [[0.0, 1.0]] * trainable
        assert all(m[0].abs().sum() == 0 and torch.equal(m[1], b) for m, b in zip(moments[0], before, strict=True))


def test_run_with_parallel_gives_the_simple_path_results(tmp_path, cache_dir):
    def job(*overrides):
        cfg = compose_config(*tiny_universe_overrides(cache_dir), "sample_size=6", "lr=3e-5", "max_steps=60",
                             "progress=false", *overrides)
        out = tmp_path / "_".join(overrides or ["simple"])
        run(cfg, out)
        rows = pd.read_csv(out / "single_example_results.csv").sort_values("example_index").reset_index(drop=True)
        return rows.drop(columns=["seconds", "loss_sum", "total_loss_to_correct", "initial_loss", "final_loss",
                                  "initial_margin", "initial_grad_norm", "initial_el2n", "weight_distance",
                                  "probe_loss_after",
                                  "probe_loss_increase"]), rows

    simple, simple_full = job()
    batched, batched_full = job("execution.parallel=4", "execution.kernels=exact")
    pd.testing.assert_frame_equal(simple, batched)  # the probe's error and flips included: each copy's own weights
    assert (batched_full["loss_sum"] - simple_full["loss_sum"]).abs().max() <= 1e-4 * simple_full["loss_sum"].max()
    assert (batched_full["probe_loss_after"] - simple_full["probe_loss_after"]).abs().max() <= 1e-4


def test_bf16_falls_back_with_a_reason(mistakes):
    model, examples = mistakes
    size = tuple(examples[0][0].shape)
    engine, reason = batched_engine(model, TrainConfig(), 1e-3, 5, 2, size)
    assert isinstance(engine, BatchedTrainer) and reason is None
    engine, reason = batched_engine(model, TrainConfig(precision=Precision.bf16), 1e-3, 5, 2, size)
    assert engine is None and reason.startswith("train.precision=bf16")


class _ItemInForward(torch.nn.Module):
    """A model vmap cannot batch: its forward reads a tensor's value on the host."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(48, 3)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc(x) * float(x.abs().max() > 0)


def test_a_model_vmap_cannot_batch_falls_back_with_a_reason(mistakes, caplog):
    from sweep.training.planner import plan
    model, examples = mistakes
    assert BatchedTrainer(model, TrainConfig(), 1e-3, 5, 2).unbatchable(tuple(examples[0][0].shape)) is None
    reason = BatchedTrainer(_ItemInForward(), TrainConfig(), 1e-3, 5, 2).unbatchable((3, 4, 4))
    assert reason and "vmap cannot batch _ItemInForward" in reason

    cfg = compose_config("execution.parallel=4")
    unbatchable = _ItemInForward()
    unbatchable.pretrained_cfg = {"input_size": (3, 4, 4)}  # what timm's data config reads
    cpu = torch.device("cpu")
    trainer = SingleExampleTrainer(unbatchable, cfg.train, 1e-3, 5)
    executor, _, chosen = plan(cfg.execution, Executor(trainer, None, cpu, finished), [], {}, 1, None)
    assert executor.engine is None
    assert "execution.parallel=4 ignored" in caplog.text and "_ItemInForward" in caplog.text
    assert chosen.parallel == 1 and "vmap cannot batch _ItemInForward" in chosen.reason
    trainer = SingleExampleTrainer(model, cfg.train, 1e-3, 5)
    executor, _, chosen = plan(cfg.execution, Executor(trainer, None, cpu, finished), [], {}, 1, None)
    assert isinstance(executor.engine, BatchedTrainer)


def test_longest_first_orders_by_predicted_cost_and_keeps_unknown_ones_last_in_order():
    from sweep.training.planner import longest_first
    cost = {"a": 1.0, "b": None, "c": 3.0, "d": float("nan"), "e": 2.0}
    assert longest_first(list("abcde"), cost.get) == ["c", "e", "a", "b", "d"]


def test_selection_records_initial_losses_that_predict_the_cost(tmp_path, cache_dir):
    from sweep.run.directory import RunDirectory
    cfg = compose_config(*tiny_universe_overrides(cache_dir), "sample_size=8", "lr=3e-5", "max_steps=60",
                         "progress=false")
    run(cfg, tmp_path)
    selection = pd.read_csv(tmp_path / "selection.csv")
    rows = pd.read_csv(tmp_path / "single_example_results.csv")
    assert selection["initial_loss"].notna().all() and len(RunDirectory(tmp_path).selection().initial_losses) == 8
    # the search's batched forward and step 0 of the loop see the same loss
    merged = selection.merge(rows, on="path", suffixes=("_search", "_loop"))
    assert merged["initial_loss_search"].to_numpy() == pytest.approx(merged["initial_loss_loop"].to_numpy(), rel=1e-4)


class _WithUnusedParameter(torch.nn.Module):
    """A classifier with a parameter its forward never touches (no gradient in the simple path)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(48, 3)
        self.unused = torch.nn.Parameter(torch.full((5,), 1000.0))  # weight decay would move it far

    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("which", [pytest.param("demo model", marks=pytest.mark.slow), "unused parameter"])
def test_engine_matches_the_simple_path_with_weight_decay(mistakes, which):
    train = TrainConfig(optimizer=Optimizer.adamw, weight_decay=0.01)
    if which == "demo model":
        model, examples = mistakes
        lr, max_steps = 3e-5, 60
    else:
        torch.manual_seed(0)
        model = _WithUnusedParameter()
        xs = torch.randn(4, 3, 4, 4)
        examples = [(x, int(model(x[None]).argmin())) for x in xs]
        lr, max_steps = 1e-2, 40
    simple = SingleExampleTrainer(model, train, lr, max_steps)
    expected = [simple.fit(x[None], y) for x, y in examples]
    simple.reset()
    engine = BatchedTrainer(model, train, lr, max_steps, parallel=3)
    got = dict(engine.run((i, x, y, None) for i, (x, y) in enumerate(examples)))
    for i, want in enumerate(expected):
        assert (got[i].status, got[i].steps_taken) == (want.status, want.steps_taken), i
        assert got[i].weight_distance == pytest.approx(want.weight_distance, rel=1e-4), i
    assert sum(o.steps_taken for o in expected) > len(expected)


def _discrete(outcome):
    """What must not change at all: how and when the loop stopped, and what the probe counted."""
    probe = outcome.probe
    return (outcome.status, outcome.steps_taken, outcome.initial_prediction, len(outcome.losses),
            probe and (probe.images, probe.error, probe.flips_to_wrong, probe.flips_to_right))


def _floats(outcome):
    return [outcome.loss_sum, outcome.initial_loss, outcome.final_loss, outcome.initial_margin,
            outcome.initial_grad_norm, outcome.initial_el2n, outcome.weight_distance, *outcome.losses,
            *([outcome.probe.loss] if outcome.probe else [])]


@pytest.fixture(scope="module")
def probe_of(mistakes):
    """A probe of 12 demo images judged at the pretrained weights, with a budget or without one."""
    from sweep.training.flops import count_step
    from sweep.training.probe import Probe
    model, examples = mistakes
    torch.manual_seed(1)
    x = torch.rand(12, *examples[0][0].shape)
    y = torch.randint(0, 10, (12,))
    cost = count_step(model, tuple(examples[0][0].shape))
    return lambda budget: Probe.at_pretrained(model, x, y, budget, cost)


@pytest.mark.parametrize("k, sync_every, budget", [(4, 3, None), (10, 5, 0.5),
                                                   pytest.param(3, 7, 0.25, marks=pytest.mark.slow)])
def test_reading_the_loops_every_few_steps_changes_no_outcome(mistakes, probe_of, k, sync_every, budget):
    """Loops that stop between two reads are frozen where they stopped: outcomes are those of a read
    at every step, logged losses and the probe included, up to K = every example. (Idle copies are
    dropped at reads, so K, and with it vmap's float rounding, can differ for a few steps.)"""
    model, examples = mistakes
    probe = probe_of(budget)

    def outcomes(parallel, every):
        engine = BatchedTrainer(model, TrainConfig(), 3e-5, 60, parallel, log_steps=True, probe=probe,
                                sync_every=every)
        return dict(engine.run((i, x, y, f"example {i}") for i, (x, y) in enumerate(examples)))

    every_step = outcomes(k, 1)
    assert len({o.steps_taken for o in every_step.values()}) >= 4
    assert all(len(o.losses) == o.steps_taken + 1 for o in every_step.values())
    got = outcomes(k, sync_every)
    assert {i: _discrete(o) for i, o in got.items()} == {i: _discrete(o) for i, o in every_step.items()}
    for i, want in every_step.items():
        assert _floats(got[i]) == pytest.approx(_floats(want), rel=1e-6, abs=1e-7), i


def test_the_vmapped_probe_judges_as_one_copy_after_another(mistakes, probe_of):
    model, examples = mistakes
    results = {}
    for vmapped in (False, True):
        engine = BatchedTrainer(model, TrainConfig(), 3e-5, 60, 10, probe=probe_of(0.5), sync_every=4)
        engine.vmapped_probe = vmapped  # the GPU's way, on the CPU
        results[vmapped] = {i: o.probe for i, o in engine.run((i, x, y, f"example {i}")
                                                              for i, (x, y) in enumerate(examples))}
    for i, one_by_one in results[False].items():
        batched = results[True][i]
        assert (batched.images, batched.error, batched.flips_to_wrong, batched.flips_to_right) == \
            (one_by_one.images, one_by_one.error, one_by_one.flips_to_wrong, one_by_one.flips_to_right)
        assert batched.loss == pytest.approx(one_by_one.loss, rel=1e-5)


def test_the_stopping_rule_on_the_device_is_the_loop_s():
    from sweep.training.stopping import STOP_CODES, stop_codes, stop_status
    cases = [(loss, prediction, t, check) for loss in (0.5, float("nan"), float("inf")) for prediction in (1, 2)
             for t in (0, 3, 5) for check in (True, False)]
    for check in (True, False):
        chosen = [c for c in cases if c[3] == check]
        codes = stop_codes(torch.tensor([c[0] for c in chosen]), torch.tensor([c[1] for c in chosen]),
                           torch.tensor([1] * len(chosen)), torch.tensor([c[2] for c in chosen]), 5, check)
        for (loss, prediction, t, _), code in zip(chosen, codes.tolist(), strict=True):
            assert STOP_CODES.get(code) == stop_status(loss, prediction, 1, t, 5, check), (loss, prediction, t)


def test_dropping_copies_moves_as_few_as_possible():
    from sweep.training.copies import compacted
    assert compacted([0, 2, 3, 5]) == [0, 5, 2, 3]  # slot 1 takes copy 5; slots 0, 2 and 3 stay
    assert compacted([0, 1, 2]) == [0, 1, 2]
    assert sorted(compacted([4, 5, 6])) == [4, 5, 6]


# slow: fp16 on a CPU (CI runs test_engine.py's slow tests); the default suite keeps the scalers' own test
@pytest.mark.parametrize("optimizer", [pytest.param(o, marks=pytest.mark.slow) for o in Optimizer])
def test_fp16_with_a_loss_scaler_per_copy_matches_the_simple_path(mistakes, optimizer):
    """The original's arithmetic in the engine: fp16 autocast, each copy's loss scaler as a fresh GradScaler
    of its own example (the same skipped first updates, counted as steps), torch.optim's default step
    behind it. Every outcome equals the simple path's, bit for bit."""
    model, examples = mistakes
    examples = examples[:6]  # fp16 on a CPU is slow: six examples, a short loop at a larger learning rate
    train = TrainConfig(optimizer=optimizer, precision=Precision.fp16_scaler, check_final_state=False)
    lr, max_steps = SETTINGS[optimizer][0] * 4, 25
    simple = SingleExampleTrainer(model, train, lr, max_steps)
    expected = [simple.fit(x[None], y) for x, y in examples]
    simple.reset()
    assert all(o.skipped_updates >= 1 for o in expected) and len({o.steps_taken for o in expected}) >= 3
    engine, reason = batched_engine(model, train, lr, max_steps, 4, tuple(examples[0][0].shape))
    assert reason is None
    got = dict(engine.run((i, x, y, None) for i, (x, y) in enumerate(examples)))
    for i, want in enumerate(expected):
        assert (got[i].status, got[i].steps_taken, got[i].skipped_updates, got[i].loss_sum, got[i].final_loss,
                got[i].weight_distance) == (want.status, want.steps_taken, want.skipped_updates, want.loss_sum,
                                            want.final_loss, want.weight_distance), i


def test_loss_scalers_follow_torch_s_grad_scaler():
    """Each copy's scale, growth tracker and overflow verdict as torch.amp.GradScaler's, over a run of
    finite and overflowing gradients that crosses a growth interval."""
    from sweep.training.scalers import GROWTH_INTERVAL, LossScalers
    scalers = LossScalers(2, torch.device("cpu"))
    references = [torch.amp.GradScaler("cpu") for _ in range(2)]
    overflows = [[True, False], [False, False]] + [[False, i % 700 == 0] for i in range(GROWTH_INTERVAL + 5)]
    parameters = [torch.nn.Parameter(torch.zeros(2)) for _ in references]
    optimizers = [torch.optim.SGD([parameter], lr=0.0) for parameter in parameters]
    for overflow in overflows:
        grads = [torch.tensor([[1.0, float("inf") if o else 2.0] for o in overflow]) * scalers.scale[:, None]]
        found = scalers.unscale_(grads)
        assert found.tolist() == overflow
        for i, (scaler, parameter, optimizer) in enumerate(zip(references, parameters, optimizers, strict=True)):
            scaler.scale(torch.zeros(()))  # the scaler's state, as a backward of a scaled loss starts it
            parameter.grad = torch.tensor([1.0, float("inf") if overflow[i] else 2.0]) * scaler.get_scale()
            scaler.unscale_(optimizer)
            assert torch.equal(parameter.grad[:1], grads[0][i, :1])  # unscaled as GradScaler unscales
            scaler.step(optimizer)
            scaler.update()
        scalers.update(found)
        assert scalers.scale.tolist() == [scaler.get_scale() for scaler in references]
    assert scalers.scale.tolist() != [2.0 ** 16] * 2


def test_a_model_whose_fp16_copies_compute_otherwise_falls_back_with_a_reason():
    """The engine compares the copies' fp16 logits with one example's before it takes a model: a
    ViT's attention, batched, sums otherwise, so it keeps the simple path and says why."""
    import timm
    model = timm.create_model("test_vit", num_classes=10).eval()
    engine, reason = batched_engine(model, TrainConfig(precision=Precision.fp16_scaler), 1e-5, 5, 2, (3, 32, 32))
    assert engine is None and "computes otherwise than one example's" in reason, reason


@pytest.mark.slow  # two runs of the original's preset (CI runs test_engine.py's slow tests)
def test_the_original_preset_in_eval_mode_runs_in_the_engine_with_the_simple_path_s_rows(tmp_path, cache_dir):
    """experiment=original (fp16, a loss scaler per example, one random view each) in eval mode takes the
    engine, whose every row equals the simple path's."""
    import json

    from sweep.outputs import OUTCOME_COLUMNS

    def job(parallel):
        cfg = compose_config(*tiny_universe_overrides(cache_dir), "experiment=original", "train.mode=eval",
                             "sample_size=6", "max_steps=100", "execution.workers=1",
                             f"execution.parallel={parallel}", "execution.kernels=exact", "progress=false")
        out = tmp_path / str(parallel)
        run(cfg, out)
        rows = pd.read_csv(out / "single_example_results.csv").sort_values("example_index").reset_index(drop=True)
        return rows[OUTCOME_COLUMNS], json.loads((out / "training_summary.json").read_text())["execution"]

    engine_rows, execution = job(4)
    simple_rows, simple_execution = job(1)
    assert execution["parallel"] == 4 and execution["description"].startswith("batched engine K=4")
    assert simple_execution["description"].startswith("simple path")
    assert (engine_rows["skipped_updates"] >= 1).any()
    pd.testing.assert_frame_equal(engine_rows, simple_rows)
