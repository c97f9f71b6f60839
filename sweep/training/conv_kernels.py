"""Other kernels for the batched engine's convolutions: each formulation computes the K copies' 2-d
convolution (forward, and backward to input, weight and bias) from the copies stacked first.

vmap's own batching rule folds the K copies into the channels and runs one grouped convolution
(`grouped`, the exact setting: each copy sums as its own call does). The others sum in another order:
- `matmul`: the input's patches (unfold; a 1x1 convolution needs none) times each copy's weight as a
  batched matrix product, the input gradient folded back (col2im); depthwise layers as unfolded
  patches times the weights, summed over the window;
- `channels_last`: the grouped convolution on NHWC tensors;
- `cudnn_benchmark` (CUDA only): the grouped convolution with cuDNN choosing among its deterministic
  algorithms by timing them (its choice is kept for the rest of the process).
`ChosenConv` is F.conv2d whose vmap runs the named formulation; its backward is `ChosenConvBackward`,
batched the same way (the engine takes gradients inside vmap, so a backward is vmapped too).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import vjp

from sweep.training.exact_copies import OnceDifferentiable, batch_first

GROUPED, MATMUL, CHANNELS_LAST, CUDNN_BENCHMARK = "grouped", "matmul", "channels_last", "cudnn_benchmark"


@dataclass(frozen=True)
class ConvSpec:
    """A 2-d convolution's settings, as pairs."""
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int

    def call(self, x: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def candidates(device_type: str) -> tuple[str, ...]:
    """The formulations a device can run, vmap's own first."""
    return (GROUPED, MATMUL, CHANNELS_LAST) + ((CUDNN_BENCHMARK,) if device_type == "cuda" else ())


def _pointwise(spec: ConvSpec, kernel: tuple[int, ...]) -> bool:
    return kernel == (1, 1) and spec.padding == (0, 0)


def _depthwise(spec: ConvSpec, weight: torch.Tensor) -> bool:
    """One input and one output channel per group (K, C, 1, kh, kw)."""
    return weight.shape[2] == 1 and weight.shape[1] == spec.groups


def _columns(x: torch.Tensor, spec: ConvSpec, kernel: tuple[int, ...]) -> torch.Tensor:
    """(K, N, C, H, W) -> each output position's input patch: (K, N, C * kh * kw, L)."""
    k, n = x.shape[:2]
    if _pointwise(spec, kernel):
        sampled = x[..., ::spec.stride[0], ::spec.stride[1]]
        return sampled.reshape(k, n, x.shape[2], -1)
    cols = F.unfold(x.reshape(k * n, *x.shape[2:]), kernel, spec.dilation, spec.padding, spec.stride)
    return cols.view(k, n, *cols.shape[1:])


def _uncolumns(cols: torch.Tensor, spec: ConvSpec, kernel: tuple[int, ...], shape: torch.Size) -> torch.Tensor:
    """The adjoint of `_columns`: patch gradients (K, N, C * kh * kw, L) summed back onto the input's shape."""
    k, n, _, h, w = shape
    if _pointwise(spec, kernel):
        if spec.stride == (1, 1):
            return cols.reshape(shape)
        grad = cols.new_zeros(shape)
        sampled = grad[..., ::spec.stride[0], ::spec.stride[1]]
        sampled.copy_(cols.reshape(sampled.shape))
        return grad
    folded = F.fold(cols.reshape(k * n, *cols.shape[2:]), (h, w), kernel, spec.dilation, spec.padding, spec.stride)
    return folded.view(shape)


def _output_shape(x: torch.Tensor, weight: torch.Tensor, spec: ConvSpec) -> tuple[int, ...]:
    k, n, _, h, w = x.shape
    sizes = [(size + 2 * pad - dil * (kern - 1) - 1) // stride + 1 for size, pad, dil, kern, stride in
             zip((h, w), spec.padding, spec.dilation, weight.shape[-2:], spec.stride, strict=True)]
    return k, n, weight.shape[1], *sizes


def _accumulated(tensor: torch.Tensor) -> torch.Tensor:
    """fp16 and bf16 as fp32 (a product of scaled fp16 gradients can overflow where a convolution's
    fp32 accumulator does not); others as they are."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def matmul_forward(x, weight, bias, spec: ConvSpec) -> torch.Tensor:
    """(K, N, C, H, W), (K, O, C/g, kh, kw), (K, O) or None -> (K, N, O, Ho, Wo)."""
    kernel, g = tuple(weight.shape[-2:]), spec.groups
    cols = _columns(x, spec, kernel)
    k, n, _, positions = cols.shape
    if _depthwise(spec, weight):  # products summed in fp32 at least, as a convolution accumulates
        out = (_accumulated(cols).view(k, n, g, -1, positions) * _accumulated(weight).reshape(k, 1, g, -1, 1)).sum(3)
        out = out.to(x.dtype)
    else:
        out = torch.matmul(weight.reshape(k, 1, g, weight.shape[1] // g, -1), cols.view(k, n, g, -1, positions))
    out = out.reshape(_output_shape(x, weight, spec))
    return out if bias is None else out + bias.reshape(k, 1, -1, 1, 1)


def matmul_backward(grad, x, weight, spec: ConvSpec, input_grad: bool):
    """The gradients of `matmul_forward` with respect to x (None unless `input_grad`), weight and bias."""
    kernel, g = tuple(weight.shape[-2:]), spec.groups
    cols = _columns(x, spec, kernel)
    k, n, _, positions = cols.shape
    cols = cols.view(k, n, g, -1, positions)
    if _depthwise(spec, weight):
        grad_out = _accumulated(grad).reshape(k, n, g, 1, positions)
        grad_weight = (grad_out * _accumulated(cols)).sum((1, 4)).to(weight.dtype)
        grad_cols = (grad_out * _accumulated(weight).reshape(k, 1, g, -1, 1)).to(x.dtype) if input_grad else None
    else:
        grad_out = grad.reshape(k, n, g, -1, positions)
        grad_weight = torch.matmul(grad_out, cols.transpose(-1, -2)).sum(1)
        grad_cols = (torch.matmul(weight.reshape(k, 1, g, weight.shape[1] // g, -1).transpose(-1, -2), grad_out)
                     if input_grad else None)
    grad_x = _uncolumns(grad_cols.reshape(k, n, -1, positions), spec, kernel, x.shape) if input_grad else None
    return grad_x, grad_weight.reshape(weight.shape), grad.sum((1, 3, 4))


def _folded(x, weight, spec: ConvSpec, layout: torch.memory_format):
    """The K copies as one grouped convolution's input (N, K*C, H, W) and weight (K*O, C/g, kh, kw)."""
    k = x.shape[0]
    folded_x = x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:]).contiguous(memory_format=layout)
    folded_w = weight.reshape(-1, *weight.shape[2:]).contiguous(memory_format=layout)
    return folded_x, folded_w, ConvSpec(spec.stride, spec.padding, spec.dilation, spec.groups * k)


