"""Turns (index, example) tasks into results rows by the simple path, the batched engine or workers."""
from __future__ import annotations

import collections
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

import torch

from sweep.data.examples import Example
from sweep.data.images import read_view
from sweep.randomness import forward_seed
from sweep.training.engine import BatchedTrainer
from sweep.training.loop import Outcome, SingleExampleTrainer
from sweep.training.workers import rows_in_workers

log = logging.getLogger(__name__)

Task = tuple[int, Example]  # (position in the run's selection, example)


OnStep = Optional[Callable[[int, float], None]]


Result = Any  # what `finish` makes of an example's outcome: its results row (sweep.run.results.Finished)
Finish = Callable[[int, Example, Optional[Outcome], float], Result]  # (index, example, outcome, seconds)


@dataclass
class Executor:
    """Turns (index, example) tasks into results rows, as each example finishes. `finish` makes an
    example's row from its outcome (None: the image could not be read); `seed` is the run's, from
    which each example's forward passes draw their randomness."""
    trainer: SingleExampleTrainer
    view: Callable[[Example], torch.Tensor]
    device: torch.device
    finish: Finish
    seed: int = 0
    engine: Optional[BatchedTrainer] = None
    workers: int = 1
    threads: int = 1  # torch threads per worker process
    prefetch: int = 0  # examples decoded ahead in a background thread (deterministic views only)

    def run(self, tasks: list[Task], stopping: Callable[[], bool], on_step: OnStep = None) -> Iterator[Result]:
        """Results of `tasks`, as each finishes. Once `stopping()` is true, no new example starts and
        the examples in hand are handed back at their next step (no row: a resume redoes them)."""
        if self.workers > 1:
            return rows_in_workers(self.rows, tasks, self.workers, self.threads, stopping)
        return self.rows(tasks, stopping, on_step)

    def rows(self, tasks: Iterable[Task], stopping: Callable[[], bool],
             on_step: OnStep = None) -> Iterator[Result]:
        """Results of `tasks` in this process, by the simple path or the batched engine; each image
        is decoded once, `prefetch` examples ahead of the training."""
        inputs = decoded(itertools.takewhile(lambda _: not stopping(), tasks), self.view, self.prefetch)

        def step(t: int, loss: float) -> None:
            if stopping():
                raise HandBack
            if on_step is not None:
                on_step(t, loss)

        try:
            if self.engine is None:
                for index, example, x, seconds in inputs:
                    tick = time.perf_counter()
                    outcome = None if x is None else self.trainer.fit(
                        x.to(self.device).unsqueeze(0), example.label, step, forward_seed(self.seed, example.path),
                        example.path)
                    yield self.finish(index, example, outcome, seconds + time.perf_counter() - tick)
            else:
                yield from self._engine_rows(inputs, step)
        except HandBack:
            return

    def _engine_rows(self, inputs: Iterator, step: OnStep) -> Iterator[Result]:
        """Results by the batched engine. Out of GPU memory, the examples in flight are fed again to an
        engine of half as many copies (logged); outcomes do not depend on K."""
        unreadable, backlog, in_flight = [], collections.deque(), {}

        def entries():
            for index, example, x, seconds in inputs:
                if x is None:
                    unreadable.append(self.finish(index, example, None, seconds))
                else:
                    yield (index, example, time.perf_counter() - seconds), x.to(self.device), example.label, \
                        example.path

        fresh = entries()

        def feed():
            while (entry := backlog.popleft() if backlog else next(fresh, None)) is not None:
                in_flight[entry[0][0]] = entry
                yield entry

        while True:
            try:
                for (index, example, tick), outcome in self.engine.run(feed(), step):
                    del in_flight[index]
                    yield from unreadable
                    unreadable.clear()
                    yield self.finish(index, example, outcome, time.perf_counter() - tick)
                break
            except torch.cuda.OutOfMemoryError:
                if self.engine.parallel == 1:
                    raise
                self.engine.parallel //= 2
                log.warning("out of GPU memory: %d examples in flight start again with K=%d copies", len(in_flight),
                            self.engine.parallel)
                backlog.extend(in_flight.values())
                in_flight.clear()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        yield from unreadable


class HandBack(Exception):
    """A stop was requested: the example in hand is given up, without a row, to be redone on resume."""


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

