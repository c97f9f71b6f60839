"""A selection shared by every model of a sweep (selection.shared=true): the same images for every
job, images that each of them gets wrong, drawn once with the seed before the first job starts and
kept in the sweep's directory, so that the jobs (on any launcher, resumed or not) read one draw.

A model's mistakes are defined by everything its wrong set depends on (the wrong-set cache's key:
architecture, weights, preprocessing, mode, view, precision, device, layout), not by its name: a
sweep over `train.augmentation` or `train.mode` has several wrong sets per model. Each distinct one
is found, in the jobs' own arithmetic, and the shared images are wrong under every one of them.
Each job checks again that its images are its own mistakes before it trains any.

No model is loaded in the launching process (on a cluster, the login node): a correctness matrix's
row is read from its files, and every other wrong set is searched by a task of the sweep's own
launcher (hydra/sweeper=staged: hydra_plugins/loss_to_correct/staged_sweeper.py), which writes it
into its directory (`search/<n>/`) for the launching process to draw from.

Per-model samples share almost no image once there are many models (each draws its own few hundred
of thousands of mistakes); a zoo study compares models on the same images.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from sweep.config import Config, flatten
from sweep.data.examples import Example, examples_table
from sweep.errors import UserError
from sweep.files import atomic_write_text
from sweep.run.draw import rank_order, sample
from sweep.run.sample_size import sample_size_of
from sweep.run.wrong_sets import Found, key_name, precomputed_key

log = logging.getLogger(__name__)

SHARED_DIR = "shared_selection"  # in a sweep's directory

# Settings that cannot change which images a model gets wrong at its pretrained weights: how each
# example is then trained, how many are drawn, and how the work is executed and recorded.
# A key maps to None (all of it) or to the names of its keys left out.
NOT_DEFINING_MISTAKES = {**dict.fromkeys(("lr", "max_steps", "sample_size", "selection", "shard", "probe", "logger",
                                          "log_steps", "progress", "aggregate", "cache_dir", "stage")),
                         "train": {"optimizer", "weight_decay", "momentum", "check_final_state"},
                         "execution": {"threads", "parallel", "workers", "kernels"}}


def shared_path(sweep_dir: Path, cfg: Config) -> Path:
    """The shared selection of the jobs that draw with `cfg`'s seed and sample size."""
    return Path(sweep_dir) / SHARED_DIR / f"seed{cfg.seed}-n{sample_size_of(cfg)[0]}.csv"


def model_name(cfg: Config) -> str:
    """A model of the sweep as its selection names it: the architecture, and where its weights come from."""
    spec = cfg.model
    return spec.arch + (f"={spec.checkpoint}" if spec.checkpoint else f"={spec.package}" if spec.package else "")


def mistake_settings(cfg: Config) -> dict:
    """The job's settings that can change its wrong set (conservatively: all but NOT_DEFINING_MISTAKES)."""
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    kept = {}
    for key, value in config.items():
        if key not in NOT_DEFINING_MISTAKES:
            kept[key] = value
        elif NOT_DEFINING_MISTAKES[key] is not None:
            kept[key] = {k: v for k, v in value.items() if k not in NOT_DEFINING_MISTAKES[key]}
    return kept


@dataclass
class Definition:
    """One distinct way the sweep's jobs define their mistakes: its settings, a job that has them (its
    config and its command-line overrides), and a label naming the model and the settings in which it
    differs from the sweep's other definitions."""
    settings: dict
    job: Config
    overrides: list[str]
    label: str = ""

    @functools.cached_property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def from_matrix(self) -> bool:
        """Whether the data gives this wrong set (a correctness matrix's row): read, not searched."""
        data = self.job.data
        return data.name != "demo" and bool(data.get("wrong_from_model") or data.get("correctness_model_map"))


# How a sweep's searches run: definition -> its wrong set, for each definition to be searched.
Searcher = Callable[[list[Definition]], dict[str, Found]]


