"""The batched engine's convolution formulations compute vmap's own convolution up to rounding; the
fastest is chosen by timing, cached, and the runs stay within the kernels' tolerance of exact ones."""
import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from helpers.configs import compose_config, tiny_universe_overrides
from sweep.config import Kernels, TrainConfig
from sweep.run.job import run
from sweep.tolerance import KERNELS, agreement
from sweep.training import kernel_choice
from sweep.training.conv_kernels import CHANNELS_LAST, GROUPED, MATMUL, ChosenConv, ConvSpec, candidates
from sweep.training.engine import BatchedTrainer
from sweep.training.kernel_choice import ChosenKernels, ConvLayer, KernelCache, choose_kernels

LAYERS = {  # per example: input (N, C, H, W), weight (O, C/g, kh, kw), stride, padding, dilation, groups
    "1x1": ((1, 8, 6, 6), (12, 8, 1, 1), 1, 0, 1, 1),
    "1x1 stride 2": ((1, 8, 7, 7), (12, 8, 1, 1), 2, 0, 1, 1),
    "3x3": ((1, 6, 7, 7), (5, 6, 3, 3), 1, 1, 1, 1),
    "3x3 stride 2, two images": ((2, 6, 8, 8), (5, 6, 3, 3), 2, 1, 1, 1),
    "7x7 stride 2 padding 3": ((1, 3, 16, 16), (4, 3, 7, 7), 2, 3, 1, 1),
    "depthwise 3x3 stride 2": ((1, 6, 9, 9), (6, 1, 3, 3), 2, 1, 1, 6),
    "depthwise 5x5 multiplier 2": ((1, 4, 9, 9), (8, 1, 5, 5), 1, 2, 1, 4),
    "grouped 3x3": ((1, 8, 6, 6), (6, 4, 3, 3), 1, 1, 1, 2),
    "dilated 3x3": ((1, 4, 9, 9), (4, 4, 3, 3), 1, 2, 2, 1),
    "3x3 rectangular padding": ((1, 4, 6, 9), (3, 4, 3, 3), (1, 2), (0, 1), 1, 1),
}
K = 3


def _gradients(layer, name, x, weight, bias, out_grad):
    """vmap of grad over K copies, as the engine takes it, by formulation `name` (grouped: vmap's own)."""
    def loss(x, weight, bias):
        out = layer.spec.call(x, weight, bias) if name == GROUPED else \
            ChosenConv.apply(x, weight, bias, layer.spec, name)
        return (out * out_grad).sum()
    return vmap(grad(loss, argnums=(0, 1, 2)), in_dims=(0, 0, 0))(x, weight, bias)


def _layer(shapes):
    x, w, stride, padding, dilation, groups = shapes
    pair = lambda v: (v, v) if isinstance(v, int) else v
    return ConvLayer(x, w, ConvSpec(pair(stride), pair(padding), pair(dilation), groups))


