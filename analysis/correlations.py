"""Per-run statistics and paired comparisons between runs.

Censoring: an example never corrected within max_steps has no observed cost, only a lower bound.
- `rho_<score>` and its CI use corrected examples only (costs observed; baselines on the same
  examples, so the comparison is like for like).
- `rho_<cost>_censored_worst` uses every non-diverged example, never-corrected ones tied at the
  worst cost: exact for steps (they needed more than max_steps), an assumption for summed loss.
- `frac_never_corrected` reports how much was censored; medians and IQRs are over corrected examples.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from sweep.schema import COSTS, EPSILON_COSTS, MEASURED, RANK, SCORES, Status
from sweep.stats import partial_spearman, spearman, spearman_ci

def run_statistics(rows: pd.DataFrame) -> dict:
    """One row of runs.csv for a run's example rows."""
    status = rows.get("status", pd.Series(dtype=str))
    corrected = rows[status == Status.CORRECT]
    out = {"n_examples": len(rows)}
    for name in Status:
        out[f"n_{name}"] = int((status == name).sum())
    measured = out["n_correct"] + out["n_never_correct"]
    out["frac_never_corrected"] = out["n_never_correct"] / measured if measured else math.nan
    for cost in COSTS:
        if cost in rows:
            q1, median, q3 = (corrected[cost].quantile(q) if len(corrected) else math.nan for q in (0.25, 0.5, 0.75))
            out.update({f"median_{cost}": median, f"iqr_{cost}": q3 - q1})
    for score in SCORES:
        if score not in rows:
            continue
        pair = corrected[[score, RANK]].dropna()
        out[f"rho_{score}"] = spearman(pair[score], pair[RANK])
        out[f"rho_{score}_ci_low"], out[f"rho_{score}_ci_high"] = spearman_ci(pair[score], pair[RANK])
    reached = rows[status == Status.REACHED_EPSILON]
    for cost in EPSILON_COSTS:
        if cost in rows:
            pair = reached[[cost, RANK]].dropna()
            out[f"rho_{cost}"] = spearman(pair[cost], pair[RANK])
            out[f"rho_{cost}_ci_low"], out[f"rho_{cost}_ci_high"] = spearman_ci(pair[cost], pair[RANK])
    measured_rows = rows[status.isin(MEASURED)]
    for cost in COSTS:
        if cost in rows:
            worst = measured_rows[cost].where(measured_rows["status"] == Status.CORRECT, np.inf)
            out[f"rho_{cost}_censored_worst"] = spearman(worst, measured_rows[RANK])
    if {"loss_sum", "initial_loss"} <= set(rows.columns):
        out["partial_rho_loss_sum_given_initial_loss"] = partial_spearman(
            corrected["loss_sum"], corrected[RANK], corrected["initial_loss"])
    return out


def paired_comparison(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """Two runs over the same examples: Wilcoxon signed-rank on loss to correct, and the rank
    correlation of their costs, over the examples corrected in both."""
    both = a[a["status"] == Status.CORRECT].merge(b[b["status"] == Status.CORRECT], on="path", suffixes=("_a", "_b"))
    out = {"n_shared": int(len(a.merge(b, on="path"))), "n_corrected_in_both": len(both)}
    if len(both) >= 3 and "loss_sum_a" in both and "loss_sum_b" in both:
        difference = both["loss_sum_a"] - both["loss_sum_b"]
        out["median_loss_sum_a"], out["median_loss_sum_b"] = both["loss_sum_a"].median(), both["loss_sum_b"].median()
        out["wilcoxon_p"] = float(stats.wilcoxon(difference).pvalue) if difference.any() else math.nan
        out["rho_between_runs"] = spearman(both["loss_sum_a"], both["loss_sum_b"])
    return out
