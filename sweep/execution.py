"""How a job's examples are executed: the device, torch threads, and the path that fine-tunes them
(simple path, batched engine or worker processes). Every path gives the simple path's outcomes."""
from __future__ import annotations

import collections
import itertools
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import timm
import torch
from torch import nn

from sweep.config import Augmentation, MemoryFormat
from sweep.correct import SingleExampleTrainer
from sweep.data import Example, read_view
from sweep.engine import BatchedTrainer, batched_engine, engine_size, longest_first
from sweep.errors import UserError
from sweep.results import Finished, finished
from sweep.schema import Status
from sweep.workers import rows_in_workers

log = logging.getLogger(__name__)

Task = tuple[int, Example]  # (position in the run's selection, example)
OnStep = Optional[Callable[[int, float], None]]


@dataclass
class Executor:
    """Turns (index, example) tasks into results rows, as each example finishes."""
    trainer: SingleExampleTrainer
    view: Callable[[Example], torch.Tensor]
    device: torch.device
    engine: Optional[BatchedTrainer] = None
    workers: int = 1
    threads: int = 1  # torch threads per worker process
    prefetch: int = 0  # examples decoded ahead in a background thread (deterministic views only)

    def run(self, tasks: list[Task], stopping: Callable[[], bool], on_step: OnStep = None) -> Iterator[Finished]:
        """Results of `tasks`, as each finishes; once `stopping()` is true, no new example starts."""
        if self.workers > 1:
            return rows_in_workers(self.rows, tasks, self.workers, self.threads, stopping)
        return self.rows(itertools.takewhile(lambda _: not stopping(), tasks), on_step)

    def rows(self, tasks: Iterable[Task], on_step: OnStep = None) -> Iterator[Finished]:
        """Results of `tasks` in this process, by the simple path or the batched engine; each image
        is decoded once, `prefetch` examples ahead of the training."""
        inputs = decoded(tasks, self.view, self.prefetch)
        if self.engine is None:
            for index, example, x, seconds in inputs:
                tick = time.perf_counter()
                outcome = None if x is None else self.trainer.fit(x.to(self.device).unsqueeze(0), example.label, on_step)
                yield finished(index, example, outcome, seconds + time.perf_counter() - tick)
            return
        unreadable = []

        def queue():
            for index, example, x, seconds in inputs:
                if x is None:
                    unreadable.append(finished(index, example, None, seconds))
                else:
                    yield (index, example, time.perf_counter() - seconds), x.to(self.device), example.label

        for (index, example, tick), outcome in self.engine.run(queue(), on_step):
            yield from unreadable
            unreadable.clear()
            yield finished(index, example, outcome, time.perf_counter() - tick)
        yield from unreadable


class DivergenceGuard:
    """Stops a run that cannot give useful results: an example whose loss is not finite at the
    pretrained weights (a broken model, weights or input), or more than half of the first
    `FIRST` examples diverging (too large a learning rate). Rows written before are kept."""

    FIRST = 10

    def __init__(self, lr: float):
        self.lr, self.seen, self.diverged = lr, 0, 0

    def check(self, row: dict) -> None:
        if row["status"] != Status.DIVERGED:
            self.seen += 1
            return
        if not math.isfinite(row["initial_loss"]):
            raise UserError(f"{row['path']}: the loss at the pretrained weights is not finite: the model, its weights "
                            f"(model.checkpoint, model.package) or the input are broken; rows before it are kept")
        self.seen, self.diverged = self.seen + 1, self.diverged + 1
        if self.seen <= self.FIRST and self.diverged > self.FIRST / 2:
            raise UserError(f"{self.diverged} of the first {self.seen} examples diverged (the loss became non-finite): "
                            f"lr={self.lr:g} is too large for this model; try a smaller one, e.g. lr={self.lr / 10:g}. "
                            f"Rows so far are kept")


def decoded(tasks: Iterable[Task], view, ahead: int) -> Iterator[tuple[int, Example, Optional[torch.Tensor], float]]:
    """(index, example, its view or None if unreadable, seconds decoding took) per task, decoded
    `ahead` tasks in advance by a background thread (0: here, when asked for)."""
    def decode(task: Task):
        tick = time.perf_counter()
        return (*task, read_view(view, task[1]), time.perf_counter() - tick)

    if ahead == 0:
        yield from map(decode, tasks)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ltc-decode") as pool:
        pending = collections.deque()
        for task in tasks:
            pending.append(pool.submit(decode, task))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def memory_format(setting: MemoryFormat, model: nn.Module, device: torch.device) -> tuple[MemoryFormat, str]:
    """The weight layout for `execution.memory_format`, and why. `auto` takes channels_last on a CPU
    for a model with depthwise convolutions, where oneDNN's depthwise kernels make a lite0 step 1.1x
    to 1.5x faster (README, Speed), and torch's default layout elsewhere (no gain on resnet18, a
    slower demo model; unmeasured on GPUs). Float results depend on the layout, not on the path."""
    if setting != MemoryFormat.auto:
        return setting, f"execution.memory_format={setting.value}"
    depthwise = any(isinstance(m, nn.Conv2d) and 1 < m.groups == m.in_channels for m in model.modules())
    if not depthwise:
        return MemoryFormat.contiguous, "auto: no depthwise convolutions"
    if device.type != "cpu":
        return MemoryFormat.contiguous, "auto: depthwise convolutions, on a GPU"
    return MemoryFormat.channels_last, "auto: depthwise convolutions on a CPU"


