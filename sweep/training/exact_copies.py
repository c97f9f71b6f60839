"""The batched engine's copies computing as one example's forward does: BatchNorm in train mode, and
fp16 autocast.

In train mode, vmap's own BatchNorm rounds the copies' statistics otherwise than one example's
(a last bit in fp32) and cannot move running statistics of each copy's own.

Three things part a vmapped fp16 step from one example's, each found by comparing them:
- vmap's batching rule runs a convolution below autocast, so inside `torch.autocast` a vmapped
  convolution computes in fp32 where one example's computes in fp16;
- vmap's rule for BatchNorm's backward refuses fp16 activations with fp32 weights;
- a linear layer with a weight per copy becomes one batched matrix product, which sums in another
  order than one example's.

`ExactCopies` mends each while it is active: BatchNorm is one call of torch's kernel with the copies
folded into the channels (`CopiesBatchNorm`: each channel normalised on its own, summed in the
memory format one example's activations have, and in train mode each copy's running statistics
moved in place); in fp16 the operations autocast runs in fp16 get their inputs in fp16 before vmap
batches them (the grouped fp16 convolution then computes each copy as its own call does) and a
linear layer is one call per copy. Each backward is torch's own derivative of the same call
(`torch.func.vjp`), batched the same way. The engine checks that the copies' fp16 logits equal one
example's before it trusts this for a model (`BatchedTrainer.unbatchable`).
"""
from __future__ import annotations

import inspect
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch.func import vjp
from torch.overrides import TorchFunctionMode

# autocast's lower-precision operations on both CPUs and GPUs, as model code calls them, and on GPUs only
LOWER_PRECISION = {F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, F.linear,
                   F.prelu, F.scaled_dot_product_attention, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__,
                   torch.mm, torch.bmm, torch.addmm, torch.baddbmm, torch.addbmm}
LOWER_PRECISION_CUDA = {torch.einsum, torch.mv, torch.addmv, torch.addr, torch.chain_matmul, torch.linalg.multi_dot}
_BATCH_NORM = inspect.signature(F.batch_norm)


class BatchNormLayout(NamedTuple):
    """The memory formats a BatchNorm call's kernel sees in one example's step, in whose order it sums
    each channel: its input's, and its output gradient's."""
    input: torch.memory_format
    gradient: torch.memory_format


class ExactCopies(TorchFunctionMode):
    """While active, vmapped copies of a model compute as one example does: BatchNorm (in train mode
    on each copy's own statistics), and with a `dtype`, in it as under autocast (None: as they are).
    `layouts`: each BatchNorm call's in one example's step (`BatchNormLayouts`), in call order."""

    def __init__(self, device_type: str, dtype: Optional[torch.dtype], layouts: list[BatchNormLayout]):
        super().__init__()
        self.dtype, self.layouts, self.calls = dtype, layouts, 0
        self.lower = set() if dtype is None else \
            LOWER_PRECISION | (LOWER_PRECISION_CUDA if device_type == "cuda" else set())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            a = _batch_norm_arguments(args, kwargs)
            if a["weight"] is None or a["bias"] is None:
                raise RuntimeError("a BatchNorm without weight or bias")
            if self.calls >= len(self.layouts):
                raise RuntimeError("the copies' forward calls BatchNorm more often than one example's")
            self.calls += 1
            return CopiesBatchNorm.apply(a["input"], a["weight"], a["bias"], a["running_mean"], a["running_var"],
                                         a["training"], a["momentum"], a["eps"], self.layouts[self.calls - 1])
        if func in self.lower:
            args, kwargs = [self._cast(a) for a in args], {k: self._cast(v) for k, v in kwargs.items()}
            if func is F.linear:
                return PerCopyLinear.apply(*args, *kwargs.values())
        return func(*args, **kwargs)

    def _cast(self, value):
        """As autocast casts: floating-point tensors but float64 ones."""
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float64:
            return value.to(self.dtype)
        if isinstance(value, (list, tuple)):
            return type(value)(self._cast(v) for v in value)
        return value


