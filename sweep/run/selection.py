"""Which examples a run processes: the model's mistakes at the pretrained weights, sampled reproducibly."""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import pandas as pd
import timm.data
import torch
from filelock import FileLock
from torch import nn

from sweep.config import Augmentation, MemoryFormat, Precision, SearchMode
from sweep.data.examples import Example
from sweep.data.images import example_view
from sweep.errors import UserError
from sweep.files import atomic_write_text
from sweep.models import eval_mode
from sweep.randomness import forward_seed
from sweep.run.draw import Selection, rank_order, sample
from sweep.run.inference import Mistake, Search, find_wrong, infer
from sweep.run.wrong_sets import examples_digest, key_name, precomputed_key

if TYPE_CHECKING:
    from sweep.run.context import JobContext

log = logging.getLogger(__name__)


def cached_wrong_set(cache: Path, key: dict, examples: list[Example],
                     search: Callable[[], tuple[dict[Example, Mistake], int]]) -> tuple[dict[Example, Mistake], int]:
    """The wrong set of `key` from the cache, or searched once (under a lock: parallel jobs of a
    sweep over lrs search once per model) and stored."""
    path = cache / "wrong-sets" / f"{key_name(key)}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    by_path = {e.path: e for e in examples}
    with FileLock(f"{path}.lock"):
        if path.exists():
            table = pd.read_csv(path)
            info = json.loads(path.with_suffix(".json").read_text())
            log.info("wrong set from the cache (%s): %d examples", path, len(table))
            return ({by_path[p]: Mistake(loss, int(prediction))
                     for p, loss, prediction in zip(table["path"], table["loss"], table["prediction"], strict=True)},
                    info["unreadable"])
        wrong, unreadable = search()
        frame = pd.DataFrame({"path": [e.path for e in wrong], "loss": [m.loss for m in wrong.values()],
                              "prediction": [m.prediction for m in wrong.values()]})
        atomic_write_text(path.with_suffix(".json"), json.dumps({**key, "unreadable": unreadable}, indent=2))
        atomic_write_text(path, frame.to_csv(index=False))
    return wrong, unreadable


WRONG_SET_VERSION = 2  # of the key below and of the entries' layout: bump when either changes


def wrong_set_key(arch: str, model: nn.Module, weights: str, examples: list[Example], seed: int, random_view: bool,
                  device: torch.device, layout: MemoryFormat, precision: Precision) -> dict:
    """Everything a wrong set depends on: the architecture and its preprocessing (two architectures can
    load the same weights, and a pretrained tag can change the input size or crop), the weights'
    digest, the examples, the model's mode and, in train mode, the seed its forward passes draw
    dropout from, the view (random views are seeded too), device, memory layout and precision."""
    return {"version": WRONG_SET_VERSION, "arch": arch, "weights": weights, "examples": examples_digest(examples),
            "preprocessing": {k: list(v) if isinstance(v, tuple) else v
                              for k, v in timm.data.resolve_data_config(model=model).items()},
            "training": model.training, "forward_seed": seed if model.training else None,
            "view": f"random, seed {seed}" if random_view else "eval", "device": device.type,
            "memory_format": layout.value, "precision": precision.value}


def sample_mistakes(model: nn.Module, examples: list[Example], view: Callable[[Example], torch.Tensor], n: int,
                    seed: int = 0) -> list[tuple[Example, float]]:
    """`n` of the model's mistakes among `examples` (in its current mode, on `view`, on the CPU), drawn as a
    run draws them, easiest first, each with its loss at the pretrained weights."""
    wrong, _ = find_wrong(model, examples, Search(view, progress=False))
    return [(example, wrong[example].loss) for example in sample(rank_order(wrong), n, seed)]


@dataclass
class WrongSet:
    """A model's mistakes: `pool` in pool order (matrix-column order for a correctness matrix's row, else
    rank order), with the loss and prediction of each where a search computed them (none for a matrix),
    and `key`, everything that defines it (the wrong-set cache's key, or the matrix's row)."""
    pool: list[Example]
    mistakes: dict[Example, Mistake]
    unreadable: int
    key: dict


