"""One job of a sweep: find the model's mistakes, correct each one alone, write the run's outputs."""
from __future__ import annotations

import functools
import itertools
import json
import logging
import platform
import signal
import time
import zlib
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import timm
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from sweep.config import Augmentation, Device, ModelMode
from sweep.correct import UNREADABLE, Outcome, SingleExampleTrainer
from sweep.data import Example, check_labels, load_image, model_transform, seeded_view
from sweep.engine import BatchedTrainer, batching_obstacle, longest_first
from sweep.results import (COLUMNS, PLOT_PNG, RESULTS_CSV, SUMMARY_JSON, ResultsWriter, atomic_write_text,
                           plot_loss_vs_difficulty, read_rows, spearman_vs_rank, write_summary)
from sweep.selection import find_wrong, sample
from sweep.sources import open_source, pretrained_model
from sweep.workers import rows_in_workers

log = logging.getLogger(__name__)

SELECTION_CSV = "selection.csv"
SELECTION_INFO_JSON = "selection.json"
IDENTITY_JSON = "run_identity.json"
# Keys that define what a run directory's results mean; resuming with any other value is refused.
IDENTITY_KEYS = ("model", "data", "lr", "max_steps", "sample_size", "seed", "shard", "train.optimizer",
                 "train.weight_decay", "train.momentum", "train.mode", "train.augmentation", "train.precision")


def validate(cfg) -> None:
    """Fail on impossible values before any work starts."""
    if not cfg.lr > 0:
        raise ValueError(f"lr={cfg.lr}: expected a learning rate > 0")
    if cfg.max_steps < 1:
        raise ValueError(f"max_steps={cfg.max_steps}: expected an integer >= 1")
    if cfg.sample_size < 1:
        raise ValueError(f"sample_size={cfg.sample_size}: expected an integer >= 1")
    if not 0 <= cfg.shard.index < cfg.shard.count:
        raise ValueError(f"shard.index={cfg.shard.index}, shard.count={cfg.shard.count}: expected "
                         f"0 <= shard.index < shard.count")
    if cfg.train.parallel < 1:
        raise ValueError(f"train.parallel={cfg.train.parallel}: expected an integer >= 1")
    if cfg.train.workers < 1:
        raise ValueError(f"train.workers={cfg.train.workers}: expected an integer >= 1")
    if cfg.train.weight_decay < 0:
        raise ValueError(f"train.weight_decay={cfg.train.weight_decay}: expected >= 0")


def _device(choice: Device, job_num: int) -> torch.device:
    """CPU or a GPU; parallel jobs of a sweep spread over the visible GPUs (job number modulo count)."""
    if choice == Device.cuda and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is available; use train.device=auto or cpu")
    if choice == Device.cpu or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", job_num % torch.cuda.device_count())


def _check_identity(cfg, out_dir: Path) -> None:
    """Record what this run directory holds, or refuse to resume a run made with other settings."""
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    identity = {key: functools.reduce(lambda node, part: node[part], key.split("."), config) for key in IDENTITY_KEYS}
    path = out_dir / IDENTITY_JSON
    if path.exists():
        previous = json.loads(path.read_text())
        differing = sorted(k for k in set(identity) | set(previous) if identity.get(k) != previous.get(k))
        if differing:
            raise ValueError(f"{out_dir} holds results of a different configuration (differing keys: "
                             f"{', '.join(differing)}); use a fresh output directory")
    else:
        atomic_write_text(path, json.dumps(identity, indent=2, default=str))


def _selection(cfg, out_dir: Path, model, examples: list[Example], view, device,
               precomputed: list[Example] | None) -> tuple[list[Example], dict[str, float], dict]:
    """The persisted selection of this run directory, or a new one: wrong examples, sampled, with
    their losses at the pretrained weights where the wrong-set search computed them (path -> loss)."""
    path, info_path = out_dir / SELECTION_CSV, out_dir / SELECTION_INFO_JSON
    if path.exists() and info_path.exists():
        frame = pd.read_csv(path)
        chosen = [Example(p, int(y), int(r)) for p, y, r in zip(frame["path"], frame["label"], frame["rank"])]
        return chosen, _known_losses(frame), json.loads(info_path.read_text())
    if precomputed is not None:
        wrong, unreadable = dict.fromkeys(precomputed, np.nan), 0
        log.info("wrong set from the correctness matrix row of %s", cfg.data.wrong_from_model)
    else:
        batch_size = 1 if cfg.train.mode == ModelMode.train else 64
        wrong, unreadable = find_wrong(model, examples, view, device, batch_size, progress=cfg.progress)
    log.info("the pretrained model gets %d of %d examples wrong (%d unreadable)", len(wrong), len(examples),
             unreadable)
    if not wrong:
        raise ValueError(f"model {cfg.model.arch} gets no example of data={cfg.data.name} wrong: nothing to correct")
    chosen = sample(wrong, cfg.sample_size, cfg.seed)
    info = {"examples": len(examples), "wrong": len(wrong), "unreadable": unreadable, "selected": len(chosen)}
    frame = pd.DataFrame({"path": [e.path for e in chosen], "label": [e.label for e in chosen],
                          "rank": [e.rank for e in chosen], "initial_loss": [wrong[e] for e in chosen]})
    atomic_write_text(path, frame.to_csv(index=False))
    atomic_write_text(info_path, json.dumps(info, indent=2))
    return chosen, _known_losses(frame), info


