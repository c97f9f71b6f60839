"""How a job's examples are executed: the device, torch threads, and the path that fine-tunes them
(simple path, batched engine or worker processes). Every path gives the simple path's outcomes."""
from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import timm
import torch

from sweep.correct import SingleExampleTrainer
from sweep.data import Example, read_view
from sweep.engine import BatchedTrainer, batched_engine, longest_first
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

    def run(self, tasks: list[Task], stopping: Callable[[], bool], on_step: OnStep = None) -> Iterator[Finished]:
        """Results of `tasks`, as each finishes; once `stopping()` is true, no new example starts."""
        if self.workers > 1:
            log.info("%d worker processes, %d torch threads each", self.workers, self.threads)
            return rows_in_workers(self.rows, tasks, self.workers, self.threads, stopping)
        return self.rows(itertools.takewhile(lambda _: not stopping(), tasks), on_step)

    def rows(self, tasks: Iterable[Task], on_step: OnStep = None) -> Iterator[Finished]:
        """Results of `tasks` in this process, by the simple path or the batched engine."""
        if self.engine is None:
            for index, example in tasks:
                yield correct_one(self.trainer, self.view, index, example, self.device, on_step)
            return
        unreadable = []

        def queue():
            for index, example in tasks:
                tick = time.perf_counter()
                x = read_view(self.view, example)
                if x is None:
                    unreadable.append(finished(index, example, None, time.perf_counter() - tick))
                else:
                    yield (index, example, tick), x.to(self.device), example.label

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


def correct_one(trainer: SingleExampleTrainer, view, index: int, example: Example, device,
                on_step: OnStep) -> Finished:
    """One example, by the simple path."""
    tick = time.perf_counter()
    x = read_view(view, example)
    outcome = None if x is None else trainer.fit(x.to(device).unsqueeze(0), example.label, on_step)
    return finished(index, example, outcome, time.perf_counter() - tick)


def plan(cfg, trainer: SingleExampleTrainer, view, device: torch.device, todo: list[Task],
         initial_losses: dict[str, float]) -> tuple[Executor, list[Task]]:
    """The executor `cfg.execution` asks for, and the tasks in the order to feed it."""
    workers, parallel = cfg.execution.workers, cfg.execution.parallel
    if workers > 1 and device.type != "cpu":
        raise UserError(f"execution.workers={workers} forks CPU processes, but the device is {device}: set "
                        f"execution.device=cpu (on GPUs use execution.parallel, and one job per GPU via hydra/launcher)")
    engine = None
    if parallel > 1:
        input_size = timm.data.resolve_data_config(model=trainer.model)["input_size"]
        engine, obstacle = batched_engine(trainer.model, cfg.train, cfg.lr, cfg.max_steps, parallel, input_size,
                                          cfg.log_steps)
        if obstacle:
            log.warning("execution.parallel=%d ignored: %s; simple path used", parallel, obstacle)
    threads = cfg.execution.threads or max(1, torch.get_num_threads() // workers)
    if engine is not None or workers > 1:  # longest first: the last to finish are short ones
        todo = longest_first(todo, lambda task: initial_losses.get(task[1].path))
    return Executor(trainer, view, device, engine, workers, threads), todo
