"""Is the cost to correct universal? Whether runs of different models agree on which mistakes are
costly, on the mistakes they share and all corrected, beside the same agreement for the cheap
scores at the pretrained weights: if the costs agree more than the initial losses do, the cost is
a property of the image more than of the model.

Runs are grouped by everything that varies except the model (e.g. one group per learning rate);
within a group of two or more models: Spearman rho of each score between every pair of models
(95% bootstrap CI), and Kendall's W over all of them (sweep/stats/agreement.py).
"""
from __future__ import annotations

import itertools

import pandas as pd

from sweep.outputs import RANK
from sweep.stats.agreement import concordance_w
from sweep.stats.estimates import Estimate, rho
from sweep.training.stopping import Status

SCORES = ["loss_sum", "steps_to_correct", "drawdown", "probe_loss_increase", "initial_loss",
          "initial_margin"]  # the costs (to reach the answer, and to the rest of the model), then baselines
MODEL = "model"


def universality(runs: list[tuple[object, str]], keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pairwise, overall) tables for every group of runs of different models that share corrected
    mistakes; both empty when no model varies."""
    if MODEL not in keys:
        return pd.DataFrame(), pd.DataFrame()
    others = [k for k in keys if k != MODEL]
    groups: dict[tuple, list] = {}
    for run, label in runs:
        groups.setdefault(tuple(repr(run.params.get(k)) for k in others), []).append((run, label))
    pairwise, overall = [], []
    for members in groups.values():
        if len({run.params.get(MODEL) for run, _ in members}) < 2:
            continue
        context = ", ".join(f"{k}={members[0][0].params.get(k)}" for k in others) or "all runs"
        corrected = {run.params.get(MODEL): _corrected(run.rows) for run, _ in members}
        shared = set.intersection(*(set(rows.index) for rows in corrected.values()))
        for score in (s for s in SCORES if all(s in rows and rows[s].notna().any() for rows in corrected.values())):
            table = pd.DataFrame({model: rows.loc[sorted(shared), score] for model, rows in corrected.items()})
            for (a, b) in itertools.combinations(table.columns, 2):
                pairwise.append({"group": context, "score": score, "model_a": a, "model_b": b,
                                 **_cells("rho", rho(table[a], table[b]))})
            overall.append({"group": context, "score": score, "models": len(table.columns),
                            **_cells("kendall_w", concordance_w(table.to_numpy().T, models=list(table.columns)))})
    return pd.DataFrame(pairwise), pd.DataFrame(overall)


def _corrected(rows: pd.DataFrame) -> pd.DataFrame:
    """A run's corrected examples, indexed by path."""
    corrected = rows[rows["status"] == Status.CORRECT]
    return corrected.drop_duplicates("path").set_index("path").drop(columns=[RANK], errors="ignore")


def _cells(name: str, estimate: Estimate) -> dict:
    return {**estimate.columns(name), "reason": estimate.reason}