def _known_losses(selection: pd.DataFrame) -> dict[str, float]:
    """path -> loss at the pretrained weights, for the selected examples that have one (older
    selection files and wrong sets from a correctness matrix have none)."""
    if "initial_loss" not in selection:
        return {}
    known = selection.dropna(subset=["initial_loss"])
    return dict(zip(known["path"], known["initial_loss"]))


class _StopRequest:
    """SIGINT / SIGTERM: finish the example in flight, then stop cleanly (a rerun resumes)."""

    def __init__(self):
        self.signal = None

    def __enter__(self):
        # Only where the signal has its default disposition: a launcher that handles it (submitit
        # requeues pre-empted jobs) keeps its handler.
        defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
        self.previous = {s: signal.signal(s, self._handle) for s, default in defaults.items()
                         if signal.getsignal(s) is default}
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        log.warning("%s received: finishing the current example, then stopping", self.signal)

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def run(cfg, out_dir: Path, job_num: int = 0, threads: int | None = None) -> dict:
    """Run one job into `out_dir`; rows already in its results CSV are kept and skipped.

    `threads` (torch intra-op threads) applies unless `train.threads` is set; `job_num` picks the GPU.
    """
    validate(cfg)
    started = time.perf_counter()
    if cfg.train.threads or threads:
        torch.set_num_threads(cfg.train.threads or threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_identity(cfg, out_dir)
    device = _device(cfg.train.device, job_num)
    if cfg.train.workers > 1 and device.type != "cpu":
        raise ValueError(f"train.workers={cfg.train.workers} forks CPU processes, but the device is {device}: "
                         f"set train.device=cpu (on GPUs use train.parallel, and one job per GPU via hydra/launcher)")
    source = open_source(cfg)
    model = pretrained_model(cfg, source).to(device)
    check_labels(source.examples, model.num_classes, cfg.model.arch)
    model.train(cfg.train.mode == ModelMode.train)
    transform = model_transform(model, training=cfg.train.augmentation == Augmentation.one_view)
    augment = cfg.train.augmentation == Augmentation.one_view

    def view(example: Example) -> torch.Tensor:
        """The example's input; a random view is seeded by the run seed and the image path, so the
        wrong-set search and the fine-tuning see the same one."""
        image = load_image(example.path)
        return seeded_view(transform, image, seed=cfg.seed * 1_000_003 + zlib.crc32(example.path.encode())) \
            if augment else transform(image)

    # Snapshot the pretrained state before the wrong-set search, which in train mode moves BatchNorm statistics.
    trainer = SingleExampleTrainer(model, cfg.train, cfg.lr, cfg.max_steps)
    chosen, initial_losses, info = _selection(cfg, out_dir, model, source.examples, view, device, source.wrong)
    indexed = list(enumerate(chosen))[cfg.shard.index::cfg.shard.count]  # positions in the whole selection
    results_path = out_dir / RESULTS_CSV
    done = set(read_rows(results_path)["path"])
    if done:
        log.info("resuming: %d of %d examples already done in %s", len(done), len(indexed), results_path)
    writer = ResultsWriter(results_path)
    bar = tqdm(total=len(indexed), initial=len(done), desc=f"{cfg.model.arch} lr={cfg.lr:g}", unit="example",
               disable=not cfg.progress)

    def on_step(step: int, loss: float) -> None:
        if step % 10 == 0:
            bar.set_postfix(step=step, loss=f"{loss:.4f}", refresh=False)

    todo = [(index, example) for index, example in indexed if example.path not in done]
    engine = _batched_engine(cfg, model)
    if engine is not None or cfg.train.workers > 1:  # longest first: the last to finish are short ones
        todo = longest_first(todo, lambda item: initial_losses.get(item[1].path))

    def process(tasks, on_step=None) -> Iterator[dict]:
        return _rows(tasks, trainer, engine, view, device, on_step)

    with _StopRequest() as stop:
        try:
            if cfg.train.workers > 1:
                threads = cfg.train.threads or max(1, torch.get_num_threads() // cfg.train.workers)
                log.info("%d worker processes, %d torch threads each", cfg.train.workers, threads)
                rows = rows_in_workers(process, todo, cfg.train.workers, threads, lambda: stop.signal is not None)
            else:
                rows = process(itertools.takewhile(lambda _: stop.signal is None, todo), on_step)
            for row in rows:
                writer.write(row)
                bar.update()
        finally:
            bar.close()
            writer.close()
    rows = read_rows(results_path)
    summary = _summary(cfg, rows, time.perf_counter() - started, device, {**info, "in_this_shard": len(indexed)})
    write_summary(out_dir / SUMMARY_JSON, summary)
    plot_loss_vs_difficulty(rows, out_dir / PLOT_PNG, title=f"{cfg.model.arch}, lr={cfg.lr:g}, data={cfg.data.name}")
    if stop.signal:
        raise SystemExit(f"stopped by {stop.signal} after {len(rows)} of {len(indexed)} examples; "
                         f"rerun the same command with hydra.run.dir={out_dir} to resume")
    rho = summary["spearman_vs_rank"]["loss_sum"]["rho"]
    log.info("done: %s; Spearman rho(loss to correct, rank) = %s", summary["counts"], rho)
    return summary


def _batched_engine(cfg, model) -> BatchedTrainer | None:
    """The batched engine when `train.parallel` > 1 and it can reproduce the simple path, else None."""
    if cfg.train.parallel <= 1:
        return None
    obstacle = batching_obstacle(model, cfg.train)
    if obstacle is None:
        engine = BatchedTrainer(model, cfg.train, cfg.lr, cfg.max_steps, cfg.train.parallel)
        obstacle = engine.unbatchable(timm.data.resolve_data_config(model=model)["input_size"])
    if obstacle:
        log.warning("train.parallel=%d ignored: %s", cfg.train.parallel, obstacle)
        return None
    return engine


def _read_view(view, example: Example, device) -> torch.Tensor | None:
    try:
        return view(example).to(device)
    except (OSError, ValueError, SyntaxError) as error:
        log.warning("%s cannot be read (%s): recorded as unreadable", example.path, error)
        return None


def _rows(tasks: Iterable[tuple[int, Example]], trainer: SingleExampleTrainer, engine: BatchedTrainer | None,
          view, device, on_step) -> Iterator[dict]:
    """Results rows of (index, example) tasks, by the simple path or the batched engine, as each finishes."""
    if engine is None:
        for index, example in tasks:
            yield _correct_one(trainer, view, index, example, device, on_step)
        return
    unreadable = []

    def queue():
        for index, example in tasks:
            tick = time.perf_counter()
            x = _read_view(view, example, device)
            if x is None:
                unreadable.append(_row(index, example, None, tick))
            else:
                yield (index, example, tick), x, example.label

    for (index, example, tick), outcome in engine.run(queue(), on_step):
        yield from unreadable
        unreadable.clear()
        yield _row(index, example, outcome, tick)
    yield from unreadable


def _correct_one(trainer: SingleExampleTrainer, view, index: int, example: Example, device, on_step) -> dict:
    """The results row of one example, by the simple path."""
    tick = time.perf_counter()
    x = _read_view(view, example, device)
    return _row(index, example, None if x is None else trainer.fit(x.unsqueeze(0), example.label, on_step), tick)


def _row(index: int, example: Example, outcome: Outcome | None, tick: float) -> dict:
    """A results row; `outcome` None means the image could not be read."""
    row = {"example_index": index, "path": example.path, "universal_difficulty_rank": example.rank,
           "label": example.label, "seconds": time.perf_counter() - tick}
    if outcome is None:
        return {**row, "status": UNREADABLE, "total_loss_to_correct": -1, "steps_to_correct": -1}
    return {**row, "total_loss_to_correct": outcome.total_loss_to_correct,
            "initial_prediction": outcome.initial_prediction, "status": outcome.status,
            "steps_to_correct": outcome.steps_to_correct, "loss_sum": outcome.loss_sum,
            "initial_loss": outcome.initial_loss, "final_loss": outcome.final_loss,
            "initial_margin": outcome.initial_margin, "initial_grad_norm": outcome.initial_grad_norm,
            "weight_distance": outcome.weight_distance}


def _summary(cfg, rows: pd.DataFrame, seconds: float, device: torch.device, selection: dict) -> dict:
    updates = int(np.where(rows["status"] == "correct", rows["steps_to_correct"], 0).sum()
                  + (rows["status"] == "never_correct").sum() * cfg.max_steps)
    return {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "selection": selection,
        "examples_processed": len(rows),
        "complete": len(rows) == selection["in_this_shard"],
        "counts": {s: int(n) for s, n in rows["status"].value_counts().items()},
        "spearman_vs_rank": spearman_vs_rank(rows),
        "wall_seconds": seconds,
        "training_seconds": float(rows["seconds"].sum()),
        "optimizer_updates": updates,
        "updates_per_second": updates / max(float(rows["seconds"].sum()), 1e-9),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
                     "numpy": np.__version__, "pandas": pd.__version__},
        "columns": COLUMNS,
    }
