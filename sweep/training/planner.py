"""The execution plan of a job: how many worker processes and torch threads, and which path fine-tunes
its examples (simple path or batched engine). Every path gives the simple path's outcomes."""
from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from sweep.config import AUTO, Augmentation, ExecutionConfig, Kernels
from sweep.errors import UserError
from sweep.models import input_size
from sweep.training.engine import BatchedTrainer, batched_engine
from sweep.training.executor import Executor, Task
from sweep.training.kernel_choice import FP16_AUTO, KernelChoice
from sweep.training.loop import SingleExampleTrainer
from sweep.training.sizing import engine_size

log = logging.getLogger(__name__)


def longest_first(items: list, predicted_cost: Callable[[object], Optional[float]]) -> list:
    """Items by predicted cost, highest first, those without a prediction last in their given order.

    Fed to the engine in this order (longest processing time first), the copies still running when
    the queue runs dry are short ones, so few steps run with idle slots. The initial loss predicts
    steps to correct well (benchmarks/README.md); outcomes do not depend on order.
    """
    known = [item for item in items if _finite(predicted_cost(item))]
    unknown = [item for item in items if not _finite(predicted_cost(item))]
    return sorted(known, key=predicted_cost, reverse=True) + unknown


def _finite(value: Optional[float]) -> bool:
    return value is not None and math.isfinite(value)


@dataclass
class Plan:
    """How a job runs its examples: `workers` processes of `threads` torch threads each, each running
    the batched engine when `parallel` > 1, else the simple path; `reason` says why."""
    workers: int
    threads: int
    parallel: int
    reason: str
    kernels: Optional[KernelChoice] = None  # the engine's convolutions

    def describe(self) -> str:
        path = f"batched engine K={self.parallel}" if self.parallel > 1 else "simple path"
        where = f"{self.workers} worker processes x {self.threads} torch thread{'s' * (self.threads > 1)}" \
            if self.workers > 1 else f"1 process, {self.threads} torch thread{'s' * (self.threads > 1)}"
        kernels = f"; {self.kernels.describe()}" if self.kernels is not None else ""
        return f"{path}, {where} ({self.reason}){kernels}"


def choose(execution: ExecutionConfig, device: torch.device, cores: int, todo: int) -> Plan:
    """Workers and threads for the `execution` settings (explicit values win; `auto` picks what benchmarks/README.md's
    measurements show fastest): on a CPU, one single-threaded worker process per core, since a
    batch-of-one step spreads poorly over threads (single-threaded however many examples are left,
    so a resumed run computes exactly as the first); on a GPU, one process (the batched engine
    fills the GPU; its K is sized later)."""
    workers = execution.workers
    threads = None if execution.threads == AUTO else execution.threads
    if device.type != "cpu":
        if workers not in (AUTO, 1):
            raise UserError(f"execution.workers={workers} forks CPU processes, but the device is {device}: use "
                            f"execution.parallel on GPUs (and one job per GPU via hydra/launcher)")
        return Plan(1, threads or cores, execution.parallel, "GPU: one process")
    gpu_visible = torch.cuda.is_available()
    if workers == AUTO:
        if threads and threads > 1:
            workers, reason = 1, f"execution.threads={threads}: one process"
        elif gpu_visible:
            workers, threads = 1, cores
            reason = ("a GPU is visible: forked workers could not run autograd (its device threads do not "
                      "survive a fork)")
        else:
            workers, threads = max(1, min(cores, todo)), 1
            reason = f"auto: {cores} cores allotted, {todo} examples to run"
    else:
        reason = f"execution.workers={workers}"
    if workers > 1 and gpu_visible:
        raise UserError(f"execution.workers={workers} on a machine with a visible GPU: PyTorch's autograd "
                        f"cannot run in processes forked after it started its GPU threads; hide the GPUs for CPU "
                        f"workers (CUDA_VISIBLE_DEVICES= python main.py ...), or run on the GPU")
    if workers > 1 and threads and threads > 1:
        raise UserError(f"execution.workers={workers} with execution.threads={threads}: forked workers run one torch "
                        f"thread each (OpenMP cannot start threads in a process forked from a multithreaded one); "
                        f"use execution.threads=1, or execution.workers=1 with more threads")
    threads = threads or (1 if workers > 1 else cores)
    parallel = 1 if execution.parallel == AUTO else execution.parallel
    return Plan(workers, threads, parallel, reason)


def plan(execution: ExecutionConfig, simple: Executor, todo: list[Task], initial_losses: dict[str, float],
         cores: int, cache: Optional[Path]) -> tuple[Executor, list[Task], Plan]:
    """The executor for the `execution` settings: `simple` (the simple path in this process, which says
    how an example is corrected and its row made) run by the batched engine, by worker processes or
    as it is; the tasks in the order to feed it; and the plan it follows. `cache`: where the engine's
    kernel timings are kept (None: not kept)."""
    trainer = simple.trainer
    chosen = choose(execution, simple.device, cores, len(todo))
    engine = None
    if chosen.parallel == AUTO or chosen.parallel > 1:
        engine, chosen = _engine(trainer, simple.device, chosen, len(todo))
        if engine is not None:
            chosen.kernels = _kernels(engine, execution.kernels, chosen.threads, cache)
    if engine is not None or chosen.workers > 1:  # longest first: the last to finish are short ones
        todo = longest_first(todo, lambda task: initial_losses.get(task[1].path))
    log.info("execution: %s", chosen.describe())
    # random views draw from the global random generators, which the training (dropout) uses too
    prefetch = 2 if chosen.workers == 1 and trainer.train.augmentation != Augmentation.one_view else 0
    executor = dataclasses.replace(simple, engine=engine, workers=chosen.workers, threads=chosen.threads,
                                   prefetch=prefetch)
    return executor, todo, chosen


def _engine(trainer: SingleExampleTrainer, device: torch.device, chosen: Plan,
            todo: int) -> tuple[BatchedTrainer | None, Plan]:
    """The batched engine for the plan, with the trainer's settings (K sized from free GPU memory for
    `auto`), or None and the simple path with the reason."""
    size = input_size(trainer.model)
    auto = chosen.parallel == AUTO
    k = 2 if auto else chosen.parallel
    engine, obstacle = batched_engine(trainer.model, trainer.train, trainer.lr, trainer.max_steps, k, size,
                                      trainer.log_steps, trainer.probe)
    if engine is not None and auto:
        k, obstacle = engine_size(engine, size, todo, device)
        engine.parallel = k
    if engine is None or obstacle or k < 2:
        why = obstacle or f"K={k}"
        if not auto:
            log.warning("execution.parallel=%s ignored: %s; simple path used", chosen.parallel, why)
        return None, Plan(chosen.workers, chosen.threads, 1, f"{chosen.reason}; simple path: {why}")
    return engine, Plan(chosen.workers, chosen.threads, k, f"{chosen.reason}; K={k}" + (" (auto)" if auto else ""))


def _kernels(engine: BatchedTrainer, setting: Kernels, threads: int, cache: Optional[Path]) -> KernelChoice:
    """The engine's convolution formulations for `setting`, put to use (timed at the torch threads each
    process of the job will run)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        choice = engine.choose_kernels(setting, input_size(engine.model), cache, threads)
    finally:
        torch.set_num_threads(previous)
    if choice.why not in (None, FP16_AUTO):  # refused (the execution line says what auto decided)
        log.warning("execution.kernels=%s: %s; vmap's own convolutions used", setting.value, choice.why)
    return choice
