"""One job of a sweep: set up, select the model's mistakes, correct each one alone, summarise."""
from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd
import torch
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm

from sweep.config import AUTO, EXECUTION_KEYS, Augmentation, Config, MemoryFormat, ModelMode, validate
from sweep.cores import allotted_cores
from sweep.data.examples import Example
from sweep.data.images import example_view
from sweep.data.sources import Source, check_inputs, open_source
from sweep.models import check_arch, check_checkpoint, check_package, input_size
from sweep.multirun import clear_failure
from sweep.run.cache import writable_cache
from sweep.run.directory import RunDirectory, identity
from sweep.run.phases import Phases
from sweep.run.probe_set import open_probe
from sweep.run.progress import JOBS_ENV, SweepProgress, current_sweep, job_label
from sweep.run.results import finished
from sweep.run.selection import Selection, select, state_digest
from sweep.run.shared import read_shared
from sweep.run.signals import StopRequest
from sweep.run.summary import summarize
from sweep.tracking import check_tracker, open_tracker
from sweep.tracking.metrics import params_of
from sweep.training.flops import count_step
from sweep.training.hardware import (
    claimed_device,
    describe_arithmetic,
    exact_arithmetic,
    memory_format,
    nondeterministic_operations,
    with_memory_format,
)
from sweep.training.loop import SingleExampleTrainer, check_train_mode
from sweep.training.planner import plan
from sweep.training.probe import Probe
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
    torch.set_num_threads(cores if cfg.execution.threads == AUTO else cfg.execution.threads)
    sweep = current_sweep() if job_num is not None else None
    try:
        with claimed_device(cfg.execution.device, job_num or 0) as device:
            exact_arithmetic(device, cfg.train.precision)
            directory = RunDirectory(out_dir)
            with directory.lock():
                clear_failure(directory.path)  # a job that failed before and is run again: its old failure is history
                return _run(cfg, directory, cache, started, device, cores, cores_source, job_num, sweep, shared)
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


@dataclass
class Ready:
    """A job's data source and pretrained model, set up for its training: mode, memory layout, view."""
    source: Source
    model: nn.Module
    weights: dict  # the digest of the pretrained weights, and where they came from
    layout: MemoryFormat
    layout_reason: str
    view: Callable[[Example], torch.Tensor]


def settings_of(cfg: Config) -> Config:
    """The job's settings as plain typed values (the config's dataclasses, enums and numbers): what the
    run hands to the layers below it, which never see OmegaConf (nor look a value up in it each step)."""
    return OmegaConf.to_object(cfg)


def set_up(settings: Config, cache: Path, device: torch.device) -> Ready:
    """The data, the pretrained model on `device` in its memory layout and training mode, and the input
    view of an example (as the job trains and searches with them), from the job's typed `settings`."""
    source = open_source(settings.data, settings.model.arch, cache, settings.progress)
    model = source.pretrained(settings.model).to(device)
    weights = {"digest": state_digest(model), "source": source.weights_source(settings.model)}
    layout, layout_reason = memory_format(settings.execution.memory_format, model, device)
    model = with_memory_format(model, layout)
    log.info("memory format: %s (%s)", layout.value, layout_reason)
    model.train(settings.train.mode == ModelMode.train)
    check_train_mode(model, input_size(model), settings.model.arch)
    view = example_view(model, random_view=settings.train.augmentation == Augmentation.one_view, seed=settings.seed)
    return Ready(source, model, weights, layout, layout_reason, view)


@dataclass
class Work:
    """What a job corrects, once set up and selected: its examples in this shard, those still to do,
    and the trainer (with the probe) that corrects them."""
    ready: Ready
    selection: Selection
    probe: Optional[Probe]
    trainer: SingleExampleTrainer
    in_shard: list[tuple[int, Example]]  # (position in the selection, example)
    done: set[str]
    todo: list[tuple[int, Example]]


def _run(cfg: Config, directory: RunDirectory, cache: Path, started: float, device: torch.device, cores: int,
         cores_source: str, job_num: int | None, sweep: SweepProgress | None, shared: Path | None) -> dict:
    directory.claim({**identity(cfg), "device": device.type})  # CPU and GPU rows never mix in one directory
    settings = settings_of(cfg)
    ready = set_up(settings, cache, device)
    directory.claim_weights(ready.weights)
    phases = Phases(count_step(ready.model, input_size(ready.model)))
    work = _select(cfg, settings, directory, ready, cache, device, cores, phases, shared)

    finish = functools.partial(finished, mistake_predictions=work.selection.predictions)
    executor, todo, chosen = plan(settings.execution, settings.seed, work.trainer, ready.view, device, work.todo,
                                  work.selection.initial_losses, cores, finish)
    if chosen.workers == 1:
        torch.set_num_threads(chosen.threads)  # the threads the log and the summary state
    arithmetic = describe_arithmetic(device, chosen.threads, ready.layout)
    tracker = open_tracker(settings.logger, directory.path, params_of(OmegaConf.to_container(cfg, resolve=True)))
    try:  # the tracker's run is closed whatever happens: finished, or failed with the error
        with StopRequest() as stop:
            updates, training_seconds, nondeterministic = _correct(settings, directory, executor, todo, work,
                                                                   arithmetic, tracker, phases, stop, job_num, sweep)
        phases.training(training_seconds, chosen.workers)
        execution = {"device": str(device), "workers": chosen.workers, "threads": chosen.threads,
                     "parallel": chosen.parallel, "memory_format": ready.layout.value, "arithmetic": arithmetic,
                     "automatic": [key for key in EXECUTION_KEYS if cfg.execution[key] == AUTO],
                     "why": chosen.reason, "memory_format_why": ready.layout_reason, "cores": cores,
                     "cores_from": cores_source, "description": chosen.describe()}
        rows, summary = _summarise(cfg, directory, work, device, execution, updates, training_seconds,
                                   nondeterministic, phases, started)
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


