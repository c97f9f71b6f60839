"""fp16 autocast for the batched engine's copies, computing each copy as one example's forward does.

Three things part a vmapped fp16 step from one example's, each found by comparing them:
- vmap's batching rule runs a convolution below autocast, so inside `torch.autocast` a vmapped
  convolution computes in fp32 where one example's computes in fp16;
- vmap's rule for BatchNorm's backward refuses fp16 activations with fp32 weights;
- a linear layer with a weight per copy becomes one batched matrix product, which sums in another
  order than one example's.
`ExactCopies` mends each while it is active: the operations autocast runs in fp16 get their inputs in
fp16 before vmap batches them (the grouped fp16 convolution then computes each copy as its own call
does); eval-mode BatchNorm is one call of torch's kernel with the copies folded into the channels
(each channel is normalised on its own); and a linear layer is one call per copy. Each backward is
torch's own derivative of the same call (`torch.func.vjp`), batched the same way. The engine checks
that the copies' logits equal one example's before it trusts this for a model
(`BatchedTrainer.unbatchable`).
"""
from __future__ import annotations

import inspect

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


class ExactCopies(TorchFunctionMode):
    """While active, vmapped copies of a model compute in `dtype` as one example does under autocast."""

    def __init__(self, device_type: str, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype
        self.lower = LOWER_PRECISION | (LOWER_PRECISION_CUDA if device_type == "cuda" else set())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            call = _BATCH_NORM.bind(*args, **kwargs)
            call.apply_defaults()
            a = call.arguments
            if not a["training"] and a["weight"] is not None and a["bias"] is not None:
                return EvalBatchNorm.apply(a["input"], a["weight"], a["bias"], a["running_mean"], a["running_var"],
                                           a["eps"])
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


def batch_first(tensor, dim, k):
    """A vmapped tensor with its copies first (K, ...), an unbatched one repeated K times as a view."""
    return tensor.movedim(dim, 0) if dim is not None else tensor.unsqueeze(0).expand(k, *tensor.shape)


def _copy(tensor, dim, i):
    return tensor if tensor is None or dim is None else tensor.select(dim, i)


def _per_channel(tensors, dims, k):
    """Each copy's per-channel tensor side by side: (K*C,)."""
    return [batch_first(t, d, k).reshape(-1) for t, d in zip(tensors, dims, strict=True)]


def _fold(t):
    """(K, N, C, ...) -> (N, K*C, ...)."""
    return t.transpose(0, 1).reshape(t.shape[1], t.shape[0] * t.shape[2], *t.shape[3:])


def _unfold(t, k):
    """(N, K*C, ...) -> (K, N, C, ...)."""
    return t.reshape(t.shape[0], k, -1, *t.shape[2:]).transpose(0, 1)


def _eval_batch_norm(x, weight, bias, mean, var, eps):
    """What F.batch_norm computes in eval mode."""
    return torch.batch_norm(x, weight, bias, mean, var, False, 0.0, eps, torch.backends.cudnn.enabled)


class EvalBatchNorm(torch.autograd.Function):
    """F.batch_norm in eval mode, whose vmap folds the batched copies into the channels."""

    @staticmethod
    def forward(x, weight, bias, mean, var, eps):
        return _eval_batch_norm(x, weight, bias, mean, var, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:5])
        ctx.eps = inputs[5]

    @staticmethod
    def backward(ctx, grad):
        return *EvalBatchNormBackward.apply(grad, *ctx.saved_tensors, ctx.eps), None, None, None

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, mean, var, eps):
        k = info.batch_size
        folded = EvalBatchNorm.apply(_fold(batch_first(x, in_dims[0], k)),
                                     *_per_channel((weight, bias, mean, var), in_dims[1:5], k), eps)
        return _unfold(folded, k), 0


class OnceDifferentiable(torch.autograd.Function):
    """A backward's own computation: vmapped, never differentiated again."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("no second derivative")


class EvalBatchNormBackward(OnceDifferentiable):
    """The gradients of EvalBatchNorm with respect to its input, weight and bias (once differentiable)."""

    @staticmethod
    def forward(grad, x, weight, bias, mean, var, eps):
        with torch.enable_grad():
            _, pull = vjp(lambda x, weight, bias: _eval_batch_norm(x, weight, bias, mean, var, eps), x, weight, bias)
            return pull(grad)

    @staticmethod
    def vmap(info, in_dims, grad, x, weight, bias, mean, var, eps):
        k = info.batch_size
        gx, gw, gb = EvalBatchNormBackward.apply(_fold(batch_first(grad, in_dims[0], k)),
                                                 _fold(batch_first(x, in_dims[1], k)),
                                                 *_per_channel((weight, bias, mean, var), in_dims[2:6], k), eps)
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
