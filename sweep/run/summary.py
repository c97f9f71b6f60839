"""A run's `training_summary.json`: config, counts, correlations with difficulty, speed, versions."""
from __future__ import annotations

import importlib.metadata
import logging
import math
import platform

import pandas as pd
import torch

from sweep.outputs import COLUMNS, RANK, Status
from sweep.run.context import JobContext, Trained, Work
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


def summarize(job: JobContext, work: Work, rows: pd.DataFrame, trained: Trained) -> dict:
    """The summary of a job's rows: each fact once (the statistics under `statistics`, how this
    process executed the work under `execution`, its speed under `throughput`), plus the original
    scripts' own keys. `throughput` is this process's: wall-clock updates per second of its training
    (all workers or engine copies together), and per worker."""
    corrected = rows["status"] == Status.CORRECT
    arithmetic = rows["arithmetic"].value_counts() if "arithmetic" in rows else pd.Series(dtype=int)
    if len(arithmetic) > 1:
        log.warning("the rows of this run were computed under %d arithmetic settings (%s): resumed with other "
                    "threads, device or memory format; see execution.arithmetic_of_rows", len(arithmetic),
                    "; ".join(arithmetic.index))
    selection = {**work.selection.info, "in_this_shard": len(work.in_shard)}
    probe = work.probe
    return {
        "config": job.config,
        "weights": job.weights,
        "selection": selection,
        "sample_size": {"drawn": job.settings.sample_size, "rule": job.sample_size_rule},
        # the probe's size, and its error and mean loss at the pretrained weights
        "probe": {"size": len(probe), "error_before": probe.error_before, "loss_before": probe.mean_loss_before}
        if probe is not None else {"size": 0},
        "examples_processed": len(rows),
        "complete": len(rows) == selection["in_this_shard"],
        "counts": {s: int(n) for s, n in rows["status"].value_counts().items()},
        "correct_at_step_0": int((corrected & (rows["steps_to_correct"] == 0)).sum()),
        "optimizer_updates": int(rows["updates"].sum()),  # every example's, diverged ones included
        "skipped_updates": int(rows["skipped_updates"].fillna(0).sum()),
        **research_statistics(rows),
        "throughput": throughput(trained),
        **describe(job.device),
        "nondeterministic_operations": trained.nondeterministic,  # ones that warned while this job trained
        "execution": {**trained.execution, "arithmetic_of_rows": {k: int(v) for k, v in arithmetic.items()}},
        "versions": versions(),
        "columns": COLUMNS,
        **original_keys(job.settings.model.arch, rows),
    }


def throughput(trained: Trained) -> dict:
    """This process's training speed: updates per second, all workers together and per worker."""
    seconds, updates = trained.seconds, trained.updates
    per_second = updates / seconds if seconds > 0 else None
    return {"updates": updates, "training_seconds": seconds, "updates_per_second": per_second,
            "updates_per_second_per_worker": per_second / trained.execution["workers"] if seconds > 0 else None}