def _unfolded(out: torch.Tensor, k: int) -> torch.Tensor:
    """(N, K*O, Ho, Wo) in any layout -> (K, N, O, Ho, Wo), contiguous (the engine's fp16 step on a CPU
    computed wrong gradients from a channels_last view handed on to the next layer)."""
    return out.reshape(out.shape[0], k, -1, *out.shape[2:]).transpose(0, 1).contiguous()


def _algorithms(name: str) -> contextlib.AbstractContextManager:
    """With `cudnn_benchmark`, cuDNN picking among its deterministic algorithms by timing them."""
    if name != CUDNN_BENCHMARK:
        return contextlib.nullcontext()
    backends = torch.backends.cudnn
    return backends.flags(enabled=True, benchmark=True, deterministic=True, allow_tf32=backends.allow_tf32)


def _layout(name: str) -> torch.memory_format:
    return torch.channels_last if name == CHANNELS_LAST else torch.contiguous_format


def folded_forward(x, weight, bias, spec: ConvSpec, name: str) -> torch.Tensor:
    folded_x, folded_w, folded = _folded(x, weight, spec, _layout(name))
    with _algorithms(name):
        return _unfolded(folded.call(folded_x, folded_w, None if bias is None else bias.reshape(-1)), x.shape[0])


def folded_backward(grad, x, weight, spec: ConvSpec, input_grad: bool, name: str):
    k = x.shape[0]
    folded_x, folded_w, folded = _folded(x, weight, spec, _layout(name))
    folded_grad = grad.transpose(0, 1).reshape(grad.shape[1], -1, *grad.shape[3:])
    with _algorithms(name):
        grad_x, grad_w = _conv_vjp(folded, folded_x, folded_w, folded_grad.contiguous(memory_format=_layout(name)),
                                   input_grad)
    grad_x = _unfolded(grad_x, k) if input_grad else None
    return grad_x, grad_w.reshape(weight.shape), grad.sum((1, 3, 4))


