"""One job of a sweep: set up, select the model's mistakes, correct each one alone, summarize."""
from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd
import torch
from tqdm import tqdm

from sweep.config import AUTO, EXECUTION_KEYS, Config, validate
from sweep.cores import allotted_cores
from sweep.data.sources import check_inputs
from sweep.models import check_arch, check_checkpoint, check_package
from sweep.outputs import clear_failure
from sweep.run.cache import writable_cache
from sweep.run.context import JobContext, Trained, Work, set_up
from sweep.run.directory import RunDirectory, identity
from sweep.run.phases import Phases
from sweep.run.probe_set import open_probe
from sweep.run.progress import JOBS_ENV, SweepProgress, current_sweep, job_label
from sweep.run.results import finished
from sweep.run.selection import select
from sweep.run.shared import read_shared
from sweep.run.signals import StopRequest
from sweep.run.summary import summarize
from sweep.tracking import Guarded, check_tracker, open_tracker
from sweep.tracking.metrics import params_of
from sweep.training.executor import Executor
from sweep.training.flops import count_step
from sweep.training.hardware import (
    claimed_device,
    describe_arithmetic,
    nondeterministic_operations,
)
from sweep.training.loop import SingleExampleTrainer
from sweep.training.planner import Plan, plan
from sweep.training.stopping import DivergenceGuard

log = logging.getLogger(__name__)


def run(cfg: Config, out_dir: Path, job_num: int | None = None, cores: tuple[int, str] | None = None,
        shared: Path | None = None) -> dict:
    """Run one job into `out_dir`; rows already in its results CSV are kept and skipped.

    `cores` (how many, and who said so) is this job's share of the machine, by default what the
    process was allotted; `job_num`, the job's number in a sweep (None: a single run), picks the GPU
    among several; `shared`, the sweep's shared selection (selection.shared) this job corrects. The
    directory is held for the whole job: a second process into it is refused.
    """
    started = time.perf_counter()
    cache = check_before_work(cfg)
    cores, cores_source = cores or allotted_cores()
    sweep = current_sweep() if job_num is not None else None
    try:
        with claimed_device(cfg.execution.device, job_num or 0) as device:
            directory = RunDirectory(out_dir)
            with directory.lock():
                clear_failure(directory.path)  # a job that failed before and is run again: its old failure is history
                return _run(cfg, directory, cache, device, (cores, cores_source), started, sweep, job_num, shared)
    finally:
        if sweep is not None:
            sweep.job_done()


def check_before_work(cfg: Config) -> Path:
    """What can be checked of a job before any work (a sweep checks every job so before the first
    starts): values, input files, the model's name and checkpoint, the cache; returns the cache."""
    validate(cfg)
    check_inputs(cfg.data, cfg.model.arch)
    check_arch(cfg.model.arch)
    check_tracker(cfg.logger)
    if cfg.model.checkpoint:
        check_checkpoint(cfg.model.checkpoint)
    elif cfg.model.package:
        check_package(cfg.model.package)
    return writable_cache(cfg.cache_dir)


def _run(cfg: Config, directory: RunDirectory, cache: Path, device: torch.device, cores: tuple[int, str],
         started: float, sweep: Optional[SweepProgress], job_num: Optional[int], shared: Optional[Path]) -> dict:
    directory.claim({**identity(cfg), "device": device.type})  # CPU and GPU rows never mix in one directory
    job = set_up(cfg, cache, device, *cores)
    directory.claim_weights(job.weights)
    this = JobRun(job, directory, Phases(count_step(job.model, job.input_size)), sweep, job_num)
    work = this.select(shared)
    finish = functools.partial(finished, mistake_predictions=work.selection.predictions)
    simple = Executor(work.trainer, job.view, device, finish, job.settings.seed)
    executor, todo, chosen = plan(job.settings.execution, simple, work.todo, work.selection.initial_losses, job.cores,
                                  job.cache)
    if chosen.workers == 1:
        torch.set_num_threads(chosen.threads)  # the threads the log and the summary state
    arithmetic = describe_arithmetic(device, chosen.threads, job.layout)
    tracker = open_tracker(job.settings.logger, directory.path, params_of(job.config))
    try:  # the tracker's run is closed whatever happens: finished, or failed with the error
        with StopRequest() as stop:
            updates, seconds, nondeterministic = this.correct(work, executor, todo, arithmetic, tracker, stop)
        this.phases.training(seconds, chosen.workers)
        trained = Trained(updates, seconds, nondeterministic, _execution(job, chosen, arithmetic))
        rows, summary = this.summarize(work, trained, started)
        tracker.finish(summary, directory.path)
    except BaseException as error:
        tracker.abort(error)
        raise
    if stop.requested():
        raise SystemExit(f"stopped by {stop.signal} after {len(rows)} of {len(work.in_shard)} examples (the examples "
                         f"in hand were handed back); rerun the same command with hydra.run.dir={directory.path} to "
                         f"resume")
    log.info("done: %s -> %s. %s", _counts(summary), directory.path, summary["headline"])
    log.info("%s", Phases.sentence(summary["phases"], summary["wall_seconds"]))
    return summary