class BatchNormLayouts(TorchFunctionMode):
    """While active (around one example's forward), records each BatchNorm call's `BatchNormLayout`
    in `seen`; the gradient's once the backward has run."""

    def __init__(self):
        super().__init__()
        self.seen: list[BatchNormLayout] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.batch_norm:
            self.seen.append(BatchNormLayout(memory_format(_batch_norm_arguments(args, kwargs)["input"]),
                                             torch.contiguous_format))
            out = _GradientLayout.apply(out, self.seen, len(self.seen) - 1)
        return out


class _GradientLayout(torch.autograd.Function):
    """The identity (a copy), whose backward records the gradient's memory format in seen[index]."""

    @staticmethod
    def forward(ctx, x, seen, index):
        ctx.seen, ctx.index = seen, index
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        ctx.seen[ctx.index] = ctx.seen[ctx.index]._replace(gradient=memory_format(grad))
        return grad, None, None


def memory_format(t: torch.Tensor) -> torch.memory_format:
    """channels_last for a 4-d tensor laid out so (and not also contiguous), else contiguous_format."""
    channels_last = t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def _batch_norm_arguments(args, kwargs) -> dict:
    call = _BATCH_NORM.bind(*args, **kwargs)
    call.apply_defaults()
    return call.arguments


def batch_first(tensor, dim, k):
    """A vmapped tensor with its copies first (K, ...), an unbatched one repeated K times as a view."""
    return tensor.movedim(dim, 0) if dim is not None else tensor.unsqueeze(0).expand(k, *tensor.shape)


def _copy(tensor, dim, i):
    return tensor if tensor is None or dim is None else tensor.select(dim, i)


def _per_channel(tensors, dims, k):
    """Each copy's per-channel tensor side by side: (K*C,)."""
    return [batch_first(t, d, k).reshape(-1) for t, d in zip(tensors, dims, strict=True)]


def _fold(t, layout=torch.contiguous_format):
    """(K, N, C, ...) -> (N, K*C, ...), in memory format `layout` with its usual strides, as one
    example's tensors have them (torch's CPU BatchNorm backward miscomputes a channels_last input of
    one image whose batch stride is another, and `contiguous` leaves such a stride as it is)."""
    folded = t.transpose(0, 1).reshape(t.shape[1], t.shape[0] * t.shape[2], *t.shape[3:])
    if folded.dim() != 4 or folded.stride() == _strides(folded.shape, layout):
        return folded
    return folded.clone(memory_format=layout)


def _strides(shape, layout):
    """The strides of a dense (N, C, H, W) tensor in memory format `layout`."""
    n, c, h, w = shape
    return (c * h * w, 1, w * c, c) if layout == torch.channels_last else (c * h * w, h * w, w, 1)


def _unfold(t, k):
    """(N, K*C, ...) -> (K, N, C, ...)."""
    return t.reshape(t.shape[0], k, -1, *t.shape[2:]).transpose(0, 1)


def _batch_norm(x, weight, bias, mean, var, training, momentum, eps):
    """What F.batch_norm computes: in train mode normalised by the batch's statistics, the running
    ones (if any) moved towards them in place; in eval mode by the running ones."""
    return torch.batch_norm(x, weight, bias, mean, var, training, momentum, eps, torch.backends.cudnn.enabled)