def wrong_set(job: JobContext) -> WrongSet:
    """The job's wrong set: precomputed (a correctness matrix's row), or found by inference at the
    pretrained weights: in the training mode, view and precision, so that step 0 is wrong by
    construction (search.mode=same), or in eval mode on the eval view in fp32, as a zoo's matrix is
    made (search.mode=eval). It is cached in the job's cache per model, weights, examples, mode, view,
    precision, device and the weights' memory layout."""
    settings, model, examples = job.settings, job.model, job.source.examples
    if job.source.wrong is not None:
        precomputed = list(job.source.wrong)
        return WrongSet(precomputed, {}, 0, precomputed_key(precomputed, examples))
    view, precision = job.view, settings.train.precision
    random_view = settings.train.augmentation == Augmentation.one_view
    in_eval = settings.search.mode == SearchMode.eval
    with eval_mode(model) if in_eval else contextlib.nullcontext():
        if in_eval:
            view = example_view(model, random_view=False, seed=settings.seed)
            random_view, precision = False, Precision.fp32
        seed = functools.partial(_forward_seed, settings.seed) if model.training else None
        search = functools.partial(find_wrong, model, examples, Search(
            view, job.device, 1 if model.training else 64, job.cores, precision, seed, settings.progress))
        key = wrong_set_key(settings.model.arch, model, job.weights["digest"], examples, settings.seed, random_view,
                            job.device, job.layout, precision)
        mistakes, unreadable = cached_wrong_set(job.cache, key, examples, search)
    return WrongSet(rank_order(mistakes), mistakes, unreadable, key)


def select(job: JobContext, shared: Optional[list[Example]] = None) -> Selection:
    """The job's selection: a sample of its wrong set (see `wrong_set`), or the sweep's `shared`
    selection (images every model of the sweep gets wrong), with the prediction that made each chosen
    example a mistake: the search's, or the model's in eval mode on the eval view in fp32, the way a
    zoo's matrix is made, where the wrong set comes from a matrix (or a shared example is not in the
    model's own wrong set here: found on another device, say)."""
    settings, model, examples = job.settings, job.model, job.source.examples
    found = wrong_set(job)
    log.info("the pretrained model gets %d of %d examples wrong (%d unreadable)", len(found.pool), len(examples),
             found.unreadable)
    if not found.pool:
        raise UserError(f"model {settings.model.arch} gets no example of data={settings.data.name} wrong: nothing "
                        f"to correct")
    if shared is None:
        chosen = sample(found.pool, settings.sample_size, settings.seed)
    else:
        chosen = list(shared)
        check_own_mistakes(chosen, found, settings.model.arch)
    mistakes = dict(found.mistakes)
    unknown = [e for e in chosen if e not in mistakes]
    if unknown:  # the model's own predictions, in eval mode on the eval view (as a zoo's matrix is made)
        with eval_mode(model):
            eval_view = example_view(model, random_view=False, seed=settings.seed)
            judged, _ = infer(model, unknown, Search(eval_view, job.device, cores=job.cores, progress=False))
        mistakes.update(judged)
    info = {"examples": len(examples), "wrong": len(found.pool), "unreadable": found.unreadable,
            "selected": len(chosen)}
    if shared is not None:
        info["shared"] = True
    initial_losses = {e.path: found.mistakes[e].loss for e in chosen if e in found.mistakes}
    predictions = {e.path: mistakes[e].prediction for e in chosen if e in mistakes}
    return Selection(chosen, initial_losses, info, predictions)


def check_own_mistakes(chosen: list[Example], found: WrongSet, arch: str) -> None:
    """Refuse to train a shared image that is not one of this job's own mistakes (it would be right at
    step 0, and count as corrected at no cost)."""
    own = {e.path for e in found.pool}
    foreign = [e for e in chosen if e.path not in own]
    if foreign:
        raise UserError(f"selection.shared: {len(foreign)} of the {len(chosen)} shared images are not mistakes of this "
                        f"job's model {arch} as this job finds them (wrong set {key_name(found.key)}: "
                        f"{json.dumps(found.key, sort_keys=True)}), e.g. {foreign[0].path}; the shared selection was "
                        f"drawn under other settings. Nothing was trained; run the sweep into a fresh directory "
                        f"(hydra.sweep.dir=...)")


def _forward_seed(run_seed: int, example: Example) -> int:
    return forward_seed(run_seed, example.path)


def draw_probe(examples: list[Example], selected: list[Example], size: int, seed: int) -> list[Example]:
    """`size` validation images for the probe, none of them selected (none is ever trained on):
    `random.Random(seed).sample` of the others in rank order, in the order drawn (random: any prefix
    is a random sample of the set)."""
    chosen = {e.path for e in selected}
    pool = rank_order(e for e in examples if e.path not in chosen)
    if not pool:
        raise UserError(f"probe: all {len(examples)} images of the data are in the selection, so none is left to "
                        f"probe without training on it; use probe.size=0 (no drawdown) or a smaller sample_size")
    if size > len(pool):
        raise UserError(f"probe.size={size}: only {len(pool)} of the data's {len(examples)} images are not in the "
                        f"selection; use probe.size={len(pool)} or less (0: no probe)")
    return random.Random(seed).sample(pool, size)
