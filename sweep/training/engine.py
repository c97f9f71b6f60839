"""Batched engine: K independent copies of the pretrained model, each fine-tuned on its own example,
in one vmapped forward/backward per step (torch.func), with finished slots refilled from the queue.

Each copy follows exactly the loop of `sweep.training.loop` (same checks, same order, and optimizer
state of its own that starts fresh with each example; with train.precision=fp16_scaler, a loss
scaler of its own too; in train mode, BatchNorm running statistics of its own), so per-example
outcomes match the simple path up to floating-point reduction order (in fp16, bit for bit).
"""
from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.func import functional_call, grad, grad_and_value, vmap

from sweep.config import Kernels, ModelMode, Precision, TrainConfig
from sweep.models import eval_mode
from sweep.outputs import Status
from sweep.training.copies import Copies, Loops, Slot, compacted, repeated
from sweep.training.exact_copies import BatchNormLayout, BatchNormLayouts, ExactCopies, memory_format
from sweep.training.kernel_choice import (
    FP16_ACCURACY,
    MODEL_STRAY,
    ChosenKernels,
    ConvLayer,
    KernelCache,
    KernelChoice,
    choose_kernels,
    conv_layers,
)
from sweep.training.loop import Outcome, el2n_tensor, l2_norm, l2_norm_tensor, margin_tensor
from sweep.training.precision import autocast_context
from sweep.training.probe import Probe, ProbeResult
from sweep.training.scalers import LossScalers
from sweep.training.stacked_optimizer import StackedOptimizer
from sweep.training.stopping import STOP_CODES
from sweep.verdicts import cross_entropy


