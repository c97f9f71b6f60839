"""The batched engine in train mode: BatchNorm normalises each copy's own image and moves the running
statistics of each copy's own, exactly as one example's step does; a model that draws random numbers
in its forward (dropout) keeps the simple path, with the reason."""

import pytest
import timm
import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from sweep.config import ModelMode, Precision, TrainConfig
from sweep.training.engine import BatchedTrainer, batched_engine
from sweep.training.exact_copies import BatchNormLayouts, ExactCopies
from sweep.training.loop import SingleExampleTrainer
from sweep.training.probe import Probe

SIZE = (3, 48, 48)  # at 32 px train mode's BatchNorm would see 1x1 maps


def _layout(memory_format):
    return torch.channels_last if memory_format == "channels_last" else torch.contiguous_format


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
def test_batch_norm_of_the_copies_is_each_examples_own(training, memory_format):
    """Output, gradients and moved running statistics of K copies equal each example's, bit for bit,
    in the memory format one example's call has (recorded)."""
    layout = _layout(memory_format)
    k, c = 3, 16
    generator = torch.Generator().manual_seed(0)
    x, out_grad = (torch.randn(k, 1, c, 9, 7, generator=generator) * 3 + 1 for _ in range(2))
    weight, bias, mean = (torch.randn(k, c, generator=generator) for _ in range(3))
    var = torch.rand(k, c, generator=generator) + 0.5

    def one(x, weight, bias, mean, var, out_grad):
        x, weight, bias = (t.detach().clone().requires_grad_() for t in (x, weight, bias))
        with BatchNormLayouts() as recorder:
            y = F.batch_norm(x.contiguous(memory_format=layout), mean, var, weight, bias, training, 0.1, 1e-5)
        y.backward(out_grad.contiguous(memory_format=layout))
        return (x.grad, weight.grad, bias.grad), recorder.seen

    expected = [one(x[i], weight[i], bias[i], mean[i].clone(), var[i].clone(), out_grad[i]) for i in range(k)]
    layouts = expected[0][1]
    assert [tuple(seen) for seen in layouts] == [(layout, layout)]

    def copy(x, weight, bias, mean, var, out_grad):
        def loss(x, weight, bias):
            with ExactCopies("cpu", None, layouts):
                return (F.batch_norm(x, mean, var, weight, bias, training, 0.1, 1e-5) * out_grad).sum()
        return grad(loss, argnums=(0, 1, 2))(x, weight, bias)

    moved_mean, moved_var = mean.clone(), var.clone()
    got = vmap(copy)(x, weight, bias, moved_mean, moved_var, out_grad)
    for i, (gradients, _) in enumerate(expected):
        assert all(torch.equal(g[i], e) for g, e in zip(got, gradients, strict=True)), i
    mean_alone, var_alone = mean.clone(), var.clone()
    for i in range(k):
        F.batch_norm(x[i].contiguous(memory_format=layout), mean_alone[i], var_alone[i], weight[i], bias[i],
                     training, 0.1, 1e-5)
    assert torch.equal(moved_mean, mean_alone) and torch.equal(moved_var, var_alone)
    assert training != torch.equal(moved_mean, mean)  # train mode moves them, eval mode does not


def test_folding_a_channels_last_batch_of_one_gives_usual_strides():
    """torch's CPU BatchNorm backward miscomputes a channels_last input of one image whose batch
    stride is unusual (which `contiguous` leaves as it is); the copies are folded with the usual
    strides, so that the bias gradient is the output gradient's sum, as it must be."""
    from sweep.training.exact_copies import _fold
    k, c, h, w = 2, 8, 3, 3
    t = torch.randn(h, w, k, c).permute(2, 3, 0, 1).unsqueeze(1)  # (K, 1, C, H, W), channels innermost
    folded = _fold(t, torch.channels_last)
    assert torch.equal(folded.reshape(1, k, c, h, w).transpose(0, 1), t)
    assert folded.stride() == (k * c * h * w, 1, w * k * c, k * c)
    out_grad = torch.randn(1, k * c, h, w)
    folded.requires_grad_()
    weight, bias = torch.ones(k * c, requires_grad=True), torch.zeros(k * c, requires_grad=True)
    F.batch_norm(folded, None, None, weight, bias, True, 0.1, 1e-5).backward(out_grad)
    assert torch.allclose(bias.grad, out_grad.sum((0, 2, 3)), atol=1e-5)


