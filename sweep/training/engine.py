"""Batched engine: K independent copies of the pretrained model, each fine-tuned on its own example,
in one vmapped forward/backward per step (torch.func), with finished slots refilled from the queue.

Each copy follows exactly the loop of `sweep.training.loop` (same checks, same order, and optimizer
state of its own that starts fresh with each example), so per-example outcomes match the simple
path up to floating-point reduction order.
"""
from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from sweep.config import ModelMode, Optimizer, Precision, TrainConfig
from sweep.outputs import Status
from sweep.training.loop import Outcome, el2n_tensor, l2_norm, l2_norm_tensor, margin_tensor
from sweep.training.precision import autocast_context, cross_entropy
from sweep.training.probe import Probe, ProbeResult
from sweep.training.stacked_optimizer import StackedOptimizer, move_rows
from sweep.training.stopping import STOP_CODES, stop_codes


def longest_first(items: list, predicted_cost: Callable[[object], Optional[float]]) -> list:
    """Items by predicted cost, highest first, those without a prediction last in their given order.

    Fed to the engine in this order (longest processing time first), the copies still running when
    the queue runs dry are short ones, so few steps run with idle slots. The initial loss predicts
    steps to correct well (see the README); outcomes do not depend on order.
    """
    known = [item for item in items if _finite(predicted_cost(item))]
    unknown = [item for item in items if not _finite(predicted_cost(item))]
    return sorted(known, key=predicted_cost, reverse=True) + unknown


def compacted(active: list[int]) -> list[int]:
    """The slots' new order when only the `active` ones (ascending) are kept: slot j takes copy
    order[j]. Those within the first len(active) slots stay; the last ones fill the holes, so that as
    few copies as possible move."""
    n, kept = len(active), set(active)
    movers = iter(reversed([i for i in active if i >= n]))
    return [j if j in kept else next(movers) for j in range(n)]


def _finite(value: Optional[float]) -> bool:
    return value is not None and math.isfinite(value)


@dataclass
class _Slot:
    item: object
    y: int
    key: Optional[str]  # the example's path: its images of a budgeted probe
    baselines: tuple = ()  # at t = 0: the margin, the gradient norm and EL2N, as 0-d tensors on the device
    losses: Optional[list[float]] = None  # with log_steps


