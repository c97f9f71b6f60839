"""A run's `training_summary.json`: config, counts, correlations with difficulty, speed, versions."""
from __future__ import annotations

import math
import platform

import numpy as np
import pandas as pd
import timm
import torch
from omegaconf import OmegaConf

from sweep.outputs import COLUMNS, RANK, SCORES
from sweep.stats.estimates import spearman_test
from sweep.stats.research import run_statistics, verdict
from sweep.training.hardware import describe
from sweep.training.stopping import Status


def spearman_vs_rank(rows: pd.DataFrame) -> dict:
    """Spearman rho (and p, n) of each score against universal difficulty rank, over corrected
    examples (the costs of the others are censored; the baselines are taken on the same examples)."""
    corrected = rows[rows["status"] == Status.CORRECT]
    out = {}
    for score in SCORES:
        pair = corrected[[score, RANK]].dropna()
        out[score] = spearman_test(pair[score], pair[RANK])
    return out


def original_keys(arch: str, rows: pd.DataFrame) -> dict:
    """The keys of the original scripts' training_summary.json, which their downstream readers use."""
    successful = int((rows["status"] == Status.CORRECT).sum())
    return {"model_name": arch, "total_examples_attempted": len(rows), "successful_examples": successful,
            "failed_examples": len(rows) - successful,
            "results": [{"path": p, "total_loss": float(loss), "rank": int(rank)} for p, loss, rank in
                        zip(rows["path"], rows["total_loss_to_correct"], rows[RANK])]}


def research_statistics(rows: pd.DataFrame) -> dict:
    """Every rho over all corrected, clean and flagged mistakes with n and CI, the Δ against each
    baseline and the partial rho (sweep/statistics.py), why any is not computable, and the verdict."""
    values, reasons = run_statistics(rows)
    return {"statistics": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()},
            "not_computable": reasons, "verdict": verdict(values, values["cost"] or "the cost")}


def summarize(cfg, rows: pd.DataFrame, seconds: float, device: torch.device, selection: dict, execution: dict,
              nondeterministic: list[str]) -> dict:
    corrected = rows["status"] == Status.CORRECT
    updates = int(np.where(corrected, rows["steps_to_correct"], 0).sum()
                  + (rows["status"] == Status.NEVER_CORRECT).sum() * cfg.max_steps)
    training_seconds = float(rows["seconds"].sum())
    return {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "selection": selection,
        "examples_processed": len(rows),
        "complete": len(rows) == selection["in_this_shard"],
        "counts": {s: int(n) for s, n in rows["status"].value_counts().items()},
        "correct_at_step_0": int((corrected & (rows["steps_to_correct"] == 0)).sum()),
        "skipped_updates": int(rows["skipped_updates"].fillna(0).sum()),
        "spearman_vs_rank": spearman_vs_rank(rows),
        **research_statistics(rows),
        "wall_seconds": seconds,
        "training_seconds": training_seconds,
        "optimizer_updates": updates,
        "updates_per_second": updates / max(training_seconds, 1e-9),
        **describe(device),
        "nondeterministic_operations": nondeterministic,  # ones that warned while this process trained
        "execution": execution,
        "threads": execution["threads"],
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
                     "numpy": np.__version__, "pandas": pd.__version__},
        "columns": COLUMNS,
        **original_keys(cfg.model.arch, rows),
    }
