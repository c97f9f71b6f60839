"""What a tracker records of a job: its flat config as params, its summary's scalar statistics."""
from __future__ import annotations

import math

from sweep.config import flatten

PER_EXAMPLE = ("loss_sum", "steps_to_correct")  # step-indexed by example_index


def example_metrics(row: dict) -> dict[str, float]:
    """A result row's per-example metrics that it holds (a skipped example has no loss_sum)."""
    return {key: float(row[key]) for key in PER_EXAMPLE if row.get(key) is not None and row[key] == row[key]}


def params_of(config: dict) -> dict[str, str]:
    """The flattened config as strings (`model.arch`, `lr`, `train.optimizer`, ...)."""
    return {key: str(value) for key, value in flatten(config).items()}


def scalars_of(summary: dict) -> dict[str, float]:
    """Every finite scalar statistic of a summary (`rho_loss_sum`, CI bounds, deltas, the mean
    drawdown...), the counts per status (`count_correct`...) and the probe's share of the wall time."""
    scalars = {k: float(v) for k, v in summary.get("statistics", {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    scalars.update({f"count_{status}": float(n) for status, n in summary.get("counts", {}).items()})
    share = summary.get("phases", {}).get("probe_share")
    if share is not None:
        scalars["probe_share"] = float(share)
    return scalars
