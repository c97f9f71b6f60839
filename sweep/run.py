"""One job of a sweep: find the model's mistakes, correct each one alone, write the run's outputs."""
from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from sweep.config import Augmentation, Device, ModelMode
from sweep.correct import SingleExampleTrainer
from sweep.data import Example, load_image, model_transform, seeded_view
from sweep.results import (COLUMNS, PLOT_PNG, RESULTS_CSV, SUMMARY_JSON, ResultsWriter, plot_loss_vs_difficulty,
                           spearman_vs_rank, write_summary, atomic_write_text)
from sweep.selection import find_wrong, sample
from sweep.sources import open_source, pretrained_model

log = logging.getLogger(__name__)

SELECTION_CSV = "selection.csv"
IDENTITY_JSON = "run_identity.json"
# Keys that define what a run directory's results mean; resuming with any other value is refused.
IDENTITY_KEYS = ("model", "data", "lr", "max_steps", "sample_size", "seed", "train.optimizer",
                 "train.weight_decay", "train.momentum", "train.mode", "train.augmentation", "train.precision")


def validate(cfg) -> None:
    """Fail on impossible values before any work starts."""
    if not cfg.lr > 0:
        raise ValueError(f"lr={cfg.lr}: expected a learning rate > 0")
    if cfg.max_steps < 1:
        raise ValueError(f"max_steps={cfg.max_steps}: expected an integer >= 1")
    if cfg.sample_size < 1:
        raise ValueError(f"sample_size={cfg.sample_size}: expected an integer >= 1")
    if cfg.train.weight_decay < 0:
        raise ValueError(f"train.weight_decay={cfg.train.weight_decay}: expected >= 0")


def _device(choice: Device) -> torch.device:
    if choice == Device.cuda and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is available; use train.device=auto or cpu")
    if choice == Device.cpu or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def _check_identity(cfg, out_dir: Path) -> None:
    """Record what this run directory holds, or refuse to resume a run made with other settings."""
    identity = {key: OmegaConf.to_container(OmegaConf.create({"v": OmegaConf.select(cfg, key)}), resolve=True)["v"]
                for key in IDENTITY_KEYS}
    path = out_dir / IDENTITY_JSON
    if path.exists():
        previous = json.loads(path.read_text())
        differing = sorted(k for k in set(identity) | set(previous) if identity.get(k) != previous.get(k))
        if differing:
            raise ValueError(f"{out_dir} holds results of a different configuration (differing keys: "
                             f"{', '.join(differing)}); use a fresh output directory")
    else:
        atomic_write_text(path, json.dumps(identity, indent=2, default=str))


def _selection(cfg, out_dir: Path, model, examples: list[Example], view, device) -> list[Example]:
    """The persisted selection of this run directory, or a new one: wrong examples, sampled."""
    path = out_dir / SELECTION_CSV
    if path.exists():
        frame = pd.read_csv(path)
        return [Example(p, int(y), int(r)) for p, y, r in zip(frame["path"], frame["label"], frame["rank"])]
    batch_size = 1 if cfg.train.mode == ModelMode.train else 256
    wrong = find_wrong(model, examples, view, device, batch_size, progress=cfg.progress)
    log.info("the pretrained model gets %d of %d examples wrong", len(wrong), len(examples))
    if not wrong:
        raise ValueError(f"model {cfg.model.arch} gets no example of data={cfg.data.name} wrong: nothing to correct")
    chosen = sample(wrong, cfg.sample_size, cfg.seed)
    frame = pd.DataFrame({"path": [e.path for e in chosen], "label": [e.label for e in chosen],
                          "rank": [e.rank for e in chosen]})
    atomic_write_text(path, frame.to_csv(index=False))
    return chosen


def run(cfg, out_dir: Path) -> dict:
    """Run one job into `out_dir`; rows already in its results CSV are kept and skipped."""
    validate(cfg)
    started = time.perf_counter()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_identity(cfg, out_dir)
    device = _device(cfg.train.device)
    source = open_source(cfg)
    model = pretrained_model(cfg, source).to(device)
    model.train(cfg.train.mode == ModelMode.train)
    transform = model_transform(model, training=cfg.train.augmentation == Augmentation.one_view)
    augment = cfg.train.augmentation == Augmentation.one_view

    def view(index: int, example: Example) -> torch.Tensor:
        image = load_image(example.path)
        return seeded_view(transform, image, seed=cfg.seed * 1_000_003 + index) if augment else transform(image)

    trainer = SingleExampleTrainer(model, cfg.train, cfg.lr, cfg.max_steps)
    chosen = _selection(cfg, out_dir, model, source.examples, lambda i, e: view(i, e), device)
    results_path = out_dir / RESULTS_CSV
    done = set(pd.read_csv(results_path)["path"]) if results_path.exists() and results_path.stat().st_size else set()
    writer = ResultsWriter(results_path)
    bar = tqdm(total=len(chosen), initial=len(done), desc=f"{cfg.model.arch} lr={cfg.lr:g}", unit="example",
               disable=not cfg.progress)

    def on_step(step: int, loss: float) -> None:
        if step % 10 == 0:
            bar.set_postfix(step=step, loss=f"{loss:.4f}", refresh=False)

    try:
        for index, example in enumerate(chosen):
            if example.path in done:
                continue
            tick = time.perf_counter()
            x = view(index, example).unsqueeze(0).to(device)
            outcome = trainer.fit(x, example.label, on_step)
            writer.write({"example_index": index, "path": example.path,
                          "total_loss_to_correct": outcome.total_loss_to_correct,
                          "universal_difficulty_rank": example.rank, "label": example.label,
                          "initial_prediction": outcome.initial_prediction, "status": outcome.status,
                          "steps_to_correct": outcome.steps_to_correct, "loss_sum": outcome.loss_sum,
                          "initial_loss": outcome.initial_loss, "final_loss": outcome.final_loss,
                          "initial_margin": outcome.initial_margin, "initial_grad_norm": outcome.initial_grad_norm,
                          "weight_distance": outcome.weight_distance, "seconds": time.perf_counter() - tick})
            bar.update()
            bar.set_postfix(status=outcome.status, steps=outcome.steps_taken, refresh=False)
    finally:
        bar.close()
        writer.close()
    rows = pd.read_csv(results_path)
    summary = _summary(cfg, rows, time.perf_counter() - started, device, n_examples=len(source.examples))
    write_summary(out_dir / SUMMARY_JSON, summary)
    plot_loss_vs_difficulty(rows, out_dir / PLOT_PNG, title=f"{cfg.model.arch}, lr={cfg.lr:g}, data={cfg.data.name}")
    rho = summary["spearman_vs_rank"]["loss_sum"]["rho"]
    log.info("done: %s; Spearman rho(loss to correct, rank) = %s", summary["counts"], rho)
    return summary


def _summary(cfg, rows: pd.DataFrame, seconds: float, device: torch.device, n_examples: int) -> dict:
    updates = int(np.where(rows["status"] == "correct", rows["steps_to_correct"], 0).sum()
                  + (rows["status"] == "never_correct").sum() * cfg.max_steps)
    return {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "examples_in_data": n_examples,
        "examples_processed": len(rows),
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
