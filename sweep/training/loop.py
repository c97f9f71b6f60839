"""The loop: reset to the pretrained weights, fine-tune on one example until it is classified correctly.

Its semantics are stated in docs/outputs.md ("What is measured, exactly"). `Trajectory` keeps one
example's bookkeeping and is shared with the batched engine; `SingleExampleTrainer` is the simple
path: one model, one example at a time.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from sweep.config import ModelMode, Precision, TrainConfig
from sweep.errors import UserError
from sweep.outputs import Status
from sweep.randomness import seeded
from sweep.training.precision import PlainUpdates, ScaledUpdates, autocast_context
from sweep.training.probe import Probe, ProbeResult
from sweep.training.stopping import stop_status
from sweep.verdicts import cross_entropy


@dataclass
class Outcome:
    status: Status
    loss_sum: float           # sum of the losses of the updates taken (a lower bound unless correct)
    initial_loss: float
    final_loss: float         # loss of the last state evaluated
    initial_prediction: int
    initial_margin: float     # true-class logit minus the largest other logit, at the pretrained weights
    initial_grad_norm: float  # L2 norm of the full gradient at the pretrained weights (GraNd)
    initial_el2n: float       # L2 norm of softmax minus the one-hot label at the pretrained weights (EL2N)
    weight_distance: float    # L2 distance between final and pretrained parameters
    steps_taken: int          # optimizer updates taken
    skipped_updates: int = 0  # of those, updates a loss scaler skipped on overflow (precision=fp16_scaler)
    losses: Optional[list[float]] = None  # the loss of every state evaluated, with log_steps
    probe: Optional[ProbeResult] = None   # the probe at the weights where the loop stopped (not if diverged)

    @property
    def steps_to_correct(self) -> int:
        """t at which argmax == y; -1 unless corrected (the original convention)."""
        return self.steps_taken if self.status == Status.CORRECT else -1

    @property
    def total_loss_to_correct(self) -> float:
        """The original scripts' cost: loss_sum plus the loss of the first correct state; -1 if never correct."""
        return self.loss_sum + self.final_loss if self.status == Status.CORRECT else -1.0


class Trajectory:
    """One example's way through the loop: step t, the summed loss, and what step 0 showed."""

    def __init__(self, y: int, max_steps: int, check_final_state: bool = True, log_steps: bool = False):
        self.y, self.max_steps, self.check_final_state = y, max_steps, check_final_state
        self.t, self.loss_sum, self.skipped = 0, 0.0, 0
        self.initial: dict = {}
        self.losses: Optional[list[float]] = [] if log_steps else None

    def observe(self, loss_value: float, prediction: int, logits: Callable[[], torch.Tensor],
                grad_norm: Callable[[], float]) -> Optional[Status]:
        """Look at the state theta_t (its loss and prediction); at t = 0 record the baselines, from
        `logits()` (the example's float logits) and `grad_norm()` (the norm of the gradient at
        theta_0), which are called then only, keeping later steps free of that work. Returns the
        status to stop with, or None when an update is to be taken."""
        if self.t == 0:
            self.initial = {"initial_loss": loss_value, "initial_prediction": prediction,
                            "initial_margin": margin(logits(), self.y), "initial_grad_norm": grad_norm(),
                            "initial_el2n": el2n(logits(), self.y)}
        if self.losses is not None:
            self.losses.append(loss_value)
        return stop_status(loss_value, prediction, self.y, self.t, self.max_steps, self.check_final_state)

    def advance(self, loss_value: float, skipped: bool = False) -> None:
        """An update was taken from theta_t with loss `loss_value` (or attempted and `skipped`)."""
        self.loss_sum += loss_value
        self.t += 1
        self.skipped += skipped

    def outcome(self, status: Status, final_loss: float, weight_distance: float,
                probe: Optional[Callable[[], ProbeResult]] = None) -> Outcome:
        """The example's outcome; `probe()` evaluates the probe at the final weights (not called for an
        example that diverged: its weights are not finite)."""
        return Outcome(status=status, loss_sum=self.loss_sum, final_loss=final_loss, weight_distance=weight_distance,
                       steps_taken=self.t, skipped_updates=self.skipped, losses=self.losses,
                       probe=probe() if probe is not None and status != Status.DIVERGED else None, **self.initial)


