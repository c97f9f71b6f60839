"""Batched engine: K independent copies of the pretrained model, each fine-tuned on its own example,
in one vmapped forward/backward per step (torch.func), with finished slots refilled from the queue.

Each copy follows exactly the loop of `sweep.training.loop` (same checks, same order, and optimizer
state of its own that starts fresh with each example), so per-example outcomes match the simple
path up to floating-point reduction order.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from sweep.config import ModelMode, Optimizer, Precision, TrainConfig
from sweep.training.fused_optimizer import FusedOptimizer
from sweep.training.loop import Outcome, Trajectory, l2_norm
from sweep.training.precision import autocast_context, cross_entropy
from sweep.training.probe import Probe, ProbeResult


def longest_first(items: list, predicted_cost: Callable[[object], Optional[float]]) -> list:
    """Items by predicted cost, highest first, those without a prediction last in their given order.

    Fed to the engine in this order (longest processing time first), the copies still running when
    the queue runs dry are short ones, so few steps run with idle slots. The initial loss predicts
    steps to correct well (see the README); outcomes do not depend on order.
    """
    known = [item for item in items if _finite(predicted_cost(item))]
    unknown = [item for item in items if not _finite(predicted_cost(item))]
    return sorted(known, key=predicted_cost, reverse=True) + unknown


def _finite(value: Optional[float]) -> bool:
    return value is not None and math.isfinite(value)


@dataclass
class _Slot:
    item: object
    trajectory: Trajectory


class _Copies:
    """K copies of the trainable parameters, stacked, with one optimizer stepping all of them at once.

    Each copy's parameters are views into the stacked tensors, and the optimizer holds the views as
    separate parameters, so every copy has its own state (AdamW's step count, moments; SGD's
    momentum) exactly as if it had its own optimizer, yet a step is a single fused call. Gradients
    are views into stacked buffers that each step's vmapped gradients are copied into. Parameters
    the forward does not use (`used` False) get no gradient in the simple path and are never
    stepped, so weight decay leaves them alone here too.
    """

    def __init__(self, pretrained: list[torch.Tensor], k: int,
                 make: Callable[[list[torch.Tensor]], FusedOptimizer], used: list[bool]):
        self.pretrained, self.make, self.used = pretrained, make, used
        self._build([p.unsqueeze(0).repeat(k, *([1] * p.dim())) for p in pretrained], previous=None)
        for i in range(k):
            self.reset(i)

    def _build(self, stacked: list[torch.Tensor], previous: Optional[list[list[torch.Tensor]]]) -> None:
        self.stacked = stacked
        self.grads = [torch.zeros_like(s) for s in stacked]
        self.views = [[s[i] for s in stacked] for i in range(len(stacked[0]))]
        for i, copy_views in enumerate(self.views):
            for view, g in zip(copy_views, self.grads):
                view.grad = g[i]
        old = getattr(self, "optimizer", None)
        self.optimizer = self.make([v for copy_views in self.views for v in copy_views])
        if old is not None:  # carry each copy's optimizer state over to its new views
            for old_views, new_views in zip(previous, self.views):
                for o, n in zip(old_views, new_views):
                    if o in old.state:
                        self.optimizer.state[n] = old.state[o]

    def reset(self, i: int) -> None:
        """Copy i back to the pretrained weights with a fresh optimizer state."""
        for view, p0 in zip(self.views[i], self.pretrained):
            view.copy_(p0)
            self.optimizer.state.pop(view, None)

    def keep(self, indices: list[int]) -> None:
        """Drop every copy not in `indices` (in that order), keeping parameters and optimizer state."""
        self._build([s[indices] for s in self.stacked], previous=[self.views[i] for i in indices])

    def step(self, grads: list[torch.Tensor], stepping: list[bool]) -> None:
        """One optimizer update of the copies marked in `stepping` with their slices of `grads`."""
        for buffer, g in zip(self.grads, grads):
            buffer.copy_(g)
        self.optimizer.step([view for views, s in zip(self.views, stepping) if s
                             for view, used in zip(views, self.used) if used])


class BatchedTrainer:
    """Runs many single-example fine-tunings at once; yields (item, Outcome) as each finishes."""

    def __init__(self, model: nn.Module, train: TrainConfig, lr: float, max_steps: int, parallel: int,
                 log_steps: bool = False, probe: Optional[Probe] = None):
        self.model, self.train, self.lr, self.max_steps, self.parallel = model, train, lr, max_steps, parallel
        self.log_steps, self.probe = log_steps, probe  # the probe: evaluated with each copy's final weights
        self.model.eval()
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.pretrained = [p.detach().clone() for n, p in model.named_parameters() if p.requires_grad]
        # shared by all copies and never updated: buffers (eval mode) and frozen parameters
        self.constants = {**{n: b.detach() for n, b in model.named_buffers()},
                          **{n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}}
        self.autocast = autocast_context(train.precision, self.pretrained[0].device.type)
        self._step = vmap(grad_and_value(self._loss, has_aux=True), in_dims=(0, None, 0, 0))

    def unbatchable(self, input_size: tuple[int, ...]) -> Optional[str]:
        """Why vmap cannot run this model (an operation it cannot batch, such as `.item()` in a
        forward), found by one step of two copies on zero inputs of `input_size`; None if it can."""
        device = self.pretrained[0].device
        params = {n: p.unsqueeze(0).expand(2, *p.shape) for n, p in zip(self.names, self.pretrained)}
        try:
            self._step(params, self.constants, torch.zeros(2, *input_size, device=device),
                       torch.zeros(2, dtype=torch.long, device=device))
        except torch.cuda.OutOfMemoryError:
            return "out of GPU memory in a probe step of 2 copies"
        except RuntimeError as error:
            return f"vmap cannot batch {type(self.model).__name__} ({str(error).splitlines()[0]})"
        return None

    def _used_parameters(self, x: torch.Tensor) -> list[bool]:
        """Which trainable parameters the forward uses (the others get no gradient in the simple path)."""
        params = {n: p.detach().requires_grad_() for n, p in zip(self.names, self.pretrained)}
        loss, _ = self._loss(params, self.constants, x, torch.zeros((), dtype=torch.long, device=x.device))
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        return [g is not None for g in grads]

    def _loss(self, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor):
        with self.autocast():
            logits = functional_call(self.model, ({**params, **buffers}), (x.unsqueeze(0),))
        return cross_entropy(logits, y.unsqueeze(0), self.train.precision), logits.detach().float().squeeze(0)

    def _optimizer(self, params: list[torch.Tensor]) -> FusedOptimizer:
        return FusedOptimizer(params, self.train.optimizer, self.lr, self.train.weight_decay, self.train.momentum)

    def run(self, queue: Iterable[tuple[object, torch.Tensor, int]],
            on_step: Optional[Callable[[int, float], None]] = None) -> Iterator[tuple[object, Outcome]]:
        """`queue` yields (item, x of shape (C, H, W), label); items come back with their outcomes."""
        queue = iter(queue)
        initial = list(itertools.islice(queue, self.parallel))
        if not initial:
            return
        copies = _Copies(self.pretrained, len(initial), self._optimizer, self._used_parameters(initial[0][1]))
        xs = torch.stack([x for _, x, _ in initial])
        ys = torch.tensor([y for _, _, y in initial], device=xs.device)
        slots: list[Optional[_Slot]] = [_Slot(item, self._trajectory(y)) for item, _, y in initial]

        def refill(i: int) -> None:
            entry = next(queue, None)
            slots[i] = None
            if entry is not None:
                item, x, y = entry
                copies.reset(i)
                xs[i].copy_(x)
                ys[i] = y
                slots[i] = _Slot(item, self._trajectory(y))

        while any(slots):
            active = [i for i, s in enumerate(slots) if s is not None]
            if len(active) < len(slots):  # queue exhausted: drop idle copies instead of computing them
                copies.keep(active)
                xs, ys, slots = xs[active], ys[active], [slots[i] for i in active]
            grads, (losses, logits) = self._step(dict(zip(self.names, copies.stacked)), self.constants, xs, ys)
            grads = [grads[n] for n in self.names]
            # one host synchronisation per step: every copy's loss and prediction together
            loss_values, predictions = torch.stack([losses.detach(), logits.argmax(1).float()]).tolist()
            stepping = [False] * len(slots)
            for i, slot in enumerate(slots):
                loss_value, trajectory = loss_values[i], slot.trajectory
                status = trajectory.observe(loss_value, int(predictions[i]), lambda logits=logits, i=i: logits[i],
                                            lambda grads=grads, i=i: l2_norm([g[i] for g in grads]))
                if status is not None:
                    yield slot.item, trajectory.outcome(status, loss_value, self._distance(copies.views[i]),
                                                        self._probe(copies.views[i]))
                    refill(i)
                    continue
                trajectory.advance(loss_value)
                stepping[i] = True
                if on_step is not None:
                    on_step(trajectory.t, loss_value)
            if any(stepping):
                copies.step(grads, stepping)

    def _probe(self, params: list[torch.Tensor]) -> Optional[Callable[[], ProbeResult]]:
        """The probe, evaluated with one copy's weights (the engine runs in eval mode)."""
        if self.probe is None:
            return None
        weights = {**dict(zip(self.names, params)), **self.constants}
        return lambda: self.probe.after(lambda batch: functional_call(self.model, weights, (batch,)))

    def _trajectory(self, y: int) -> Trajectory:
        return Trajectory(y, self.max_steps, self.train.check_final_state, self.log_steps)

    def _distance(self, params: list[torch.Tensor]) -> float:
        return l2_norm([p - p0 for p, p0 in zip(params, self.pretrained)])


