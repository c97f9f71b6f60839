"""The batched engine's state: K copies of the trainable parameters with their stacked optimizer, every
copy's loop state on the device, and what the host holds per slot. Dropping finished copies moves the
kept ones to the front (`compacted`)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch

from sweep.training.stacked_optimizer import StackedOptimizer, move_rows
from sweep.training.stopping import stop_codes


def compacted(active: list[int]) -> list[int]:
    """The slots' new order when only the `active` ones (ascending) are kept: slot j takes copy
    order[j]. Those within the first len(active) slots stay; the last ones fill the holes, so that as
    few copies as possible move."""
    n, kept = len(active), set(active)
    movers = iter(reversed([i for i in active if i >= n]))
    return [j if j in kept else next(movers) for j in range(n)]


@dataclass
class Slot:
    item: object
    y: int
    key: Optional[str]  # the example's path: its images of a budgeted probe
    baselines: tuple = ()  # at t = 0: the margin, the gradient norm and EL2N, as 0-d tensors on the device
    losses: Optional[list[float]] = None  # with log_steps


class Copies:
    """K copies of the trainable parameters, one stacked tensor (K, ...) per parameter, stepped by one
    optimizer whose state is stacked the same way (each copy with the state a fresh optimizer of its
    own would have: its step counts and moments).

    In train mode each copy has its own `states` too (BatchNorm's running statistics, which its
    forward passes move), held, reset and kept like its parameters but never stepped.

    Parameters the forward does not use (`used` False) get no gradient in the simple path and are
    never stepped, so weight decay leaves them alone here too. `stopped` holds each copy's weights as
    they were when its loop stopped: every copy is stepped (which copies stopped is known on the
    device only, until the next synchronisation), and one that stopped drifts on unseen until it is
    refilled. Dropping copies moves the kept ones to the front: `stacked`, `states` and their `stopped`
    ones are views of the first slots.
    """

    def __init__(self, pretrained: list[torch.Tensor], k: int, make: Callable[..., StackedOptimizer],
                 used: list[bool], states: tuple[torch.Tensor, ...] = ()):
        self.pretrained, self.used, self.initial_states = pretrained, used, states
        self.slots = [repeated(p, k) for p in pretrained]
        self.state_slots = [repeated(s, k) for s in states]
        self.stopped_slots = [s.clone() for s in self.slots]
        self.stopped_state_slots = [s.clone() for s in self.state_slots]
        self.grads = [torch.zeros_like(s) for s in self._used(self.slots)]
        self.optimizer = make(self._used(self.slots), self.grads)
        self._views(k)

    def _views(self, n: int) -> None:
        self.stacked, self.stopped = [s[:n] for s in self.slots], [s[:n] for s in self.stopped_slots]
        self.states, self.stopped_states = [s[:n] for s in self.state_slots], [s[:n] for s in self.stopped_state_slots]

    def _used(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        return [tensor for tensor, used in zip(tensors, self.used, strict=True) if used]

    def reset(self, i: int) -> None:
        """Copy i back to the pretrained weights and states with a fresh optimizer state."""
        for stacked, initial in zip(self.stacked + self.states, self.pretrained + list(self.initial_states),
                                    strict=True):
            stacked[i].copy_(initial)
        self.optimizer.reset(i)

    def keep(self, order: list[int]) -> None:
        """Keep len(order) copies: slot j takes copy order[j] (its parameters, states, stopped weights
        and optimizer state; moved only where j differs); the others are no longer computed."""
        moves = move_rows(order)
        if moves is not None:
            for tensor in self.slots + self.stopped_slots + self.state_slots + self.stopped_state_slots:
                tensor[moves[0]] = tensor[moves[1]]
        self.optimizer.keep(order)
        self._views(len(order))

    def record_stops(self, stopping: torch.Tensor) -> None:
        """Keep the current weights and states of the copies whose loops stop now (`stopping`: a bool
        per copy)."""
        for held, current in zip(self.stopped + self.stopped_states, self.stacked + self.states, strict=True):
            torch.where(stopping.view(-1, *([1] * (current.dim() - 1))), current, held, out=held)

    def stopped_weights(self, i: int) -> list[torch.Tensor]:
        return [s[i] for s in self.stopped]

    def stopped_state(self, i: int) -> list[torch.Tensor]:
        return [s[i] for s in self.stopped_states]

    def step(self, grads: list[torch.Tensor], skip: Optional[torch.Tensor] = None) -> None:
        """One optimizer update of every copy with its slice of `grads`, but those that `skip` (a bool per
        copy, read on the host) marks: a loss scaler skips their update."""
        for buffer, g in zip(self.grads, self._used(grads), strict=True):
            buffer[:len(g)].copy_(g)
        self.optimizer.step(None if skip is None else [i for i, skipped in enumerate(skip.tolist()) if not skipped])


def repeated(tensor: torch.Tensor, k: int) -> torch.Tensor:
    """K copies of `tensor`, stacked: (K, ...)."""
    return tensor.unsqueeze(0).repeat(k, *([1] * tensor.dim()))


class Loops:
    """Every copy's loop state, on the device: step t, summed loss (float64, as Python's float sum
    of the simple path), updates a loss scaler skipped, whether it still runs, how it stopped, and
    what step 0 showed."""

    def __init__(self, k: int, device: torch.device):
        self.t = torch.zeros(k, dtype=torch.long, device=device)
        self.skipped = torch.zeros(k, dtype=torch.long, device=device)
        self.loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
        self.running = torch.ones(k, dtype=torch.bool, device=device)
        self.code = torch.zeros(k, dtype=torch.int8, device=device)
        self.final_loss = torch.zeros(k, dtype=torch.float32, device=device)
        self.initial_loss = torch.zeros(k, dtype=torch.float32, device=device)
        self.initial_prediction = torch.zeros(k, dtype=torch.long, device=device)

    def restart(self, i: int) -> None:
        self.t[i], self.loss_sum[i], self.running[i], self.code[i], self.skipped[i] = 0, 0.0, True, 0, 0

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

    def count_skips(self, skipped: torch.Tensor) -> None:
        """The running loops' updates of this step that a loss scaler skipped (a bool per copy)."""
        self.skipped += self.running & skipped
