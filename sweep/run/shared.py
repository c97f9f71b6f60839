"""A selection shared by every model of a sweep (selection.shared=true): the same images for every
model, images that each of them gets wrong, drawn once with the seed before the first job starts and
kept in the sweep's directory, so that the jobs (on any launcher, resumed or not) read one draw.

Per-model samples share almost no image once there are many models (each draws its own few hundred
of thousands of mistakes); a zoo study compares models on the same images.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from sweep.config import Config
from sweep.data.examples import Example, examples_table
from sweep.errors import UserError
from sweep.files import atomic_write_text

log = logging.getLogger(__name__)

SHARED_DIR = "shared_selection"  # in a sweep's directory


def shared_path(sweep_dir: Path, cfg: Config) -> Path:
    """The shared selection of the jobs that draw with `cfg`'s seed and sample size."""
    return Path(sweep_dir) / SHARED_DIR / f"seed{cfg.seed}-n{cfg.sample_size}.csv"


def model_name(cfg: Config) -> str:
    """A model of the sweep as its selection names it: the architecture, and where its weights come from."""
    return cfg.model.arch + (f"={cfg.model.checkpoint}" if cfg.model.checkpoint else "")


def prepare_shared(sweep_dir: Path, jobs: list[Config]) -> None:
    """Make (or, resuming, check) the shared selection of every group of jobs with selection.shared and
    one seed and sample size: each model's wrong set (its correctness matrix row, or its own search, as
    its jobs find it, cached), the images in all of them, `random.Random(seed).sample` of those."""
    groups: dict[Path, list[Config]] = {}
    for cfg in jobs:
        if cfg.selection.shared:
            groups.setdefault(shared_path(sweep_dir, cfg), []).append(cfg)
    for path, group in groups.items():
        first_of_model = {model_name(cfg): cfg for cfg in reversed(group)}  # the first job of each model
        models = sorted(first_of_model)
        if path.exists():
            kept = json.loads(path.with_suffix(".json").read_text())
            if kept["models"] != models:
                raise UserError(f"{path}: the shared selection of models {', '.join(kept['models'])}, but this sweep "
                                f"has {', '.join(models)}; run it into a fresh directory (hydra.sweep.dir=...)")
            log.info("shared selection reused: %s (%d images)", path, kept["selected"])
            continue
        wrong = {name: _wrong_paths(cfg) for name, cfg in first_of_model.items()}
        _draw(path, group[0], wrong)


def _wrong_paths(cfg: Config) -> dict[str, Example]:
    """path -> example of every mistake of `cfg`'s model, found as its job finds them."""
    from sweep.cores import allotted_cores
    from sweep.run.cache import writable_cache
    from sweep.run.context import set_up
    from sweep.run.selection import wrong_set
    from sweep.training.hardware import claimed_device
    with claimed_device(cfg.execution.device, 0) as device:
        job = set_up(cfg, writable_cache(cfg.cache_dir), device, *allotted_cores())
        found = wrong_set(job)
    log.info("shared selection: %s gets %d of %d images wrong", model_name(cfg), len(found.pool),
             len(job.source.examples))
    return {e.path: e for e in found.pool}


def _draw(path: Path, cfg: Config, wrong: dict[str, dict[str, Example]]) -> None:
    """The images every model gets wrong, refused when fewer than selection.min_shared, sampled and kept."""
    from sweep.run.selection import rank_order, sample
    names = list(wrong)
    common = set.intersection(*(set(paths) for paths in wrong.values()))
    if len(common) < cfg.selection.min_shared:
        without = {name: len(set.intersection(*(set(wrong[other]) for other in names if other != name)))
                   for name in names} if len(names) > 1 else {}
        worst = sorted(without, key=without.get, reverse=True)[:3]
        raise UserError(f"selection.shared: only {len(common)} images are mistakes of all {len(names)} models of the "
                        f"sweep (selection.min_shared={cfg.selection.min_shared}); fewest in common because of "
                        + ", ".join(f"{name} (without it: {without[name]})" for name in worst)
                        + "; leave those models out, or lower selection.min_shared")
    pool = rank_order(wrong[names[0]][p] for p in common)
    chosen = sample(pool, cfg.sample_size, cfg.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path.with_suffix(".json"), json.dumps(
        {"models": sorted(names), "wrong": {name: len(paths) for name, paths in wrong.items()},
         "shared_pool": len(pool), "selected": len(chosen), "seed": cfg.seed, "sample_size": cfg.sample_size},
        indent=2) + "\n")
    atomic_write_text(path, examples_table(chosen).to_csv(index=False))
    log.info("shared selection: %d of the %d images all %d models get wrong -> %s", len(chosen), len(pool),
             len(names), path)


def read_shared(path: Path, examples: list[Example]) -> list[Example]:
    """The shared selection at `path`, as the data's examples (easiest first)."""
    if not path.exists():
        raise UserError(f"selection.shared=true: {path} does not exist; a sweep makes it before its first job "
                        f"(python main.py -m ...)")
    by_path = {e.path: e for e in examples}
    table = pd.read_csv(path)
    unknown = [p for p in table["path"] if p not in by_path]
    if unknown:
        raise UserError(f"{path}: {len(unknown)} of its images are not in this job's data (e.g. {unknown[0]}); the "
                        f"shared selection belongs to another data set")
    return [by_path[p] for p in table["path"]]
