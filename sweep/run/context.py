"""A job's context: its settings as typed values, where it computes, and its data and pretrained model,
set up once at the run's boundary and handed to every part of the job."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf
from torch import nn

from sweep.config import AUTO, Augmentation, Config, MemoryFormat, ModelMode
from sweep.data.examples import Example
from sweep.data.images import example_view
from sweep.data.sources import Source, open_source
from sweep.models import input_size, state_digest
from sweep.run.draw import Selection
from sweep.run.sample_size import sample_size_of
from sweep.training.hardware import exact_arithmetic, memory_format, with_memory_format
from sweep.training.loop import SingleExampleTrainer, check_train_mode
from sweep.training.probe import Probe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobContext:
    """What every part of a job works with, each value once.

    `settings` are the job's config as plain typed values (the schema's dataclasses, enums and
    numbers), which the layers below the run read without OmegaConf (nor look a value up in it each
    step); `config` is the same config resolved to plain containers, as the summary and the tracker
    record it. The model is on `device`, in its memory `layout` and training mode; `view` makes an
    example's input tensor as the job trains and searches with it, of shape `input_size`.
    """
    settings: Config
    config: dict
    device: torch.device
    cores: int
    cores_source: str  # who said how many cores this job has
    cache: Path
    source: Source
    model: nn.Module
    weights: dict  # the digest of the pretrained weights, and where they came from
    layout: MemoryFormat
    layout_reason: str
    view: Callable[[Example], torch.Tensor]
    input_size: tuple[int, ...]
    sample_size_rule: str  # how settings.sample_size (resolved from auto) was decided


def set_up(cfg: Config, cache: Path, device: torch.device, cores: int, cores_source: str) -> JobContext:
    """The job's context: its config converted once, its arithmetic (threads, exact fp32 on `device`),
    its data, and the pretrained model on `device` in its memory layout and training mode, with the input
    view of an example. Whatever computes for the job (its search too, where a sweep's shared selection
    runs it before the job) computes after this, in the job's arithmetic."""
    settings = OmegaConf.to_object(cfg)
    settings.sample_size, sample_size_rule = sample_size_of(settings)
    log.info("%s", sample_size_rule)
    threads = settings.execution.threads
    torch.set_num_threads(cores if threads == AUTO else threads)
    exact_arithmetic(device, settings.train.precision)
    source = open_source(settings.data, settings.model.arch, cache, settings.progress)
    model = source.pretrained(settings.model).to(device)
    weights = {"digest": state_digest(model), "source": source.weights_source(settings.model)}
    layout, layout_reason = memory_format(settings.execution.memory_format, model, device)
    model = with_memory_format(model, layout)
    log.info("memory format: %s (%s)", layout.value, layout_reason)
    model.train(settings.train.mode == ModelMode.train)
    size = input_size(model)
    check_train_mode(model, size, settings.model.arch)
    view = example_view(model, random_view=settings.train.augmentation == Augmentation.one_view, seed=settings.seed)
    return JobContext(settings, OmegaConf.to_container(cfg, resolve=True), device, cores, cores_source, cache,
                      source, model, weights, layout, layout_reason, view, size, sample_size_rule)


@dataclass
class Work:
    """What a job corrects, once set up and selected: its examples in this shard, those still to do,
    and the trainer (with the probe) that corrects them."""
    selection: Selection
    probe: Optional[Probe]
    trainer: SingleExampleTrainer
    in_shard: list[tuple[int, Example]]  # (position in the selection, example)
    done: set[str]
    todo: list[tuple[int, Example]]


@dataclass
class Trained:
    """What this process's training of the job did: its optimizer updates and wall seconds, the
    nondeterministic operations that warned while it ran, and how it executed (see the summary)."""
    updates: int
    seconds: float
    nondeterministic: list[str]
    execution: dict