class CopiesBatchNorm(torch.autograd.Function):
    """F.batch_norm, whose vmap folds the batched copies into the channels, in the memory formats of
    one example's call (`layout`: torch's kernels sum each channel in the order the formats give):
    each copy's channels are normalised on their own and, in train mode, move its own running
    statistics."""

    @staticmethod
    def forward(x, weight, bias, mean, var, training, momentum, eps, layout):
        return _batch_norm(x, weight, bias, mean, var, training, momentum, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, mean, var, training, _, eps, layout = inputs
        ctx.save_for_backward(x, weight, bias, *((None, None) if training else (mean, var)))
        ctx.training, ctx.eps, ctx.layout = training, eps, layout

    @staticmethod
    def backward(ctx, grad):
        gradients = CopiesBatchNormBackward.apply(grad, *ctx.saved_tensors, ctx.training, ctx.eps, ctx.layout)
        return *gradients, *[None] * 6

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, mean, var, training, momentum, eps, layout):
        k = info.batch_size
        running = [(s, d) for s, d in zip((mean, var), in_dims[3:5], strict=True) if s is not None]
        if training and any(d is None for _, d in running):
            raise RuntimeError("BatchNorm's running statistics in train mode are shared by the copies")
        stats = [batch_first(s, d, k).reshape(-1) for s, d in running] or [None, None]  # views where they can be
        folded = CopiesBatchNorm.apply(_fold(batch_first(x, in_dims[0], k), layout.input),
                                       *_per_channel((weight, bias), in_dims[1:3], k), *stats, training, momentum,
                                       eps, layout)
        if training:  # each copy's running statistics, moved
            for (held, d), moved in zip(running, stats, strict=True):
                batch_first(held, d, k).copy_(moved.view(k, -1))
        return _unfold(folded, k), 0


class OnceDifferentiable(torch.autograd.Function):
    """A backward's own computation: vmapped, never differentiated again."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("no second derivative")


class CopiesBatchNormBackward(OnceDifferentiable):
    """The gradients of CopiesBatchNorm with respect to its input, weight and bias (once
    differentiable): torch's own backward of the same call (in train mode recomputing the batch's
    statistics without moving the running ones)."""

    @staticmethod
    def forward(grad, x, weight, bias, mean, var, training, eps, layout):
        with torch.enable_grad():
            _, pull = vjp(lambda x, weight, bias: _batch_norm(x, weight, bias, mean, var, training, 0.0, eps),
                          x, weight, bias)
            return pull(grad)

    @staticmethod
    def vmap(info, in_dims, grad, x, weight, bias, mean, var, training, eps, layout):
        k = info.batch_size
        stats = [None if s is None else batch_first(s, d, k).reshape(-1)
                 for s, d in zip((mean, var), in_dims[4:6], strict=True)]
        gx, gw, gb = CopiesBatchNormBackward.apply(_fold(batch_first(grad, in_dims[0], k), layout.gradient),
                                                   _fold(batch_first(x, in_dims[1], k), layout.input),
                                                   *_per_channel((weight, bias), in_dims[2:4], k), *stats, training,
                                                   eps, layout)
        return (_unfold(gx, k), gw.reshape(k, -1), gb.reshape(k, -1)), (0, 0, 0)


class PerCopyLinear(torch.autograd.Function):
    """F.linear, whose vmap is one call per copy."""

    @staticmethod
    def forward(x, weight, bias=None):
        return F.linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias = (*inputs, None)[:3]
        ctx.save_for_backward(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias = ctx.saved_tensors
        grads = PerCopyLinearBackward.apply(grad, x, weight, bias)
        return grads if bias is not None else (*grads[:2], None)

    @staticmethod
    def vmap(info, in_dims, x, weight, bias=None):
        dims = (*in_dims, None)[:3]
        return torch.stack([PerCopyLinear.apply(*(_copy(t, d, i) for t, d in zip((x, weight, bias), dims,
                                                                                 strict=True)))
                            for i in range(info.batch_size)]), 0


class PerCopyLinearBackward(OnceDifferentiable):
    """The gradients of PerCopyLinear with respect to its input, weight and bias (once differentiable)."""

    @staticmethod
    def forward(grad, x, weight, bias):
        with torch.enable_grad():
            if bias is None:
                _, pull = vjp(F.linear, x, weight)
                return pull(grad)
            _, pull = vjp(F.linear, x, weight, bias)
            return pull(grad)

    @staticmethod
    def vmap(info, in_dims, grad, x, weight, bias):
        per_copy = [PerCopyLinearBackward.apply(*(_copy(t, d, i) for t, d in zip((grad, x, weight, bias), in_dims,
                                                                                 strict=True)))
                    for i in range(info.batch_size)]
        return tuple(torch.stack(g) for g in zip(*per_copy, strict=True)), tuple(0 for _ in per_copy[0])
