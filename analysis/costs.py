"""The cost matrix of a sweep: `costs.parquet`, one row per (run, image) with every cost, baseline and
damage score, the status and whether the cost is censored, and the universal difficulty rank. A zoo
study's runs differ in the model; pivoted, it is the models x images matrix:

    costs = pd.read_parquet("costs.parquet")
    matrix = costs.pivot_table(index="model", columns="path", values="loss_sum")
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from sweep.files import replacing
from sweep.outputs import BASELINES, COSTS, DAMAGE, MEASURED, RANK, Status

COSTS_PARQUET = "costs.parquet"
KEPT = ["path", RANK, "label", "initial_prediction", "status", *COSTS, "updates", *BASELINES, *DAMAGE,
        "label_in_real", "prediction_in_real"]


def cost_matrix(merged: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The long cost matrix of the merged rows: the run's label and varying parameters (the model among
    them), then one row per image it measured; `censored` marks a never-corrected example, whose costs
    are lower bounds (`total_loss_to_correct` is then -1, the original scripts' convention)."""
    rows = merged[merged["status"].isin(MEASURED)]
    identity = ["run", *[k for k in keys if k in rows]]
    frame = rows[identity + [c for c in KEPT if c in rows]].reset_index(drop=True)
    if "model" not in frame:
        frame.insert(1, "model", rows["run"].to_numpy())
    frame.insert(frame.columns.get_loc("status") + 1, "censored", frame["status"] == Status.NEVER_CORRECT)
    return frame


def write_cost_matrix(frame: pd.DataFrame, out: Path) -> Path:
    """`frame` as costs.parquet in `out` (pyarrow); mixed-type object columns as text."""
    frame = frame.copy()
    for column in frame.select_dtypes(include="object").columns:
        frame[column] = frame[column].map(lambda value: None if pd.isna(value) else str(value))
    path = out / COSTS_PARQUET
    with replacing(path) as staging:
        frame.to_parquet(staging, index=False, engine="pyarrow")
    return path
