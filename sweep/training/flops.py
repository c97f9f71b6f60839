"""What a step costs: the FLOPs of one forward pass and of one update of a model, counted with torch's
FLOP counter at the run's input size, batch 1, once per architecture in a process.

torch's counter ignores `groups` in a convolution's backward pass (it counts a depthwise
convolution's weight gradient as a dense one: 32 GFLOP instead of about 2.3 for an update of
tf_efficientnet_lite0), so the backward formula is replaced by one that follows the forward's: the
input gradient and the weight gradient each cost what the forward convolution costs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from sweep.models import eval_mode

aten = torch.ops.aten


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                         _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """Each requested gradient (input, weight) of a convolution costs as much as its forward; the
    weight's shape already divides the input channels by the groups."""
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


@dataclass(frozen=True)
class StepCost:
    """FLOPs of one forward pass and of one update (forward and backward) of one example."""
    forward_flops: int
    update_flops: int

    def correction_flops(self, updates: int) -> int:
        """The work of an example's loop that took `updates` updates: each update, and the forward
        pass of the last state evaluated."""
        return updates * self.update_flops + self.forward_flops


_counted: dict[tuple, StepCost] = {}


def count_step(model: nn.Module, input_size: tuple[int, ...]) -> StepCost:
    """FLOPs of a forward pass and of an update of `model` on one image of `input_size`, in eval
    mode (the same operations as train mode). Counted on the meta device, so nothing is computed and
    the model is left untouched; on the model's own device for a model whose forward reads values.
    Counted once per architecture (its modules and parameter shapes) and input size in a process:
    the jobs of a sweep in one process share the count."""
    key = (tuple(input_size), tuple((name, type(module).__qualname__) for name, module in model.named_modules()),
           tuple((name, tuple(p.shape), p.requires_grad) for name, p in model.named_parameters()))
    if key not in _counted:
        try:
            _counted[key] = _count(model, input_size, torch.device("meta"))
        except (NotImplementedError, RuntimeError):
            _counted[key] = _count(model, input_size, next(model.parameters()).device)
    return _counted[key]


def _count(model: nn.Module, input_size: tuple[int, ...], device: torch.device) -> StepCost:
    def on_device(tensor: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(tensor, device=device) if device.type == "meta" else tensor.detach()

    params = {name: on_device(p).requires_grad_(p.requires_grad) for name, p in model.named_parameters()}
    buffers = {name: on_device(b) for name, b in model.named_buffers()}
    x = torch.zeros(1, *input_size, device=device)
    trainable = [p for p in params.values() if p.requires_grad]
    counter = FlopCounterMode(display=False, custom_mapping={aten.convolution_backward: _conv_backward_flops})
    with eval_mode(model):
        with counter, torch.no_grad():
            functional_call(model, {**params, **buffers}, (x,))
        forward = counter.get_total_flops()
        with counter:  # entering the counter again starts a new count
            loss = functional_call(model, {**params, **buffers}, (x,)).float().logsumexp(1).sum()
            torch.autograd.grad(loss, trainable, allow_unused=True)
        update = counter.get_total_flops()
    return StepCost(forward_flops=int(forward), update_flops=int(update))