def check_shared(jobs: list[Config]) -> None:
    """Refuse a shared selection whose jobs ask for different sample sizes, naming them."""
    sizes = {}
    for cfg in jobs:
        if cfg.selection.shared:
            sizes.setdefault(sample_size_of(cfg)[0], []).append(model_name(cfg))
    if len(sizes) > 1:
        raise UserError("selection.shared: the sweep's jobs ask for different sample sizes ("
                        + "; ".join(f"sample_size={n}: {', '.join(dict.fromkeys(names))}" for n, names in sizes.items())
                        + "), so no one selection can be shared; give one, e.g. sample_size="
                        + str(min(sizes)))


def prepare_shared(sweep_dir: Path, jobs: list[tuple[list[str], Config]], search: Searcher | None = None) -> None:
    """Make (or, resuming, check) the shared selection of every group of jobs ((overrides, config) each)
    with selection.shared and one seed: each distinct wrong set of the group (a correctness matrix's row,
    read here without a model; else searched by `search`, by default in this process in the jobs'
    arithmetic), the images in all of them, `random.Random(seed).sample` of those. A shared sweep whose
    jobs ask for different sample sizes is refused."""
    check_shared([cfg for _, cfg in jobs])
    shared = [(overrides, cfg) for overrides, cfg in jobs if cfg.selection.shared]
    groups: dict[Path, list[tuple[list[str], Config]]] = {}
    for overrides, cfg in shared:
        groups.setdefault(shared_path(sweep_dir, cfg), []).append((overrides, cfg))
    for path, group in groups.items():
        definitions = _definitions(group)
        digests = sorted(d.digest for d in definitions)
        if path.exists():
            kept = json.loads(path.with_suffix(".json").read_text())
            if kept.get("definitions") != digests:
                raise UserError(f"{path}: the shared selection of {', '.join(kept.get('wrong', {}))}, but this sweep's "
                                f"jobs define their mistakes as {', '.join(d.label for d in definitions)}; run it into "
                                f"a fresh directory (hydra.sweep.dir=...)")
            log.info("shared selection reused: %s (%d images)", path, kept["selected"])
            continue
        searched = [d for d in definitions if not d.from_matrix]
        found = {d.digest: matrix_row(d.job) for d in definitions if d.from_matrix}
        found.update((search or search_here)(searched) if searched else {})
        wrong = {}  # wrong-set key's name -> (label, path -> example): definitions with one key are one
        for definition in definitions:
            result = found[definition.digest]
            log.info("shared selection: %s gets %d images wrong (wrong set %s, %s)", definition.label,
                     len(result.pool), result.key, result.where)
            label = f"{wrong[result.key][0]} and {definition.label}" if result.key in wrong else definition.label
            wrong[result.key] = (label, {e.path: e for e in result.pool})
        _draw(path, group[0][1], dict(wrong.values()), sorted({model_name(cfg) for _, cfg in group}), digests)


def _definitions(group: list[tuple[list[str], Config]]) -> list[Definition]:
    """The group's distinct definitions of a mistake, in job order, each labelled by its model and the
    settings that tell it apart from the others."""
    definitions: dict[str, Definition] = {}
    for overrides, cfg in group:
        definition = Definition(mistake_settings(cfg), cfg, list(overrides))
        definitions.setdefault(definition.digest, definition)
    flat = {digest: flatten(d.settings) for digest, d in definitions.items()}
    differing = sorted({key for values in flat.values() for key in values
                        if len({json.dumps(v.get(key), sort_keys=True) for v in flat.values()}) > 1})
    for digest, definition in definitions.items():
        extra = [f"{key}={flat[digest].get(key)}" for key in differing if not key.startswith("model.")]
        definition.label = model_name(definition.job) + (f" ({', '.join(extra)})" if extra else "")
    return list(definitions.values())


def matrix_row(cfg: Config) -> Found:
    """The wrong set a correctness matrix's row gives the job `cfg`, read without loading its model."""
    from sweep.data.correctness import wrong_from_matrix
    from sweep.data.sources import matrix_row as row_of
    settings = OmegaConf.to_object(cfg)
    matcher, examples = _image_folder(json.dumps(OmegaConf.to_container(cfg.data, resolve=True), sort_keys=True))
    pool = wrong_from_matrix(settings.data, row_of(settings.data, settings.model.arch), examples, matcher.local)
    return Found(key_name(precomputed_key(pool, examples)), pool, "read from data.correctness", digest_of(cfg))