def _select(cfg: Config, settings: Config, directory: RunDirectory, ready: Ready, cache: Path, device: torch.device,
            cores: int, phases: Phases, shared: Path | None) -> Work:
    """The persisted selection of this directory, else a new sample of the model's mistakes (or the
    sweep's shared selection); the probe; and what is left to correct of this shard."""
    source, model = ready.source, ready.model
    with phases.timing("search"):
        selection = directory.selection() or directory.save_selection(
            select(cfg, model, source.examples, ready.view, device, source.wrong, cache, cores, ready.layout,
                   ready.weights["digest"],
                   shared=read_shared(shared, source.examples) if shared is not None else None))
    with phases.timing("probe"):
        probe = open_probe(cfg, directory, source.examples, selection, model, device, ready.layout, phases.cost)
    trainer = SingleExampleTrainer(model, settings.train, settings.lr, settings.max_steps, settings.log_steps, probe)
    in_shard = list(enumerate(selection.examples))[settings.shard.index::settings.shard.count]
    done = directory.done_paths()
    if done:
        log.info("resuming: %d of %d examples already done in %s", len(done), len(in_shard), directory.results_csv)
    todo = [(index, example) for index, example in in_shard if example.path not in done]
    return Work(ready, selection, probe, trainer, in_shard, done, todo)


def _correct(settings: Config, directory: RunDirectory, executor, todo: list, work: Work, arithmetic: str, tracker,
             phases: Phases, stop: StopRequest, job_num: int | None,
             sweep: SweepProgress | None) -> tuple[int, float, list[str]]:
    """Each example alone, rows written as they finish (and to the tracker); the updates taken, the
    seconds it took and the nondeterministic operations that ran."""
    jobs = sweep.jobs if sweep is not None else int(os.environ.get(JOBS_ENV, 0)) or None
    bar = tqdm(total=len(work.in_shard), initial=len(work.done),
               desc=f"{job_label(job_num, jobs)}{settings.model.arch} lr={settings.lr:g}", unit="example",
               disable=not settings.progress, position=int(sweep is not None), leave=sweep is None)
    if sweep is not None:
        sweep.job_started(job_num, len(work.in_shard), len(work.done))

    def show_step(step: int, loss: float) -> None:
        if step % 10 == 0:
            bar.set_postfix(step=step, loss=f"{loss:.4f}", refresh=False)

    guard = DivergenceGuard(settings.lr)
    started, updates = time.perf_counter(), 0
    with directory.recorder(settings.log_steps, arithmetic) as record, bar, \
            nondeterministic_operations() as nondeterministic:
        for result in executor.run(todo, stop.requested, show_step):
            record(result)
            tracker.row(result.row)
            bar.update()
            if sweep is not None:
                sweep.example_done()
            updates += result.row["updates"]
            phases.finished(result)
            guard.check(result.row)
    return updates, time.perf_counter() - started, nondeterministic


def _summarise(cfg: Config, directory: RunDirectory, work: Work, device: torch.device, execution: dict, updates: int,
               training_seconds: float, nondeterministic, phases: Phases,
               started: float) -> tuple[pd.DataFrame, dict]:
    """The rows in selection order and the run's summary (its statistics, plot and phases), saved."""
    rows = directory.rows()
    throughput = {"updates": updates, "training_seconds": training_seconds,
                  "updates_per_second": updates / training_seconds if training_seconds > 0 else None,
                  "updates_per_second_per_worker": updates / training_seconds / execution["workers"]
                  if training_seconds > 0 else None}
    probe = work.probe
    probe_before = {"size": len(probe), "error_before": probe.error_before,
                    "loss_before": probe.mean_loss_before} if probe is not None else {"size": 0}
    with phases.timing("statistics"):
        summary = summarize(cfg, rows, device, {**work.selection.info, "in_this_shard": len(work.in_shard)},
                            execution, throughput, nondeterministic, work.ready.weights, probe_before)
    with phases.timing("figures"):
        directory.plot(rows, title=f"{cfg.model.arch}, lr={cfg.lr:g}, data={cfg.data.name}")
    summary["wall_seconds"] = time.perf_counter() - started
    summary["phases"] = phases.summary(summary["wall_seconds"])
    directory.save_summary(summary)
    return rows, summary


def _counts(summary: dict) -> str:
    return ", ".join(f"{n} {status}" for status, n in summary["counts"].items())