def with_memory_format(model: nn.Module, layout: MemoryFormat) -> nn.Module:
    """`model` with its 4-d weights in `layout` (convolutions follow their weight's layout)."""
    return model.to(memory_format=torch.channels_last if layout == MemoryFormat.channels_last else torch.contiguous_format)


def allotted_cores() -> tuple[int, str]:
    """The cores this process was given, and where that number comes from: SLURM's allocation, else
    the process's CPU affinity (taskset, cgroups, container limits), else all cores."""
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return int(os.environ["SLURM_CPUS_PER_TASK"]), "SLURM_CPUS_PER_TASK"
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)), "the process's CPU affinity"
    return os.cpu_count() or 1, "os.cpu_count()"


@dataclass
class Plan:
    """How a job runs its examples: `workers` processes of `threads` torch threads each, each running
    the batched engine when `parallel` > 1, else the simple path; `reason` says why."""
    workers: int
    threads: int
    parallel: int
    reason: str

    def describe(self) -> str:
        path = f"batched engine K={self.parallel}" if self.parallel > 1 else "simple path"
        where = f"{self.workers} worker processes x {self.threads} torch thread{'s' * (self.threads > 1)}" \
            if self.workers > 1 else f"1 process, {self.threads} torch thread{'s' * (self.threads > 1)}"
        return f"{path}, {where} ({self.reason})"


def choose(cfg, device: torch.device, cores: int, todo: int) -> Plan:
    """Workers and threads for `cfg.execution` (explicit values win; `auto` picks what the README's
    measurements show fastest): on a CPU, one single-threaded worker process per core, since a
    batch-of-one step spreads poorly over threads (single-threaded however many examples are left,
    so a resumed run computes exactly as the first); on a GPU, one process (the batched engine
    fills the GPU; its K is sized later)."""
    execution = cfg.execution
    workers, threads = execution.workers, execution.threads
    if device.type != "cpu":
        if workers not in ("auto", 1):
            raise UserError(f"execution.workers={workers} forks CPU processes, but the device is {device}: use "
                            f"execution.parallel on GPUs (and one job per GPU via hydra/launcher)")
        return Plan(1, threads or cores, execution.parallel, "GPU: one process")
    gpu_visible = torch.cuda.is_available()
    if workers == "auto":
        if threads and threads > 1:
            workers, reason = 1, f"execution.threads={threads}: one process"
        elif gpu_visible:
            workers, threads = 1, cores
            reason = "a GPU is visible: forked workers could not run autograd (its device threads do not survive a fork)"
        else:
            workers, threads = max(1, min(cores, todo)), 1
            reason = f"auto: {cores} cores allotted, {todo} examples to run"
    else:
        reason = f"execution.workers={workers}"
    if workers > 1 and gpu_visible:
        raise UserError(f"execution.workers={workers} on a machine with a visible GPU: PyTorch's autograd cannot run in "
                        f"processes forked after it started its GPU threads; hide the GPUs for CPU workers "
                        f"(CUDA_VISIBLE_DEVICES= python main.py ...), or run on the GPU")
    if workers > 1 and threads and threads > 1:
        raise UserError(f"execution.workers={workers} with execution.threads={threads}: forked workers run one torch "
                        f"thread each (OpenMP cannot start threads in a process forked from a multithreaded one); "
                        f"use execution.threads=1, or execution.workers=1 with more threads")
    threads = threads or (1 if workers > 1 else cores)
    parallel = 1 if execution.parallel == "auto" else execution.parallel
    return Plan(workers, threads, parallel, reason)


def plan(cfg, trainer: SingleExampleTrainer, view, device: torch.device, todo: list[Task],
         initial_losses: dict[str, float], cores: int) -> tuple[Executor, list[Task], Plan]:
    """The executor for `cfg.execution`, the tasks in the order to feed it, and the plan it follows."""
    chosen = choose(cfg, device, cores, len(todo))
    engine = None
    if chosen.parallel == "auto" or chosen.parallel > 1:
        engine, chosen = _engine(cfg, trainer, device, chosen, len(todo))
    if engine is not None or chosen.workers > 1:  # longest first: the last to finish are short ones
        todo = longest_first(todo, lambda task: initial_losses.get(task[1].path))
    log.info("execution: %s", chosen.describe())
    # random views draw from the global random generators, which the training (dropout) uses too
    prefetch = 2 if chosen.workers == 1 and cfg.train.augmentation != Augmentation.one_view else 0
    return Executor(trainer, view, device, engine, chosen.workers, chosen.threads, prefetch), todo, chosen


def _engine(cfg, trainer: SingleExampleTrainer, device: torch.device, chosen: Plan,
            todo: int) -> tuple[BatchedTrainer | None, Plan]:
    """The batched engine for the plan (K sized from free GPU memory for `auto`), or None and the
    simple path with the reason."""
    input_size = tuple(timm.data.resolve_data_config(model=trainer.model)["input_size"])
    auto = chosen.parallel == "auto"
    k = 2 if auto else chosen.parallel
    engine, obstacle = batched_engine(trainer.model, cfg.train, cfg.lr, cfg.max_steps, k, input_size, cfg.log_steps)
    if engine is not None and auto:
        k, obstacle = engine_size(engine, input_size, todo, device)
        engine.parallel = k
    if engine is None or obstacle or k < 2:
        why = obstacle or f"K={k}"
        if not auto:
            log.warning("execution.parallel=%s ignored: %s; simple path used", chosen.parallel, why)
        return None, Plan(chosen.workers, chosen.threads, 1, f"{chosen.reason}; simple path: {why}")
    return engine, Plan(chosen.workers, chosen.threads, k, f"{chosen.reason}; K={k}" + (" (auto)" if auto else ""))