def _execution(job: JobContext, chosen: Plan, arithmetic: str) -> dict:
    """How this process executed the job (the summary's `execution`), and why."""
    return {"device": str(job.device), "workers": chosen.workers, "threads": chosen.threads,
            "parallel": chosen.parallel, "memory_format": job.layout.value, "arithmetic": arithmetic,
            "automatic": [key for key in EXECUTION_KEYS if getattr(job.settings.execution, key) == AUTO],
            "why": chosen.reason, "memory_format_why": job.layout_reason, "cores": job.cores,
            "cores_from": job.cores_source, "description": chosen.describe(),
            "kernels": chosen.kernels.summary() if chosen.kernels is not None else None}


@dataclass
class JobRun:
    """One job in its claimed directory, from its context: its mistakes selected, each corrected alone,
    the run summarized; with where its time goes (`phases`) and its place in a sweep."""
    job: JobContext
    directory: RunDirectory
    phases: Phases
    sweep: Optional[SweepProgress]
    job_num: Optional[int]

    def select(self, shared: Optional[Path]) -> Work:
        """The persisted selection of this directory, else a new sample of the model's mistakes (or the
        sweep's `shared` selection); the probe; and what is left to correct of this shard."""
        job, directory, settings = self.job, self.directory, self.job.settings
        with self.phases.timing("search"):
            selection = directory.selection() or directory.save_selection(
                select(job, read_shared(shared, job.source.examples) if shared is not None else None))
        with self.phases.timing("probe"):
            probe = open_probe(job, directory, selection, self.phases.cost)
        trainer = SingleExampleTrainer(job.model, settings.train, settings.lr, settings.max_steps, settings.log_steps,
                                       probe)
        in_shard = list(enumerate(selection.examples))[settings.shard.index::settings.shard.count]
        done = directory.done_paths()
        if done:
            log.info("resuming: %d of %d examples already done in %s", len(done), len(in_shard),
                     directory.results_csv)
        todo = [(index, example) for index, example in in_shard if example.path not in done]
        return Work(selection, probe, trainer, in_shard, done, todo)

    def correct(self, work: Work, executor: Executor, todo: list, arithmetic: str, tracker: Guarded,
                stop: StopRequest) -> tuple[int, float, list[str]]:
        """Each example alone, rows written as they finish (and to the tracker); the updates taken, the
        seconds it took and the nondeterministic operations that ran."""
        settings, sweep = self.job.settings, self.sweep
        jobs = sweep.jobs if sweep is not None else int(os.environ.get(JOBS_ENV, 0)) or None
        bar = tqdm(total=len(work.in_shard), initial=len(work.done),
                   desc=f"{job_label(self.job_num, jobs)}{settings.model.arch} lr={settings.lr:g}", unit="example",
                   disable=not settings.progress, position=int(sweep is not None), leave=sweep is None)
        if sweep is not None:
            sweep.job_started(self.job_num, len(work.in_shard), len(work.done))

        def show_step(step: int, loss: float) -> None:
            if step % 10 == 0:
                bar.set_postfix(step=step, loss=f"{loss:.4f}", refresh=False)

        guard = DivergenceGuard(settings.lr)
        started, updates = time.perf_counter(), 0
        with self.directory.recorder(settings.log_steps, arithmetic) as record, bar, \
                nondeterministic_operations() as nondeterministic:
            for result in executor.run(todo, stop.requested, show_step):
                record(result)
                tracker.row(result.row)
                bar.update()
                if sweep is not None:
                    sweep.example_done()
                updates += result.row["updates"]
                self.phases.finished(result)
                guard.check(result.row)
        return updates, time.perf_counter() - started, nondeterministic

    def summarize(self, work: Work, trained: Trained, started: float) -> tuple[pd.DataFrame, dict]:
        """The rows in selection order and the run's summary (its statistics, plot and phases), saved."""
        settings, phases = self.job.settings, self.phases
        rows = self.directory.rows()
        with phases.timing("statistics"):
            summary = summarize(self.job, work, rows, trained)
        with phases.timing("figures"):
            self.directory.plot(rows, title=f"{settings.model.arch}, lr={settings.lr:g}, data={settings.data.name}")
        summary["wall_seconds"] = time.perf_counter() - started
        summary["phases"] = phases.summary(summary["wall_seconds"])
        self.directory.save_summary(summary)
        return rows, summary


def _counts(summary: dict) -> str:
    return ", ".join(f"{n} {status}" for status, n in summary["counts"].items())