class SingleExampleTrainer:
    """Fine-tunes one model on one example at a time, restoring the pretrained state before each."""

    def __init__(self, model: nn.Module, train: TrainConfig, lr: float, max_steps: int, log_steps: bool = False,
                 probe: Optional[Probe] = None):
        self.model, self.train, self.lr, self.max_steps, self.log_steps = model, train, lr, max_steps, log_steps
        self.probe = probe  # evaluated at the weights where each example's loop stops
        state = model.state_dict(keep_vars=True)
        self.state = list(state.values())
        self.snapshot = [t.detach().clone() for t in self.state]
        saved = dict(zip(state, self.snapshot, strict=True))
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in trainable]
        self.pretrained_params = [saved[name] for name, _ in trainable]  # the snapshot's tensors, no second copy
        self.device_type = next(model.parameters()).device.type
        self.autocast = autocast_context(train.precision, self.device_type)

    @torch.no_grad()
    def reset(self) -> None:
        """Restore every parameter and buffer in place (no reallocation, unlike load_state_dict)."""
        for tensor, saved in zip(self.state, self.snapshot, strict=True):
            tensor.copy_(saved)
        for param in self.params:  # no gradient left over from earlier use of the model
            param.grad = None
        self.model.train(self.train.mode == ModelMode.train)

    def fit(self, x: torch.Tensor, y: int, on_step: Optional[Callable[[int, float], None]] = None,
            seed: Optional[int] = None, key: Optional[str] = None) -> Outcome:
        """Run the loop on one example `x` (1, C, H, W) with label `y` from the pretrained weights;
        the forward passes' random draws (dropout, drop-path in train mode) come from generators
        seeded with `seed` (the example's own, see sweep.randomness), the caller's left untouched.
        `key` (the example's path) picks its images of a budgeted probe."""
        with seeded(seed, x.device) if seed is not None else contextlib.nullcontext():
            return self._fit(x, y, on_step, key)

    def _fit(self, x: torch.Tensor, y: int, on_step: Optional[Callable[[int, float], None]],
             key: Optional[str]) -> Outcome:
        self.reset()
        updates = ScaledUpdates(self.params, self.train, self.lr, self.device_type) \
            if self.train.precision == Precision.fp16_scaler else PlainUpdates(self.params, self.train, self.lr)
        target = torch.tensor([y], device=x.device)
        trajectory = Trajectory(y, self.max_steps, self.train.check_final_state, self.log_steps)
        while True:
            with self.autocast():
                logits = self.model(x)
            loss = cross_entropy(logits, target, self.train.precision)
            # one host synchronisation per step: the loss and the prediction together
            loss_value, prediction = torch.stack([loss.detach(), logits.detach().argmax(1)[0].float()]).tolist()
            if trajectory.t == 0:  # the gradient at theta_0 is recorded even when step 0 stops the loop
                updates.backward(loss)
            status = trajectory.observe(loss_value, int(prediction), lambda logits=logits: logits.detach().float()[0],
                                        self._grad_norm)
            if status is not None:
                break
            if trajectory.t > 0:
                updates.backward(loss)
            skipped = updates.step()
            trajectory.advance(loss_value, skipped)
            if on_step is not None:
                on_step(trajectory.t, loss_value)
        updates.zero_grad()
        probe = (lambda: self.probe.after_model(self.model, trajectory.t, key)) if self.probe is not None else None
        return trajectory.outcome(status, loss_value, self.weight_distance(), probe)

    def _grad_norm(self) -> float:
        return l2_norm([p.grad for p in self.params if p.grad is not None])

    @torch.no_grad()
    def weight_distance(self) -> float:
        return l2_norm([p - p0 for p, p0 in zip(self.params, self.pretrained_params, strict=True)])


def check_train_mode(model: nn.Module, input_size: tuple[int, ...], arch: str) -> None:
    """Refuse, before any work, a model in train mode that cannot run on a batch of one image of
    `input_size`: BatchNorm then normalises each channel over that one image, and a feature map
    that shrinks to 1x1 leaves one value per channel, which PyTorch refuses. The probe's random
    draws and its moves of the BatchNorm statistics are undone."""
    if not model.training:
        return
    device = next(model.parameters()).device
    buffers = [(buffer, buffer.clone()) for buffer in model.buffers()]
    try:
        with torch.no_grad(), seeded(0, device):
            model(torch.zeros(1, *input_size, device=device))
    except ValueError as error:
        if "Expected more than 1 value per channel" not in str(error):
            raise
        size = "x".join(map(str, input_size[1:]))
        raise UserError(f"train.mode=train (which experiment=original sets) cannot run {arch} on "
                        f"{size} images: in train mode BatchNorm normalises each channel over the batch, and one "
                        f"image reaches a 1x1 feature map in this model ({error}). Use train.mode=eval, or images "
                        f"large enough for the model (e.g. data=imagenet with model=efficientnet_lite0)") from None
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)


def margin(logits: torch.Tensor, y: int) -> float:
    """True-class logit minus the largest other logit."""
    return float(margin_tensor(logits, y))


def margin_tensor(logits: torch.Tensor, y: int) -> torch.Tensor:
    """`margin` as a 0-d tensor on the logits' device (read later, without a host synchronisation now)."""
    others = torch.cat([logits[:y], logits[y + 1:]])
    return logits[y] - others.max()


def el2n(logits: torch.Tensor, y: int) -> float:
    """EL2N (Paul et al. 2021): the L2 norm of the softmax minus the one-hot label."""
    return float(el2n_tensor(logits, y))


def el2n_tensor(logits: torch.Tensor, y: int) -> torch.Tensor:
    """`el2n` as a 0-d tensor on the logits' device."""
    error = torch.softmax(logits.float(), 0)
    error[y] -= 1  # minus the one-hot label
    return torch.linalg.vector_norm(error)


def l2_norm(tensors: list[torch.Tensor]) -> float:
    """L2 norm of all the tensors' entries together."""
    if not tensors:
        return 0.0
    return float(l2_norm_tensor(tensors))


def l2_norm_tensor(tensors: list[torch.Tensor]) -> torch.Tensor:
    """`l2_norm` of a non-empty list as a 0-d tensor on the tensors' device (each summed in its logical
    order, whatever its memory layout: the engine's stacked copies of channels_last weights are not)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float().contiguous()) for t in tensors]))