@functools.lru_cache(maxsize=4)
def _image_folder(data: str):
    """The path matcher and the examples of an image folder's data settings (as JSON), read once for all
    the models of a sweep."""
    from sweep.config import ImageFolderDataConfig
    from sweep.data.image_folders import image_folder_examples, path_matcher
    settings = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ImageFolderDataConfig), json.loads(data)))
    matcher = path_matcher(settings)
    return matcher, image_folder_examples(settings, matcher)


def digest_of(cfg: Config) -> str:
    """The digest of the settings that define `cfg`'s mistakes (a Definition's)."""
    return Definition(mistake_settings(cfg), cfg, []).digest


def find(cfg: Config, job_num: int = 0, cores: tuple[int, str] | None = None) -> Found:
    """The job `cfg`'s wrong set, found as the job finds it (set up as the job is: its device, threads
    and exact arithmetic; cached), and where it was found."""
    import socket

    from sweep.cores import allotted_cores
    from sweep.run.cache import writable_cache
    from sweep.run.context import set_up
    from sweep.run.selection import wrong_set
    from sweep.training.hardware import claimed_device
    with claimed_device(cfg.execution.device, job_num) as device:
        job = set_up(cfg, writable_cache(cfg.cache_dir), device, *(cores or allotted_cores()))
        found = wrong_set(job)
    return Found(key_name(found.key), found.pool, f"searched on {socket.gethostname()}, {device}", digest_of(cfg))


def search_here(definitions: list[Definition]) -> dict[str, Found]:
    """Each definition's wrong set searched in this process, one after another."""
    return {d.digest: find(d.job) for d in definitions}


def search_task(cfg: Config, out_dir: Path, job_num: int, cores: tuple[int, str] | None) -> int:
    """A sweep's search task (stage=search): the job's wrong set, written into its directory for the
    launching process to draw from; returns its size."""
    found = find(cfg, job_num, cores)
    found.write(out_dir)
    log.info("wrong set %s: %d mistakes, %s -> %s", found.key, len(found.pool), found.where, out_dir)
    return len(found.pool)


def _draw(path: Path, cfg: Config, wrong: dict[str, dict[str, Example]], models: list[str],
          definitions: list[str]) -> None:
    """The images in every wrong set (label -> path -> example), refused when fewer than
    selection.min_shared, sampled and kept with the digests of the definitions they were drawn for."""
    names = list(wrong)
    common = set.intersection(*(set(paths) for paths in wrong.values()))
    if len(common) < cfg.selection.min_shared:
        without = {name: len(set.intersection(*(set(wrong[other]) for other in names if other != name)))
                   for name in names} if len(names) > 1 else {}
        worst = sorted(without, key=without.get, reverse=True)[:3]
        raise UserError(f"selection.shared: only {len(common)} images are mistakes of all {len(names)} models and "
                        f"settings of the sweep (selection.min_shared={cfg.selection.min_shared}); fewest in common "
                        f"because of "
                        + ", ".join(f"{name} (without it: {without[name]})" for name in worst)
                        + "; leave those models out, or lower selection.min_shared")
    pool = rank_order(wrong[names[0]][p] for p in common)
    size = sample_size_of(cfg)[0]
    chosen = sample(pool, size, cfg.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path.with_suffix(".json"), json.dumps(
        {"models": models, "wrong": {name: len(paths) for name, paths in wrong.items()},
         "definitions": definitions, "shared_pool": len(pool), "selected": len(chosen), "seed": cfg.seed,
         "sample_size": size}, indent=2) + "\n")
    atomic_write_text(path, examples_table(chosen).to_csv(index=False))
    log.info("shared selection: %d of the %d images all %d wrong sets hold -> %s", len(chosen), len(pool),
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
