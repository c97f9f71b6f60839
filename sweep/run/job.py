"""One job of a sweep: set up, select the model's mistakes, correct each one alone, summarise."""
from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm.data
import torch
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm

from sweep.config import AUTO, EXECUTION_KEYS, Augmentation, Config, MemoryFormat, ModelMode, validate
from sweep.cores import allotted_cores
from sweep.data.examples import Example
from sweep.data.images import example_view
from sweep.data.sources import Source, check_inputs, open_source
from sweep.models import check_arch, check_checkpoint, check_package
from sweep.multirun import clear_failure
from sweep.run.cache import writable_cache
from sweep.run.directory import RunDirectory, identity
from sweep.run.phases import Phases
from sweep.run.probe_set import open_probe
from sweep.run.progress import JOBS_ENV, SweepProgress, current_sweep, job_label
from sweep.run.results import finished
from sweep.run.selection import select, state_digest
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
    check_tracker(cfg)
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


def set_up(cfg: Config, cache: Path, device: torch.device) -> Ready:
    """The data, the pretrained model on `device` in its memory layout and training mode, and the input
    view of an example (as the job trains and searches with them)."""
    source = open_source(cfg, cache)
    model = source.pretrained(cfg.model).to(device)
    weights = {"digest": state_digest(model), "source": source.weights_source(cfg.model)}
    layout, layout_reason = memory_format(cfg.execution.memory_format, model, device)
    model = with_memory_format(model, layout)
    log.info("memory format: %s (%s)", layout.value, layout_reason)
    model.train(cfg.train.mode == ModelMode.train)
    check_train_mode(model, tuple(timm.data.resolve_data_config(model=model)["input_size"]), cfg.model.arch)
    view = example_view(model, random_view=cfg.train.augmentation == Augmentation.one_view, seed=cfg.seed)
    return Ready(source, model, weights, layout, layout_reason, view)


def _run(cfg: Config, directory: RunDirectory, cache: Path, started: float, device: torch.device, cores: int,
         cores_source: str, job_num: int | None, sweep: SweepProgress | None, shared: Path | None) -> dict:
    directory.claim({**identity(cfg), "device": device.type})  # CPU and GPU rows never mix in one directory

    # Set up: the data, the pretrained model in its training mode, and the input view of an example.
    ready = set_up(cfg, cache, device)
    source, model, weights, layout, layout_reason, view = (ready.source, ready.model, ready.weights, ready.layout,
                                                           ready.layout_reason, ready.view)
    directory.claim_weights(weights)

    # Select: the persisted selection of this directory, else a new sample of the model's mistakes (or the
    # sweep's shared selection); the probe.
    cost = count_step(model, tuple(timm.data.resolve_data_config(model=model)["input_size"]))
    phases = Phases(cost)
    with phases.timing("search"):
        selection = directory.selection() or directory.save_selection(
            select(cfg, model, source.examples, view, device, source.wrong, cache, cores, layout, weights["digest"],
                   shared=read_shared(shared, source.examples) if shared is not None else None))
    with phases.timing("probe"):
        probe = open_probe(cfg, directory, source.examples, selection, model, device, layout, cost)
    trainer = SingleExampleTrainer(model, cfg.train, cfg.lr, cfg.max_steps, cfg.log_steps, probe)
    in_shard = list(enumerate(selection.examples))[cfg.shard.index::cfg.shard.count]  # positions in the selection
    done = directory.done_paths()
    if done:
        log.info("resuming: %d of %d examples already done in %s", len(done), len(in_shard), directory.results_csv)
    todo = [(index, example) for index, example in in_shard if example.path not in done]

    # Correct: each example alone, rows written as they finish.
    finish = functools.partial(finished, mistake_predictions=selection.predictions)
    executor, todo, chosen = plan(cfg, trainer, view, device, todo, selection.initial_losses, cores, finish)
    if chosen.workers == 1:
        torch.set_num_threads(chosen.threads)  # the threads the log and the summary state
    arithmetic = describe_arithmetic(device, chosen.threads, layout)
    jobs = sweep.jobs if sweep is not None else int(os.environ.get(JOBS_ENV, 0)) or None
    bar = tqdm(total=len(in_shard), initial=len(done), desc=f"{job_label(job_num, jobs)}{cfg.model.arch} lr={cfg.lr:g}",
               unit="example", disable=not cfg.progress, position=int(sweep is not None), leave=sweep is None)
    if sweep is not None:
        sweep.job_started(job_num, len(in_shard), len(done))

    def show_step(step: int, loss: float) -> None:
        if step % 10 == 0:
            bar.set_postfix(step=step, loss=f"{loss:.4f}", refresh=False)

    guard = DivergenceGuard(cfg.lr)
    tracker = open_tracker(cfg, directory.path, params_of(OmegaConf.to_container(cfg, resolve=True)))
    try:  # the tracker's run is closed whatever happens: finished, or failed with the error
        training_started, updates = time.perf_counter(), 0
        with StopRequest() as stop, directory.recorder(cfg.log_steps, arithmetic) as record, bar, \
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
        training_seconds = time.perf_counter() - training_started
        phases.training(training_seconds, chosen.workers)

        # Summarise.
        rows = directory.rows()
        execution = {"device": str(device), "workers": chosen.workers, "threads": chosen.threads,
                     "parallel": chosen.parallel, "memory_format": layout.value, "arithmetic": arithmetic,
                     "automatic": [key for key in EXECUTION_KEYS if cfg.execution[key] == AUTO],
                     "why": chosen.reason, "memory_format_why": layout_reason, "cores": cores,
                     "cores_from": cores_source, "description": chosen.describe()}
        throughput = {"updates": updates, "training_seconds": training_seconds,
                      "updates_per_second": updates / training_seconds if training_seconds > 0 else None,
                      "updates_per_second_per_worker": updates / training_seconds / chosen.workers
                      if training_seconds > 0 else None}
        probe_before = {"size": len(probe), "error_before": probe.error_before,
                        "loss_before": probe.mean_loss_before} if probe is not None else {"size": 0}
        with phases.timing("statistics"):
            summary = summarize(cfg, rows, device, {**selection.info, "in_this_shard": len(in_shard)}, execution,
                                throughput, nondeterministic, weights, probe_before)
        with phases.timing("figures"):
            directory.plot(rows, title=f"{cfg.model.arch}, lr={cfg.lr:g}, data={cfg.data.name}")
        summary["wall_seconds"] = time.perf_counter() - started
        summary["phases"] = phases.summary(summary["wall_seconds"])
        directory.save_summary(summary)
        tracker.finish(summary, directory.path)
    except BaseException as error:
        tracker.abort(error)
        raise
    if stop.requested():
        raise SystemExit(f"stopped by {stop.signal} after {len(rows)} of {len(in_shard)} examples (the examples in "
                         f"hand were handed back); rerun the same command with hydra.run.dir={directory.path} to "
                         f"resume")
    log.info("done: %s -> %s. %s", _counts(summary), directory.path, summary["headline"])
    log.info("%s", Phases.sentence(summary["phases"], summary["wall_seconds"]))
    return summary


def _counts(summary: dict) -> str:
    return ", ".join(f"{n} {status}" for status, n in summary["counts"].items())
