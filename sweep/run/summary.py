"""A run's `training_summary.json`: config, counts, correlations with difficulty, speed, versions."""
from __future__ import annotations

import importlib.metadata
import logging
import math
import platform

import pandas as pd
import torch
from omegaconf import OmegaConf

from sweep.config import Config
from sweep.outputs import COLUMNS, RANK, Status
from sweep.stats.research import STATISTICS_VERSION, headline, run_statistics, verdict
from sweep.training.hardware import describe

log = logging.getLogger(__name__)


def original_keys(arch: str, rows: pd.DataFrame) -> dict:
    """The keys of the original scripts' training_summary.json, which their downstream readers use."""
    successful = int((rows["status"] == Status.CORRECT).sum())
    return {"model_name": arch, "total_examples_attempted": len(rows), "successful_examples": successful,
            "failed_examples": len(rows) - successful,
            "results": [{"path": p, "total_loss": float(loss), "rank": int(rank)} for p, loss, rank in
                        zip(rows["path"], rows["total_loss_to_correct"], rows[RANK], strict=True)]}


# The distributions whose versions a result depends on (installed ranges differ between machines).
VERSIONED = ("loss-to-correct", "torch", "torchvision", "timm", "hydra-core", "omegaconf", "numpy", "pandas", "scipy")


def versions() -> dict:
    """Python's and every VERSIONED distribution's installed version (None where one is not installed);
    torch's as it names itself, with its build (`2.11.0+cu130`)."""
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return {**found, "torch": torch.__version__}


def research_statistics(rows: pd.DataFrame) -> dict:
    """Every statistic of the research question (sweep/stats/research.py) with n and CI, why any is
    not computable, the headline sentence and the verdict against each baseline."""
    values, reasons = run_statistics(rows)
    return {"statistics": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()},
            "not_computable": reasons, "statistics_version": STATISTICS_VERSION, "headline": headline(values),
            "verdict": verdict(values, values["cost"] or "the cost")}


def summarize(cfg: Config, rows: pd.DataFrame, device: torch.device, selection: dict, execution: dict,
              throughput: dict, nondeterministic: list[str], weights: dict, probe: dict) -> dict:
    """The summary of a run's rows: each fact once (the statistics under `statistics`, how this
    process executed the work under `execution`, its speed under `throughput`), plus the original
    scripts' own keys. `throughput` is this process's: wall-clock updates per second of its training
    (all workers or engine copies together), and per worker."""
    corrected = rows["status"] == Status.CORRECT
    arithmetic = rows["arithmetic"].value_counts() if "arithmetic" in rows else pd.Series(dtype=int)
    if len(arithmetic) > 1:
        log.warning("the rows of this run were computed under %d arithmetic settings (%s): resumed with other "
                    "threads, device or memory format; see execution.arithmetic_of_rows", len(arithmetic),
                    "; ".join(arithmetic.index))
    return {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "weights": weights,
        "selection": selection,
        "probe": probe,  # its size, and its error and mean loss at the pretrained weights
        "examples_processed": len(rows),
        "complete": len(rows) == selection["in_this_shard"],
        "counts": {s: int(n) for s, n in rows["status"].value_counts().items()},
        "correct_at_step_0": int((corrected & (rows["steps_to_correct"] == 0)).sum()),
        "optimizer_updates": int(rows["updates"].sum()),  # every example's, diverged ones included
        "skipped_updates": int(rows["skipped_updates"].fillna(0).sum()),
        **research_statistics(rows),
        "throughput": throughput,
        **describe(device),
        "nondeterministic_operations": nondeterministic,  # ones that warned while this job trained
        "execution": {**execution, "arithmetic_of_rows": {k: int(v) for k, v in arithmetic.items()}},
        "versions": versions(),
        "columns": COLUMNS,
        **original_keys(cfg.model.arch, rows),
    }