@pytest.mark.parametrize("name", [MATMUL, CHANNELS_LAST])
@pytest.mark.parametrize("shapes", LAYERS.values(), ids=LAYERS.keys())
def test_each_formulation_computes_the_convolution_and_its_gradients(shapes, name):
    layer = _layer(shapes)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(K, *layer.input, generator=generator, dtype=torch.float64)
    weight = torch.randn(K, *layer.weight, generator=generator, dtype=torch.float64)
    bias = torch.randn(K, layer.weight[0], generator=generator, dtype=torch.float64)
    with torch.no_grad():
        out = vmap(lambda x, w, b: layer.spec.call(x, w, b))(x, weight, bias)
        batched = vmap(lambda x, w, b: ChosenConv.apply(x, w, b, layer.spec, name))(x, weight, bias)
    torch.testing.assert_close(batched, out, rtol=1e-12, atol=1e-12)
    out_grad = torch.randn(out.shape, generator=generator, dtype=torch.float64)
    expected = _gradients(layer, GROUPED, x, weight, bias, out_grad)
    for got, want in zip(_gradients(layer, name, x, weight, bias, out_grad), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_outside_vmap_the_chosen_convolution_is_f_conv2d_with_its_gradients():
    layer = _layer(LAYERS["3x3 stride 2, two images"])
    x = torch.randn(layer.input, requires_grad=True)
    weight = torch.randn(layer.weight, requires_grad=True)
    out = ChosenConv.apply(x, weight, None, layer.spec, MATMUL)
    assert torch.equal(out, layer.spec.call(x, weight))
    got = torch.autograd.grad(out.square().sum(), (x, weight))
    want = torch.autograd.grad(layer.spec.call(x, weight).square().sum(), (x, weight))
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_the_mode_routes_only_the_chosen_layers():
    """Layers chosen `grouped`, or not chosen at all, and string padding keep vmap's own convolution."""
    layer = _layer(LAYERS["3x3"])
    calls = []
    original = ChosenConv.apply

    def counted(*args):
        calls.append(args[-1])
        return original(*args)

    x, w = torch.randn(K, *layer.input), torch.randn(K, *layer.weight)
    forward = vmap(lambda x, w: F.conv2d(x, w, None, 1, 1) + F.conv2d(x, w, padding="same")
                   + F.conv2d(x, w, None, 1, 1, 1, 1) * 0)
    try:
        ChosenConv.apply = counted
        with ChosenKernels({layer: MATMUL}):
            forward(x, w)
        with ChosenKernels({layer: GROUPED}):
            forward(x, w)
    finally:
        ChosenConv.apply = original
    assert calls == [MATMUL, MATMUL]  # the positional and the keyword-less call of the one chosen layer


def test_the_fastest_is_chosen_timed_once_and_then_read_from_the_cache(tmp_path, monkeypatch):
    layers = {_layer(LAYERS["1x1"]): 3, _layer(LAYERS["depthwise 3x3 stride 2"]): 1}
    cpu = torch.device("cpu")
    cache = KernelCache(tmp_path, cpu, torch.float32, 4, 1)
    choice = choose_kernels(Kernels.auto, layers, 4, cpu, torch.float32, cache)
    assert choice.timed == 2 and set(choice.chosen) == set(layers)
    for layer in layers:
        times = choice.timings[layer]["ms"]
        assert set(times) == set(candidates("cpu")) and all(t > 0 for t in times.values())
        assert choice.chosen[layer] == min(times, key=times.get)
    stored = json.loads(cache.path.read_text())
    assert set(stored) == {layer.key for layer in layers}

    def never(*args):
        raise AssertionError("timed again")
    monkeypatch.setattr(kernel_choice, "time_layer", never)
    again = choose_kernels(Kernels.auto, layers, 4, cpu, torch.float32, KernelCache(tmp_path, cpu, torch.float32, 4, 1))
    assert again.chosen == choice.chosen and again.timed == 0
    for k, threads in ((8, 1), (4, 2)):  # another K, or on a CPU another thread count, is another cache
        with pytest.raises(AssertionError, match="timed again"):
            choose_kernels(Kernels.auto, layers, k, cpu, torch.float32, KernelCache(tmp_path, cpu, torch.float32, k,
                                                                                   threads))
    ms = choice.ms_by_class()
    pointwise = _layer(LAYERS["1x1"])
    assert ms["1x1 conv"] == pytest.approx(3 * choice.timings[pointwise]["ms"][choice.chosen[pointwise]], abs=1e-3)
    assert choose_kernels(Kernels.exact, layers, 4, cpu, torch.float32, cache).chosen == dict.fromkeys(layers, GROUPED)
    assert not choose_kernels(Kernels.exact, layers, 4, cpu, torch.float32, cache).differs()
    forced = choose_kernels(Kernels.matmul, layers, 4, cpu, torch.float32, cache)
    assert forced.by_class() == {"1x1 conv": {MATMUL: 1}, "3x3 depthwise": {MATMUL: 1}}


def test_a_formulation_whose_gradients_stray_is_never_taken(monkeypatch):
    from sweep.training import conv_kernels
    wrong = conv_kernels.matmul_forward
    monkeypatch.setattr(conv_kernels, "matmul_forward", lambda *a: wrong(*a) * 1.01)
    timing = kernel_choice.time_layer(_layer(LAYERS["1x1 stride 2"]), 4, torch.device("cpu"), torch.float32)
    assert timing["ms"][MATMUL] is None and timing["ms"][GROUPED] > 0
    assert kernel_choice._fastest(timing) != MATMUL


@pytest.fixture(scope="module")
def exact_outcomes(mistakes):
    model, examples = mistakes
    engine = BatchedTrainer(model, TrainConfig(), 3e-5, 60, parallel=4)
    return dict(engine.run((i, x, y, None) for i, (x, y) in enumerate(examples)))


@pytest.mark.slow  # an exact engine run and one per setting (CI's slow line runs them)
@pytest.mark.parametrize("setting", [Kernels.matmul, Kernels.channels_last])
def test_the_engine_on_other_kernels_stays_within_the_tolerance(mistakes, exact_outcomes, setting):
    model, examples = mistakes
    engine = BatchedTrainer(model, TrainConfig(), 3e-5, 60, parallel=4)
    size = tuple(examples[0][0].shape)
    choice = engine.choose_kernels(setting, size, None, 1)
    assert choice.why is None and choice.differs()
    got = dict(engine.run((i, x, y, None) for i, (x, y) in enumerate(examples)))

    def table(outcomes):
        return pd.DataFrame([{"path": i, "status": o.status, "updates": o.steps_taken, "loss_sum": o.loss_sum}
                             for i, o in outcomes.items()])
    matched = agreement(table(got), table(exact_outcomes), KERNELS)
    assert matched.ok, matched.describe()
    assert table(got)["updates"].nunique() >= 3  # examples that take different steps
    assert any(got[i].loss_sum != exact_outcomes[i].loss_sum for i in got)  # another summation ran


@pytest.mark.slow  # three runs (CI's slow line runs it)
def test_a_run_records_its_kernels_and_stays_within_the_tolerance_of_exact(tmp_path, cache_dir):
    """`execution.kernels=auto` times the formulations (the summary says which each layer class runs)
    and the rows agree with `exact`'s within the kernels' tolerance, rho within 0.01."""
    def job(setting):
        cfg = compose_config(*tiny_universe_overrides(cache_dir), "sample_size=8", "lr=3e-5", "max_steps=60",
                             "execution.workers=1", "execution.parallel=4", f"execution.kernels={setting}",
                             "progress=false")
        summary = run(cfg, tmp_path / setting)
        return pd.read_csv(tmp_path / setting / "single_example_results.csv"), summary

    exact, exact_summary = job("exact")
    rows, summary = job("matmul")
    kernels = summary["execution"]["kernels"]
    assert kernels["setting"] == "matmul" and kernels["by_class"] and "kernels: matmul" in \
        summary["execution"]["description"]
    assert exact_summary["execution"]["kernels"]["by_class"] == {
        kind: {"grouped": sum(n.values())} for kind, n in kernels["by_class"].items()}
    matched = agreement(rows, exact, KERNELS)
    assert matched.ok, matched.describe()
    rho = "rho_loss_sum"
    assert abs(summary["statistics"][rho] - exact_summary["statistics"][rho]) < 0.01
    _, auto = job("auto")
    chosen = auto["execution"]["kernels"]
    assert chosen["setting"] == "auto" and all(shape["ms"] for shape in chosen["shapes"])
    assert all(shape["kernel"] == min((k for k, t in shape["ms"].items() if t), key=shape["ms"].get)
               for shape in chosen["shapes"])
    assert sum(shape["layers"] for shape in chosen["shapes"]) > len(chosen["shapes"])  # shapes repeat in a ResNet
    assert set(chosen["ms_by_class"]) == set(chosen["by_class"])


def test_kernels_whose_step_strays_are_refused_with_the_reason(mistakes, monkeypatch):
    """A whole model's step of two copies on the chosen kernels is checked against vmap's own
    convolutions before any example runs; one that strays (here a formulation off by 1%) is not used."""
    from sweep.training import conv_kernels
    model, examples = mistakes
    wrong = conv_kernels.matmul_forward
    monkeypatch.setattr(conv_kernels, "matmul_forward", lambda *a: wrong(*a) * 1.01)
    engine = BatchedTrainer(model, TrainConfig(), 3e-5, 60, parallel=4)
    size = tuple(examples[0][0].shape)
    choice = engine.choose_kernels(Kernels.matmul, size, None, 1)
    assert not choice.differs() and "strayed" in choice.why and "from vmap's own" in choice.why
    assert choice.describe().startswith("kernels: exact (the chosen kernels' gradients of ")
    assert choice.summary()["why"] == choice.why


@pytest.mark.slow  # two fp16 engines with fp32 references (CI's slow line runs it)
def test_in_fp16_kernels_are_judged_by_their_accuracy_against_fp32(mistakes, monkeypatch):
    """fp16's own rounding moves a model's gradients, so in fp16 the chosen kernels must be about as close
    to one example's fp32 gradients as vmap's own: unbatched matrix products are; a formulation off by
    5% is refused."""
    from sweep.config import Precision
    from sweep.training import conv_kernels
    model, examples = mistakes
    size = tuple(examples[0][0].shape)

    def choose():
        engine = BatchedTrainer(model, TrainConfig(precision=Precision.fp16_scaler), 3e-5, 60, parallel=4)
        return engine.choose_kernels(Kernels.matmul, size, None, 1)

    assert choose().why is None
    wrong = conv_kernels.matmul_backward
    monkeypatch.setattr(conv_kernels, "matmul_backward",
                        lambda *a: tuple(None if g is None else g * 1.05 for g in wrong(*a)))
    refused = choose()
    assert not refused.differs() and "from fp32's, relative, vmap's own" in refused.why


def test_in_fp16_auto_keeps_vmap_s_own_without_timing(monkeypatch):
    """Another order of summation moves steps in fp16 (benchmarks/README.md), so `auto` keeps vmap's own
    there, says why, and times nothing; in fp32 the fastest is taken."""
    layer = _layer(LAYERS["3x3"])
    assert kernel_choice._fastest({"ms": {GROUPED: 5.0, MATMUL: 1.0, CHANNELS_LAST: None}}) == MATMUL

    def never(*args):
        raise AssertionError("timed")
    monkeypatch.setattr(kernel_choice, "time_layer", never)
    choice = choose_kernels(Kernels.auto, {layer: 1}, 4, torch.device("cpu"), torch.float16, None)
    assert choice.chosen == {layer: GROUPED} and not choice.differs() and choice.timed == 0
    assert choice.why == kernel_choice.FP16_AUTO and choice.describe() == f"kernels: exact ({kernel_choice.FP16_AUTO})"


def test_when_vmap_s_own_convolution_fails_no_formulation_is_taken(monkeypatch):
    """Out of memory in vmap's own (say): nothing to compare the others with, so none is timed or taken."""
    layer_step = kernel_choice._layer_step

    def failing(layer, name):
        if name != GROUPED:
            return layer_step(layer, name)

        def step(*args):
            raise torch.cuda.OutOfMemoryError("simulated")
        return step

    monkeypatch.setattr(kernel_choice, "_layer_step", failing)
    timing = kernel_choice.time_layer(_layer(LAYERS["1x1"]), 4, torch.device("cpu"), torch.float32)
    assert timing == {"ms": dict.fromkeys(candidates("cpu"))}
    assert kernel_choice._fastest(timing) == GROUPED