MAX_PARALLEL = 128
MEMORY_SHARE = 0.8  # of the GPU memory free before the probe


def copy_state_factor(train: TrainConfig) -> int:
    """What each copy holds per parameter, in parameter sizes: the parameters, their gradients and the
    optimizer's state (Adam and AdamW: two moments; SGD: a momentum buffer if it has momentum)."""
    optimizer_state = 2 if train.optimizer in (Optimizer.adam, Optimizer.adamw) else int(train.momentum > 0)
    return 2 + optimizer_state


def engine_size(engine: BatchedTrainer, input_size: tuple[int, ...], todo: int,
                device: torch.device) -> tuple[int, Optional[str]]:
    """K for `execution.parallel=auto` on a GPU: the copies that fit into MEMORY_SHARE of the free
    memory, measured by a probe step of 2 copies (activations and gradients) plus each copy's
    parameters, gradient buffer and optimizer state; at most MAX_PARALLEL and the examples to run.
    (Should a step still run out of memory, the executor halves K and goes on.)"""
    if device.type != "cuda":
        return 1, "the batched engine is chosen automatically on GPUs only"
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    obstacle = engine.unbatchable(input_size)
    if obstacle:
        return 1, obstacle
    step = (torch.cuda.max_memory_allocated(device) - before) / 2
    state = copy_state_factor(engine.train) * sum(p.numel() * p.element_size() for p in engine.pretrained)
    k = int(MEMORY_SHARE * free // (step + state))
    return max(1, min(k, MAX_PARALLEL, todo)), None


def batched_engine(model: nn.Module, train: TrainConfig, lr: float, max_steps: int, parallel: int,
                   input_size: tuple[int, ...], log_steps: bool = False,
                   probe: Optional[Probe] = None) -> tuple[Optional[BatchedTrainer], Optional[str]]:
    """(the engine, None) when it can reproduce the simple path for this setup, else (None, why not)."""
    if train.mode == ModelMode.train:
        return None, "train.mode=train: BatchNorm statistics and dropout differ per copy"
    if train.precision == Precision.fp16_scaler:
        return None, "train.precision=fp16_scaler: each example has a loss scaler of its own"
    engine = BatchedTrainer(model, train, lr, max_steps, parallel, log_steps, probe)
    obstacle = engine.unbatchable(input_size)
    return (None, obstacle) if obstacle else (engine, None)