def _mistakes(model, n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    xs = 3 * torch.randn(n, *SIZE, generator=generator)
    with torch.no_grad():
        model.eval()
        ys = [int(model(x[None]).argmin()) for x in xs]  # surely wrong: corrected in a few steps
    return xs, ys


@pytest.mark.slow  # fp16 on a CPU is slow (CI's slow line runs it); the default suite keeps the fold's exactness
@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
def test_train_mode_in_the_engine_is_the_simple_path_in_fp16_scaler(memory_format):
    """The original's arithmetic in train mode: each copy's status, steps, skipped updates, loss sum,
    distance travelled and probe (judged in eval mode on its own moved running statistics) equal the
    simple path's, bit for bit; slots are refilled (K=2, 3 examples)."""
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=5).to(memory_format=_layout(memory_format))
    xs, ys = _mistakes(model, 3, seed=2)
    probe_x, probe_y = _mistakes(model, 6, seed=1)
    probe = Probe.at_pretrained(model, probe_x, torch.tensor(probe_y))
    train = TrainConfig(mode=ModelMode.train, precision=Precision.fp16_scaler, check_final_state=False)
    simple = SingleExampleTrainer(model, train, 1e-3, 30, probe=probe)
    expected = [simple.fit(x[None], y) for x, y in zip(xs, ys, strict=True)]
    simple.reset()
    engine, why = batched_engine(model, train, 1e-3, 30, 2, SIZE, probe=probe)
    assert why is None and engine.training
    got = dict(engine.run((i, x, y, None) for i, (x, y) in enumerate(zip(xs, ys, strict=True))))
    assert len({o.steps_taken for o in expected}) > 1 and sum(o.skipped_updates for o in expected) > 0
    for i, want in enumerate(expected):
        assert (got[i].status, got[i].steps_taken, got[i].skipped_updates, got[i].loss_sum, got[i].weight_distance) \
            == (want.status, want.steps_taken, want.skipped_updates, want.loss_sum, want.weight_distance), i
        assert got[i].probe.columns() == want.probe.columns(), i
    assert any(o.probe.loss != probe.mean_loss_before for o in expected)  # moved statistics matter


def test_train_mode_in_fp32_agrees_with_the_simple_path():
    """In fp32 the copies' grouped convolutions round otherwise than one example's; train mode's
    BatchNorm of one image amplifies that, but outcomes stay within the kernels' tolerance."""
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=5)
    xs, ys = _mistakes(model, 6)
    train = TrainConfig(mode=ModelMode.train)
    simple = SingleExampleTrainer(model, train, 1e-3, 30)
    expected = [simple.fit(x[None], y) for x, y in zip(xs, ys, strict=True)]
    simple.reset()
    got = dict(BatchedTrainer(model, train, 1e-3, 30, 3).run((i, x, y, None) for i, (x, y) in
                                                              enumerate(zip(xs, ys, strict=True))))
    for i, want in enumerate(expected):
        assert (got[i].status, got[i].steps_taken) == (want.status, want.steps_taken), i
        assert got[i].loss_sum == pytest.approx(want.loss_sum, rel=1e-3), i


def test_a_model_whose_fp16_step_differs_from_one_examples_keeps_the_simple_path(monkeypatch):
    """The engine compares the copies' fp16 logits and gradients with one example's before any work;
    a model whose gradients differ in a last bit keeps the simple path, with the reason."""
    from sweep.training import exact_copies
    model = timm.create_model("test_resnet", num_classes=5)
    train = TrainConfig(mode=ModelMode.train, precision=Precision.fp16_scaler)
    assert batched_engine(model, train, 1e-3, 5, 2, SIZE)[1] is None
    vmapped = exact_copies.CopiesBatchNormBackward.vmap

    def off_by_a_bit(info, in_dims, *args):
        (gx, gw, gb), dims = vmapped(info, in_dims, *args)
        return (gx, torch.nextafter(gw, torch.full_like(gw, torch.inf)), gb), dims
    monkeypatch.setattr(exact_copies.CopiesBatchNormBackward, "vmap", staticmethod(off_by_a_bit))
    engine, why = batched_engine(model, train, 1e-3, 5, 2, SIZE)
    assert engine is None and why.startswith("train.precision=fp16_scaler: the copies' fp16 step of ResNet computes")


def test_a_model_with_dropout_in_train_mode_keeps_the_simple_path_with_the_reason():
    model = timm.create_model("test_resnet", num_classes=5, drop_rate=0.2)
    engine, why = batched_engine(model, TrainConfig(mode=ModelMode.train), 1e-3, 5, 2, SIZE)
    assert engine is None and why.startswith("train.mode=train: ResNet draws random numbers in its forward")
    engine, why = batched_engine(model, TrainConfig(), 1e-3, 5, 2, SIZE)  # eval mode: dropout is off
    assert engine is not None and why is None