class BatchedTrainer:
    """Runs many single-example fine-tunings at once; yields (item, Outcome) as each finishes.

    The stopping rule runs on the device; the host reads the loops' state every `sync_every` steps
    (default: 1 on a CPU; on a GPU SYNC_EVERY, or the most states a loop evaluates if fewer, so that
    the GPU does not wait for the host in between), hands out the loops that stopped and refills
    their slots. A loop that stopped between two reads is frozen: its weights where it stopped are
    kept (`Copies.stopped`) and nothing it computes after counts, so outcomes do not depend on
    `sync_every`. With a probe, the copies found stopped at one read are judged together (one
    vmapped forward pass per batch of images on a GPU).
    """

    def __init__(self, model: nn.Module, train: TrainConfig, lr: float, max_steps: int, parallel: int,
                 log_steps: bool = False, probe: Optional[Probe] = None, sync_every: Optional[int] = None):
        self.model, self.train, self.lr, self.max_steps, self.parallel = model, train, lr, max_steps, parallel
        self.log_steps, self.probe = log_steps, probe  # the probe: evaluated with each copy's final weights
        self.training = train.mode == ModelMode.train
        self.model.train(self.training)
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.pretrained = [p.detach().clone() for n, p in model.named_parameters() if p.requires_grad]
        self.device = self.pretrained[0].device
        self.sync_every = sync_every or (min(SYNC_EVERY, max_steps + 1) if self.device.type == "cuda" else 1)
        self.vmapped_probe = self.device.type == "cuda"  # on a CPU, one copy after another is as fast
        # in train mode each copy's own buffers (BatchNorm's running statistics, moved by every forward)
        buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        self.states = buffers if self.training else {}
        # shared by all copies and never updated: frozen parameters, and buffers in eval mode
        self.constants = {**({} if self.training else buffers),
                          **{n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}}
        self.autocast = autocast_context(train.precision, self.device.type)
        self.scaled = train.precision == Precision.fp16_scaler  # a loss scaler per copy (sweep.training.scalers)
        self.kernels: Optional[KernelChoice] = None  # vmap's own convolutions until `use_kernels`
        self._routed: Optional[dict] = None  # the shapes routed to other formulations, when any is
        self._layouts: Optional[list[BatchNormLayout]] = None  # of one example's BatchNorm calls (`_record_layouts`)
        self._layouts_size: Optional[tuple[int, ...]] = None
        loss = self._scaled_loss if self.scaled else self._loss
        self._step = vmap(grad_and_value(loss, has_aux=True), in_dims=(0, 0, None, 0, 0, *[0] * self.scaled))

    def unbatchable(self, input_size: tuple[int, ...]) -> Optional[str]:
        """Why vmap cannot run this model (an operation it cannot batch, such as `.item()` in a
        forward), found by one step of two copies on zero inputs of `input_size`; None if it can."""
        params = self._two_copies()
        try:
            self._gradients(params, self._fresh_states(2), torch.zeros(2, *input_size, device=self.device),
                            torch.zeros(2, dtype=torch.long, device=self.device),
                            LossScalers(2, self.device) if self.scaled else None)
        except torch.cuda.OutOfMemoryError:
            return "out of GPU memory in a probe step of 2 copies"
        except RuntimeError as error:
            first = str(error).splitlines()[0]
            if "randomness" in first:  # vmap refuses random draws by default
                return (f"train.mode=train: {type(self.model).__name__} draws random numbers in its forward "
                        f"(dropout or drop path), and the copies cannot draw each example's masks as the simple "
                        f"path does")
            return f"vmap cannot batch {type(self.model).__name__} ({first})"
        if self.scaled:
            return self._fp16_differs(params, input_size)
        return None

    def _fp16_differs(self, params: dict, input_size: tuple[int, ...]) -> Optional[str]:
        """Why the copies' fp16 step differs from one example's under autocast (its logits or its
        unscaled gradients, on a seeded random input), or None when they are equal, bit for bit."""
        x = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0)).to(self.device)
        y = torch.zeros(2, dtype=torch.long, device=self.device)
        scalers = LossScalers(2, self.device)
        scalers.scale.fill_(FP16_CHECK_SCALE)
        grads, _, logits, _ = self._gradients(params, self._fresh_states(2), x, y, scalers)
        weights = self._leaves()
        with self.autocast():
            alone = functional_call(self.model, self._weights(weights), (x[:1],))
        loss = cross_entropy(alone, y[:1], self.train.precision) * FP16_CHECK_SCALE
        expected = torch.autograd.grad(loss, list(weights.values()), allow_unused=True)
        inverse = torch.tensor(1 / FP16_CHECK_SCALE, device=self.device)
        same = torch.equal(logits[0], alone.detach().float()[0]) and all(
            e is None or torch.equal(g[0], e * inverse) for g, e in zip(grads, expected, strict=True))
        if same:
            return None
        return (f"train.precision=fp16_scaler: the copies' fp16 step of {type(self.model).__name__} computes "
                f"otherwise than one example's (an operation vmap batches differently)")

    def conv_layers(self, input_size: tuple[int, ...]) -> dict[ConvLayer, int]:
        """The model's convolution shapes for one example of `input_size`, and how many layers have each."""
        return conv_layers(self.model, self._weights(), input_size, self.device)

    def _weights(self, params: Optional[dict] = None) -> dict[str, torch.Tensor]:
        """One model's parameters (the pretrained ones by default), states and constants, for one
        forward of its own (the states fresh: a forward in train mode moves them)."""
        params = dict(zip(self.names, self.pretrained, strict=True)) if params is None else params
        return {**params, **self._state_clones(), **self.constants}

    def _fresh_states(self, k: int) -> dict[str, torch.Tensor]:
        """K copies of the pretrained states, stacked (K, ...)."""
        return {n: repeated(s, k) for n, s in self.states.items()}

    def _state_clones(self) -> dict[str, torch.Tensor]:
        """One model's pretrained states, fresh: a forward in train mode moves them."""
        return {n: s.clone() for n, s in self.states.items()}

    def _two_copies(self) -> dict[str, torch.Tensor]:
        """The pretrained parameters as two stacked copies (views), for the checks' steps."""
        return {n: p.unsqueeze(0).expand(2, *p.shape) for n, p in zip(self.names, self.pretrained, strict=True)}

    def _leaves(self) -> dict[str, torch.Tensor]:
        """The pretrained parameters as autograd leaves, for one example's backward."""
        return {n: p.detach().requires_grad_() for n, p in zip(self.names, self.pretrained, strict=True)}

    @property
    def dtype(self) -> torch.dtype:
        """What the copies' convolutions compute in."""
        return torch.float16 if self.scaled else torch.float32

    def choose_kernels(self, setting: Kernels, input_size: tuple[int, ...], cache: Optional[Path],
                       threads: int) -> KernelChoice:
        """The convolution formulations for `setting` at this engine's K, put to use (`use_kernels`);
        timings kept under `cache` (None: not kept) for a process of `threads` torch threads."""
        store = KernelCache(cache, self.device, self.dtype, self.parallel, threads) if cache is not None else None
        layers = self.conv_layers(input_size)
        return self.use_kernels(choose_kernels(setting, layers, self.parallel, self.device, self.dtype, store),
                                input_size)

    def use_kernels(self, choice: KernelChoice, input_size: tuple[int, ...]) -> KernelChoice:
        """Run each convolution on its formulation in `choice` from now on (after `unbatchable`, whose
        fp16 check compares vmap's own convolutions with one example's), unless a step of two copies
        on a seeded random input shows them computing worse than vmap's own convolutions: in fp32,
        gradients further from vmap's own than rounding (MODEL_STRAY, relative to each tensor's
        largest); in fp16, whose own rounding moves a deep model's gradients by several percent,
        gradients further from one example's fp32 gradients than FP16_ACCURACY times vmap's own are.
        Then vmap's own are used, and the choice returned says why."""
        if choice.differs():
            params = self._two_copies()
            x = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0)).to(self.device)
            y = torch.zeros(2, dtype=torch.long, device=self.device)
            scalers = LossScalers(2, self.device) if self.scaled else None
            expected, _, _, overflowed = self._gradients(params, self._fresh_states(2), x, y, scalers)
            while overflowed is not None and bool(overflowed.any()) and float(scalers.scale.min()) > 1:
                scalers.scale.mul_(0.5)  # backed off as a loss scaler does, to a scale at which nothing overflows
                expected, _, _, overflowed = self._gradients(params, self._fresh_states(2), x, y, scalers)
            self._set_kernels(choice)
            got, _, _, _ = self._gradients(params, self._fresh_states(2), x, y, scalers)
            why = self._less_accurate(got, expected, params, x, y)
            if why is not None:
                choice = choice.refused(f"the chosen kernels' gradients of {type(self.model).__name__} {why}")
        self._set_kernels(choice)
        return choice

    def _set_kernels(self, choice: KernelChoice) -> None:
        self.kernels, self._routed = choice, choice.chosen if choice.differs() else None

    def _less_accurate(self, got: list[torch.Tensor], expected: list[torch.Tensor], params: dict, x: torch.Tensor,
                       y: torch.Tensor) -> Optional[str]:
        """How the chosen kernels' gradients `got` compute worse than vmap's own `expected`, or None."""
        if not self.scaled:
            stray = max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))
                        for a, b in zip(got, expected, strict=True))
            return None if stray <= MODEL_STRAY else f"strayed {stray:.1e} from vmap's own, relative"
        weights = {n: p[0] for n, p in params.items()}
        reference = [torch.stack(g) for g in zip(*(self._fp32_gradients(weights, x[i], y[i]) for i in range(2)),
                                                 strict=True)]
        own, chosen = _relative_error(expected, reference), _relative_error(got, reference)
        if chosen <= FP16_ACCURACY * own + 1e-3:
            return None
        return f"are {chosen:.1e} from fp32's, relative, vmap's own {own:.1e}"

    def _fp32_gradients(self, weights: dict, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """One example's gradients in fp32, without vmap."""
        def loss(trained):
            logits = functional_call(self.model, self._weights(trained), (x.unsqueeze(0),))
            return cross_entropy(logits, y.unsqueeze(0), Precision.fp32)
        grads = grad(loss)(weights)
        return [grads[n] for n in self.names]

    def _used_parameters(self, x: torch.Tensor) -> list[bool]:
        """Which trainable parameters the forward uses (the others get no gradient in the simple path)."""
        self._record_layouts(tuple(x.shape))
        params = self._leaves()
        loss, _ = self._loss(params, self._state_clones(), self.constants, x,
                             torch.zeros((), dtype=torch.long, device=x.device))
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        return [g is not None for g in grads]

    def _record_layouts(self, input_size: tuple[int, ...]) -> None:
        """The memory formats each BatchNorm call's kernel sees in one example's step on inputs of
        `input_size` (which `ExactCopies` folds the copies into), recorded once per input size when
        the copies need them."""
        if not (self.scaled or self.training) or self._layouts_size == input_size:
            return
        params = self._leaves()
        x = torch.zeros(1, *input_size, device=self.device)
        with BatchNormLayouts() as recorder:
            with self.autocast():
                logits = functional_call(self.model, self._weights(params), (x,))
            loss = cross_entropy(logits, torch.zeros(1, dtype=torch.long, device=self.device), self.train.precision)
        torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        self._layouts, self._layouts_size = recorder.seen, input_size

    def _loss(self, params: dict, states: dict, constants: dict, x: torch.Tensor, y: torch.Tensor):
        with self.autocast(), self._kernel_mode(), self._exact_copies():
            logits = functional_call(self.model, ({**params, **states, **constants}), (x.unsqueeze(0),))
        return cross_entropy(logits, y.unsqueeze(0), self.train.precision), logits.detach().float().squeeze(0)

    def _kernel_mode(self) -> contextlib.AbstractContextManager:
        """The chosen convolution formulations (inside ExactCopies' casts, which hand them fp16 inputs)."""
        return contextlib.nullcontext() if self._routed is None else ChosenKernels(self._routed)

    def _exact_copies(self) -> contextlib.AbstractContextManager:
        """What makes each vmapped copy compute as one example does: in train mode its own BatchNorm
        statistics, in fp16 autocast's casts."""
        if not (self.scaled or self.training):
            return contextlib.nullcontext()
        return ExactCopies(self.device.type, torch.float16 if self.scaled else None, self._layouts or [])

    def _scaled_loss(self, params: dict, states: dict, constants: dict, x: torch.Tensor, y: torch.Tensor,
                     scale: torch.Tensor):
        """The loss times the copy's loss scale (whose gradient is taken), and the loss itself."""
        loss, logits = self._loss(params, states, constants, x, y)
        return loss * scale, (loss.detach(), logits)

    def _gradients(self, weights: dict, states: dict, xs: torch.Tensor, ys: torch.Tensor,
                   scalers: Optional[LossScalers]):
        """One vmapped forward and backward of every copy (which moves its `states` in train mode):
        (gradients in `names` order, losses, logits, and with loss scalers whether each copy's gradient
        overflowed, else None). Scaled gradients come back unscaled, as GradScaler.unscale_ leaves them."""
        self._record_layouts(tuple(xs.shape[1:]))
        if scalers is None:
            grads, (losses, logits) = self._step(weights, states, self.constants, xs, ys)
            return [grads[n] for n in self.names], losses, logits, None
        grads, (_, (losses, logits)) = self._step(weights, states, self.constants, xs, ys, scalers.scale)
        grads = [grads[n] for n in self.names]
        return grads, losses, logits, scalers.unscale_(grads)

    def _optimizer(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> StackedOptimizer:
        """Each copy's optimizer: the simple path's (fused, or behind a loss scaler torch.optim's default)."""
        return StackedOptimizer(params, grads, self.train.optimizer, self.lr, self.train.weight_decay,
                                self.train.momentum, fused=not self.scaled)

    def run(self, queue: Iterable[tuple[object, torch.Tensor, int, Optional[str]]],
            on_step: Optional[Callable[[int, float], None]] = None) -> Iterator[tuple[object, Outcome]]:
        """`queue` yields (item, x (C, H, W), label, key: the example's path, for its probe images); items
        come back with their outcomes. `on_step(t, loss)`: at every read of the loops' state (slot 0's)."""
        queue = iter(queue)
        initial = list(itertools.islice(queue, self.parallel))
        if not initial:
            return
        copies = Copies(self.pretrained, len(initial), self._optimizer, self._used_parameters(initial[0][1]),
                        tuple(self.states.values()))
        loops = Loops(len(initial), self.device)
        scalers = LossScalers(len(initial), self.device) if self.scaled else None
        xs = torch.stack([x for _, x, _, _ in initial])
        ys = torch.tensor([y for _, _, y, _ in initial], device=self.device)
        slots: list[Optional[Slot]] = [self._slot(item, y, key) for item, _, y, key in initial]
        fresh, window = set(range(len(slots))), []  # slots at their step 0; per step (losses, running)

        def refill(i: int) -> None:
            entry = next(queue, None)
            slots[i] = None
            if entry is not None:
                item, x, y, key = entry
                copies.reset(i)
                loops.restart(i)
                if scalers is not None:
                    scalers.reset(i)
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
                if scalers is not None:
                    scalers.keep(order)
                xs, ys, slots = xs[order], ys[order], [slots[i] for i in order]
                fresh = {order.index(i) for i in fresh}
            for _ in range(self.sync_every):
                weights = dict(zip(self.names, copies.stacked, strict=True))
                states = dict(zip(self.states, copies.states, strict=True))
                grads, losses, logits, overflowed = self._gradients(weights, states, xs, ys, scalers)
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
                if scalers is None:
                    copies.step(grads)
                else:  # an overflowed update is skipped (and still counts as a step), the scale backs off
                    loops.count_skips(overflowed)
                    copies.step(grads, skip=overflowed)
                    scalers.update(overflowed)
            # one host synchronisation per `sync_every` steps: which loops stopped, and the progress
            running, t, last = torch.stack([loops.running.double(), loops.t.double(), losses.double()]).tolist()
            if on_step is not None:
                on_step(int(t[0]), last[0])
            if self.log_steps:
                self._log(slots, window)
            stopped = [i for i, still in enumerate(running) if not still]
            for i, outcome in zip(stopped, self._outcomes(copies, loops, slots, stopped), strict=True):
                yield slots[i].item, outcome
                refill(i)

    def _slot(self, item: object, y: int, key: Optional[str]) -> Slot:
        return Slot(item, y, key, losses=[] if self.log_steps else None)

    @staticmethod
    def _log(slots: list[Optional[Slot]], window: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Append each loop's evaluated losses of the steps since the last read."""
        losses = torch.stack([loss for loss, _ in window]).T.tolist()
        evaluated = torch.stack([running for _, running in window]).T.tolist()
        for slot, slot_losses, slot_evaluated in zip(slots, losses, evaluated, strict=True):
            slot.losses.extend(loss for loss, counted in zip(slot_losses, slot_evaluated, strict=True) if counted)
        window.clear()

    def _outcomes(self, copies: Copies, loops: Loops, slots: list[Slot], stopped: list[int]) -> list[Outcome]:
        """The outcomes of the loops in `stopped`, read from the device together."""
        if not stopped:
            return []
        index = torch.tensor(stopped, device=self.device)
        codes, t, initial_prediction, skipped = (v[index].tolist() for v in (loops.code, loops.t,
                                                                             loops.initial_prediction, loops.skipped))
        floats = torch.stack([loops.loss_sum[index], loops.final_loss[index].double(),
                              loops.initial_loss[index].double()]).tolist()
        baselines = torch.stack([torch.stack(slots[i].baselines) for i in stopped]).tolist()
        distances = [self._distance(copies.stopped_weights(i)) for i in stopped]
        statuses = [STOP_CODES[code] for code in codes]
        probes = self._probes(copies, slots, [(i, steps) for i, steps, status in zip(stopped, t, statuses, strict=True)
                                              if status != Status.DIVERGED])
        return [Outcome(status=statuses[n], loss_sum=floats[0][n], initial_loss=floats[2][n], final_loss=floats[1][n],
                        initial_prediction=initial_prediction[n], initial_margin=baselines[n][0],
                        initial_grad_norm=baselines[n][1], initial_el2n=baselines[n][2],
                        weight_distance=distances[n], steps_taken=t[n], skipped_updates=skipped[n],
                        losses=slots[i].losses, probe=probes.get(i))
                for n, i in enumerate(stopped)]

    def _probes(self, copies: Copies, slots: list[Slot],
                stopped: list[tuple[int, int]]) -> dict[int, ProbeResult]:
        """The probe at the stopped weights of each (copy, updates) in `stopped`: one copy after
        another, or with `vmapped_probe` all of them in vmapped forward passes, each copy on its
        example's images."""
        if self.probe is None or not stopped:
            return {}
        if not self.vmapped_probe or len(stopped) == 1:
            return {i: self.probe.after(self._forward(copies.stopped_weights(i), copies.stopped_state(i)), steps,
                                        slots[i].key)
                    for i, steps in stopped}
        tick = time.perf_counter()
        positions = [self.probe.positions(steps, slots[i].key) for i, steps in stopped]
        longest = max(len(p) for p in positions)
        padded = torch.stack([torch.cat([p, p[:1].expand(longest - len(p))]) for p in positions])  # cut off below
        index = torch.tensor([i for i, _ in stopped], device=self.device)
        held = zip([*self.names, *self.states], copies.stopped + copies.stopped_states, strict=True)
        weights = {name: s[index] for name, s in held}
        forward = vmap(lambda w, batch: functional_call(self.model, {**w, **self.constants}, (batch,)))

        def judged(batches: torch.Tensor) -> torch.Tensor:
            with eval_mode(self.model):
                return forward(weights, batches)
        right, loss = self.probe.judge_many(judged, padded)
        seconds = (time.perf_counter() - tick) / len(stopped)
        return {i: self.probe.result(p, right[n, :len(p)], loss[n, :len(p)], seconds)
                for n, ((i, _), p) in enumerate(zip(stopped, positions, strict=True))}

    def _forward(self, params: list[torch.Tensor],
                 states: list[torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        """Logits of a batch at one copy's weights (in the pretrained weights' memory formats, on which
        torch picks its kernels) and states, in eval mode (as the probe judges)."""
        laid_out = [p.contiguous(memory_format=memory_format(p0)) for p, p0 in zip(params, self.pretrained,
                                                                                  strict=True)]
        weights = {**dict(zip(self.names, laid_out, strict=True)), **dict(zip(self.states, states, strict=True)),
                   **self.constants}

        def forward(batch: torch.Tensor) -> torch.Tensor:
            with eval_mode(self.model):
                return functional_call(self.model, weights, (batch,))
        return forward

    def _distance(self, params: list[torch.Tensor]) -> float:
        return l2_norm([p - p0 for p, p0 in zip(params, self.pretrained, strict=True)])


def _relative_error(got: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """|got - reference| / |reference|, over all the tensors together."""
    difference = sum(float((a.double() - b.double()).square().sum()) for a, b in zip(got, reference, strict=True))
    return (difference / max(sum(float(b.double().square().sum()) for b in reference), 1e-300)) ** 0.5


FP16_CHECK_SCALE = 2.0 ** 10  # the loss scale of `_fp16_differs`'s step: moderate, for finite fp16 gradients
SYNC_EVERY = 8  # steps between reads of the loops' state on a GPU: a stopped loop computes at most 7 more
def batched_engine(model: nn.Module, train: TrainConfig, lr: float, max_steps: int, parallel: int,
                   input_size: tuple[int, ...], log_steps: bool = False,
                   probe: Optional[Probe] = None) -> tuple[Optional[BatchedTrainer], Optional[str]]:
    """(the engine, None) when it can reproduce the simple path for this setup, else (None, why not)."""
    if train.precision == Precision.bf16:  # measured on an H200: 4 of 12 examples off by one step
        return None, ("train.precision=bf16: the copies' batched bf16 products round otherwise than one "
                      "example's, so some examples would take other steps than on the simple path")
    engine = BatchedTrainer(model, train, lr, max_steps, parallel, log_steps, probe)
    obstacle = engine.unbatchable(input_size)
    return (None, obstacle) if obstacle else (engine, None)