class _Copies:
    """K copies of the trainable parameters, one stacked tensor (K, ...) per parameter, stepped by one
    optimizer whose state is stacked the same way (each copy with the state a fresh optimizer of its
    own would have: its step counts and moments).

    Parameters the forward does not use (`used` False) get no gradient in the simple path and are
    never stepped, so weight decay leaves them alone here too. `stopped` holds each copy's weights as
    they were when its loop stopped: every copy is stepped (which copies stopped is known on the
    device only, until the next synchronisation), and one that stopped drifts on unseen until it is
    refilled. Dropping copies moves the kept ones to the front: `stacked` and `stopped` are views of
    the first `count` slots.
    """

    def __init__(self, pretrained: list[torch.Tensor], k: int, make: Callable[..., StackedOptimizer],
                 used: list[bool]):
        self.pretrained, self.used = pretrained, used
        self.slots = [p.unsqueeze(0).repeat(k, *([1] * p.dim())) for p in pretrained]
        self.stopped_slots = [s.clone() for s in self.slots]
        self.grads = [torch.zeros_like(s) for s in self._used(self.slots)]
        self.optimizer = make(self._used(self.slots), self.grads)
        self.stacked, self.stopped = self.slots, self.stopped_slots

    def _used(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        return [tensor for tensor, used in zip(tensors, self.used) if used]

    def reset(self, i: int) -> None:
        """Copy i back to the pretrained weights with a fresh optimizer state."""
        for stacked, p0 in zip(self.stacked, self.pretrained):
            stacked[i].copy_(p0)
        self.optimizer.reset(i)

    def keep(self, order: list[int]) -> None:
        """Keep len(order) copies: slot j takes copy order[j] (its parameters, stopped weights and
        optimizer state; moved only where j differs); the others are no longer computed."""
        moves = move_rows(order)
        if moves is not None:
            for tensor in self.slots + self.stopped_slots:
                tensor[moves[0]] = tensor[moves[1]]
        self.optimizer.keep(order)
        n = len(order)
        self.stacked, self.stopped = [s[:n] for s in self.slots], [s[:n] for s in self.stopped_slots]

    def record_stops(self, stopping: torch.Tensor) -> None:
        """Keep the current weights of the copies whose loops stop now (`stopping`: a bool per copy)."""
        for held, current in zip(self.stopped, self.stacked):
            torch.where(stopping.view(-1, *([1] * (current.dim() - 1))), current, held, out=held)

    def stopped_weights(self, i: int) -> list[torch.Tensor]:
        return [s[i] for s in self.stopped]

    def step(self, grads: list[torch.Tensor]) -> None:
        """One optimizer update of every copy with its slice of `grads`."""
        for buffer, g in zip(self.grads, self._used(grads)):
            buffer[:len(g)].copy_(g)
        self.optimizer.step()


class _Loops:
    """Every copy's loop state, on the device: step t, summed loss (float64, as Python's float sum
    of the simple path), whether it still runs, how it stopped, and what step 0 showed."""

    def __init__(self, k: int, device: torch.device):
        self.t = torch.zeros(k, dtype=torch.long, device=device)
        self.loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
        self.running = torch.ones(k, dtype=torch.bool, device=device)
        self.code = torch.zeros(k, dtype=torch.int8, device=device)
        self.final_loss = torch.zeros(k, dtype=torch.float32, device=device)
        self.initial_loss = torch.zeros(k, dtype=torch.float32, device=device)
        self.initial_prediction = torch.zeros(k, dtype=torch.long, device=device)

    def restart(self, i: int) -> None:
        self.t[i], self.loss_sum[i], self.running[i], self.code[i] = 0, 0.0, True, 0

    def keep(self, indices: list[int]) -> None:
        for name, value in vars(self).items():
            setattr(self, name, value[indices])

    def observe(self, losses: torch.Tensor, predictions: torch.Tensor, labels: torch.Tensor, max_steps: int,
                check_final_state: bool) -> torch.Tensor:
        """Apply one step's losses and predictions (the stopping rule, then the bookkeeping of the update
        every running loop takes); returns which loops stop at this step."""
        codes = stop_codes(losses, predictions, labels, self.t, max_steps, check_final_state)
        stopping = self.running & (codes != 0)
        self.code = torch.where(stopping, codes, self.code)
        self.final_loss = torch.where(stopping, losses, self.final_loss)
        self.running &= ~stopping
        self.loss_sum += torch.where(self.running, losses.double(), 0.0)
        self.t += self.running
        return stopping


class BatchedTrainer:
    """Runs many single-example fine-tunings at once; yields (item, Outcome) as each finishes.

    The stopping rule runs on the device; the host reads the loops' state every `sync_every` steps
    (default: 1 on a CPU; on a GPU SYNC_EVERY, or the most states a loop evaluates if fewer, so that
    the GPU does not wait for the host in between), hands out the loops that stopped and refills
    their slots. A loop that stopped between two reads is frozen: its weights where it stopped are
    kept (`_Copies.stopped`) and nothing it computes after counts, so outcomes do not depend on
    `sync_every`. With a probe, the copies found stopped at one read are judged together (one
    vmapped forward pass per batch of images on a GPU).
    """

    def __init__(self, model: nn.Module, train: TrainConfig, lr: float, max_steps: int, parallel: int,
                 log_steps: bool = False, probe: Optional[Probe] = None, sync_every: Optional[int] = None):
        self.model, self.train, self.lr, self.max_steps, self.parallel = model, train, lr, max_steps, parallel
        self.log_steps, self.probe = log_steps, probe  # the probe: evaluated with each copy's final weights
        self.model.eval()
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.pretrained = [p.detach().clone() for n, p in model.named_parameters() if p.requires_grad]
        self.device = self.pretrained[0].device
        self.sync_every = sync_every or (min(SYNC_EVERY, max_steps + 1) if self.device.type == "cuda" else 1)
        self.vmapped_probe = self.device.type == "cuda"  # on a CPU, one copy after another is as fast
        # shared by all copies and never updated: buffers (eval mode) and frozen parameters
        self.constants = {**{n: b.detach() for n, b in model.named_buffers()},
                          **{n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}}
        self.autocast = autocast_context(train.precision, self.device.type)
        self._step = vmap(grad_and_value(self._loss, has_aux=True), in_dims=(0, None, 0, 0))

    def unbatchable(self, input_size: tuple[int, ...]) -> Optional[str]:
        """Why vmap cannot run this model (an operation it cannot batch, such as `.item()` in a
        forward), found by one step of two copies on zero inputs of `input_size`; None if it can."""
        params = {n: p.unsqueeze(0).expand(2, *p.shape) for n, p in zip(self.names, self.pretrained)}
        try:
            self._step(params, self.constants, torch.zeros(2, *input_size, device=self.device),
                       torch.zeros(2, dtype=torch.long, device=self.device))
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

    def _optimizer(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> StackedOptimizer:
        return StackedOptimizer(params, grads, self.train.optimizer, self.lr, self.train.weight_decay,
                                self.train.momentum)

    def run(self, queue: Iterable[tuple[object, torch.Tensor, int, Optional[str]]],
            on_step: Optional[Callable[[int, float], None]] = None) -> Iterator[tuple[object, Outcome]]:
        """`queue` yields (item, x of shape (C, H, W), label, key: the example's path, which picks its
        images of a budgeted probe); items come back with their outcomes.
        `on_step(t, loss)` is called at every read of the loops' state, with the first slot's."""
        queue = iter(queue)
        initial = list(itertools.islice(queue, self.parallel))
        if not initial:
            return
        copies = _Copies(self.pretrained, len(initial), self._optimizer, self._used_parameters(initial[0][1]))
        loops = _Loops(len(initial), self.device)
        xs = torch.stack([x for _, x, _, _ in initial])
        ys = torch.tensor([y for _, _, y, _ in initial], device=self.device)
        slots: list[Optional[_Slot]] = [self._slot(item, y, key) for item, _, y, key in initial]
        fresh, window = set(range(len(slots))), []  # slots at their step 0; per step (losses, running)

        def refill(i: int) -> None:
            entry = next(queue, None)
            slots[i] = None
            if entry is not None:
                item, x, y, key = entry
                copies.reset(i)
                loops.restart(i)
                xs[i].copy_(x)
                ys[i] = y
                slots[i] = self._slot(item, y, key)
                fresh.add(i)

        while any(slots):
            active = [i for i, s in enumerate(slots) if s is not None]
            if len(active) < len(slots):  # queue exhausted: drop idle copies instead of computing them
                order = compacted(active)
                copies.keep(order)
                loops.keep(order)
                xs, ys, slots = xs[order], ys[order], [slots[i] for i in order]
                fresh = {order.index(i) for i in fresh}
            for _ in range(self.sync_every):
                grads, (losses, logits) = self._step(dict(zip(self.names, copies.stacked)), self.constants, xs, ys)
                grads = [grads[n] for n in self.names]
                predictions = logits.argmax(1)
                for i in fresh:  # step 0 of a new example: its baselines, kept on the device
                    loops.initial_loss[i], loops.initial_prediction[i] = losses[i], predictions[i]
                    slots[i].baselines = (margin_tensor(logits[i], slots[i].y), l2_norm_tensor([g[i] for g in grads]),
                                          el2n_tensor(logits[i], slots[i].y))
                fresh = set()
                if self.log_steps:
                    window.append((losses.detach(), loops.running.clone()))
                copies.record_stops(loops.observe(losses.detach(), predictions, ys, self.max_steps,
                                                  self.train.check_final_state))
                copies.step(grads)
            # one host synchronisation per `sync_every` steps: which loops stopped, and the progress
            running, t, last = torch.stack([loops.running.double(), loops.t.double(), losses.double()]).tolist()
            if on_step is not None:
                on_step(int(t[0]), last[0])
            if self.log_steps:
                self._log(slots, window)
            stopped = [i for i, still in enumerate(running) if not still]
            for i, outcome in zip(stopped, self._outcomes(copies, loops, slots, stopped)):
                yield slots[i].item, outcome
                refill(i)

    def _slot(self, item: object, y: int, key: Optional[str]) -> _Slot:
        return _Slot(item, y, key, losses=[] if self.log_steps else None)

    @staticmethod
    def _log(slots: list[Optional[_Slot]], window: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Append each loop's evaluated losses of the steps since the last read."""
        losses = torch.stack([loss for loss, _ in window]).T.tolist()
        evaluated = torch.stack([running for _, running in window]).T.tolist()
        for slot, slot_losses, slot_evaluated in zip(slots, losses, evaluated):
            slot.losses.extend(loss for loss, counted in zip(slot_losses, slot_evaluated) if counted)
        window.clear()

    def _outcomes(self, copies: _Copies, loops: _Loops, slots: list[_Slot], stopped: list[int]) -> list[Outcome]:
        """The outcomes of the loops in `stopped`, read from the device together."""
        if not stopped:
            return []
        index = torch.tensor(stopped, device=self.device)
        codes, t, initial_prediction = (v[index].tolist() for v in (loops.code, loops.t, loops.initial_prediction))
        floats = torch.stack([loops.loss_sum[index], loops.final_loss[index].double(),
                              loops.initial_loss[index].double()]).tolist()
        baselines = torch.stack([torch.stack(slots[i].baselines) for i in stopped]).tolist()
        distances = [self._distance(copies.stopped_weights(i)) for i in stopped]
        statuses = [STOP_CODES[code] for code in codes]
        probes = self._probes(copies, slots, [(i, steps) for i, steps, status in zip(stopped, t, statuses)
                                              if status != Status.DIVERGED])
        return [Outcome(status=statuses[n], loss_sum=floats[0][n], initial_loss=floats[2][n], final_loss=floats[1][n],
                        initial_prediction=initial_prediction[n], initial_margin=baselines[n][0],
                        initial_grad_norm=baselines[n][1], initial_el2n=baselines[n][2],
                        weight_distance=distances[n], steps_taken=t[n],
                        losses=slots[i].losses, probe=probes.get(i))
                for n, i in enumerate(stopped)]

    def _probes(self, copies: _Copies, slots: list[_Slot],
                stopped: list[tuple[int, int]]) -> dict[int, ProbeResult]:
        """The probe at the stopped weights of each (copy, updates) in `stopped`: one copy after
        another, or with `vmapped_probe` all of them in vmapped forward passes, each copy on its
        example's images."""
        if self.probe is None or not stopped:
            return {}
        if not self.vmapped_probe or len(stopped) == 1:
            return {i: self.probe.after(self._forward(copies.stopped_weights(i)), steps, slots[i].key)
                    for i, steps in stopped}
        tick = time.perf_counter()
        positions = [self.probe.positions(steps, slots[i].key) for i, steps in stopped]
        longest = max(len(p) for p in positions)
        padded = torch.stack([torch.cat([p, p[:1].expand(longest - len(p))]) for p in positions])  # cut off below
        index = torch.tensor([i for i, _ in stopped], device=self.device)
        weights = {name: s[index] for name, s in zip(self.names, copies.stopped)}
        forward = vmap(lambda w, batch: functional_call(self.model, {**w, **self.constants}, (batch,)))
        right, loss = self.probe.judge_many(lambda batches: forward(weights, batches), padded)
        seconds = (time.perf_counter() - tick) / len(stopped)
        return {i: self.probe.result(p, right[n, :len(p)], loss[n, :len(p)], seconds)
                for n, ((i, _), p) in enumerate(zip(stopped, positions))}

    def _forward(self, params: list[torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        """Logits of a batch at one copy's weights (the engine runs in eval mode)."""
        weights = {**dict(zip(self.names, params)), **self.constants}
        return lambda batch: functional_call(self.model, weights, (batch,))

    def _distance(self, params: list[torch.Tensor]) -> float:
        return l2_norm([p - p0 for p, p0 in zip(params, self.pretrained)])


SYNC_EVERY = 8  # steps between reads of the loops' state on a GPU: a stopped loop computes at most 7 more
MEMORY_SHARE = 0.8  # of the GPU memory free before the probe step


def copy_state_factor(train: TrainConfig) -> int:
    """What each copy holds per parameter, in parameter sizes: the parameters, their gradients, the
    weights where its last loop stopped, and the optimizer's state (Adam and AdamW: two moments; SGD:
    a momentum buffer if it has momentum)."""
    optimizer_state = 2 if train.optimizer in (Optimizer.adam, Optimizer.adamw) else int(train.momentum > 0)
    return 3 + optimizer_state


def engine_size(engine: BatchedTrainer, input_size: tuple[int, ...], todo: int,
                device: torch.device) -> tuple[int, Optional[str]]:
    """K for `execution.parallel=auto` on a GPU: the copies that fit into MEMORY_SHARE of the free
    memory, measured by a probe step of 2 copies (activations and gradients) plus each copy's
    parameters, gradient buffer, stopped weights and optimizer state; at most the examples to run.
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
    return max(1, min(copies_that_fit(MEMORY_SHARE * free, step, engine), todo)), None


def copies_that_fit(memory: float, step_bytes: float, engine: BatchedTrainer) -> int:
    """How many copies fit into `memory` bytes, each needing `step_bytes` for a step's activations
    and gradients plus what it holds (copy_state_factor)."""
    state = copy_state_factor(engine.train) * sum(p.numel() * p.element_size() for p in engine.pretrained)
    return int(memory // (step_bytes + state))


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