def _conv_vjp(spec: ConvSpec, x, weight, grad, input_grad: bool):
    with torch.enable_grad():
        if input_grad:
            _, pull = vjp(spec.call, x, weight)
            return pull(grad)
        _, pull = vjp(lambda w: spec.call(x, w), weight)
        return None, pull(grad)[0]


def batched_forward(name: str, x, weight, bias, spec: ConvSpec) -> torch.Tensor:
    """The copies' convolution by formulation `name`, copies first."""
    return matmul_forward(x, weight, bias, spec) if name == MATMUL else folded_forward(x, weight, bias, spec, name)


def batched_backward(name: str, grad, x, weight, spec: ConvSpec, input_grad: bool):
    """(input gradient or None, weight gradient, bias gradient) of `batched_forward`."""
    if name == MATMUL:
        return matmul_backward(grad, x, weight, spec, input_grad)
    return folded_backward(grad, x, weight, spec, input_grad, name)


class ChosenConv(torch.autograd.Function):
    """F.conv2d, whose vmap runs formulation `name`."""

    @staticmethod
    def forward(x, weight, bias, spec: ConvSpec, name: str):
        return spec.call(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, ctx.spec, ctx.name = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        input_grad = ctx.needs_input_grad[0]
        grad_x, grad_w, grad_b = ChosenConvBackward.apply(grad, x, weight, ctx.spec, ctx.name, input_grad)
        return grad_x if input_grad else None, grad_w, grad_b if ctx.has_bias else None, None, None

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, spec: ConvSpec, name: str):
        k = info.batch_size
        stacked_bias = None if bias is None else batch_first(bias, in_dims[2], k)
        return batched_forward(name, batch_first(x, in_dims[0], k), batch_first(weight, in_dims[1], k),
                               stacked_bias, spec), 0


class ChosenConvBackward(OnceDifferentiable):
    """ChosenConv's gradients (the input's a zero placeholder unless `input_grad`), batched by its formulation."""

    @staticmethod
    def forward(grad, x, weight, spec: ConvSpec, name: str, input_grad: bool):
        grad_x, grad_w = _conv_vjp(spec, x, weight, grad, input_grad)
        return (grad_x if input_grad else x.new_zeros(()).expand(x.shape)), grad_w, grad.sum((0, 2, 3))

    @staticmethod
    def vmap(info, in_dims, grad, x, weight, spec: ConvSpec, name: str, input_grad: bool):
        k = info.batch_size
        stacked_x = batch_first(x, in_dims[1], k)
        grad_x, grad_w, grad_b = batched_backward(name, batch_first(grad, in_dims[0], k), stacked_x,
                                                  batch_first(weight, in_dims[2], k), spec, input_grad)
        if grad_x is None:
            grad_x = stacked_x.new_zeros(()).expand(stacked_x.shape)
        return (grad_x, grad_w, grad_b), (0, 0, 0)
