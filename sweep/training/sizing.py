"""How many copies the batched engine runs at once (K) on a GPU, for `execution.parallel=auto`: what a
step of two copies takes, and what each copy holds, against the free memory."""
from __future__ import annotations

from typing import Optional

import torch

from sweep.config import Optimizer, TrainConfig
from sweep.training.engine import BatchedTrainer

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
